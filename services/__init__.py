"""The four autofix-ml services and the command line."""
