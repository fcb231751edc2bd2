"""The response cache: what a route declares (policy.py) and the Redis side (store.py); the HTTP glue is middlewares/cache.py."""
