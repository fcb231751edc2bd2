"""Handlers that API version 2 overrides; everything else is inherited from the common tables."""
