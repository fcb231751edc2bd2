"""Clients of third parties and of other local services; their errors know nothing of HTTP."""
