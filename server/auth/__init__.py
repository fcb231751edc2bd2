"""API access: the stamps routes declare (scopes, rate limits), what a token grants, the rate limiter."""
