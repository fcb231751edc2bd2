"""Middlewares: request ids, problem-details errors, validation, caching."""
