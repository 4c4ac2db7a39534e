"""The proxied routes: the table, the loop that registers it, the clients that forward."""
