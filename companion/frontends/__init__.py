"""Frontends: subscribers to turn events plus a source of input."""
