"""Clients of third-party services, raising errors that know nothing of HTTP."""
