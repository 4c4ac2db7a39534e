"""The collector's health answer."""
