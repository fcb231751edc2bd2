"""The response cache: what a route declares (policy.py) and its Redis side (store.py).

The HTTP glue, knowing requests and responses, is middlewares/cache.py.
"""
