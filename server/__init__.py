"""An asyncio API server foundation on aiohttp. Importing this package opens nothing."""

from server.app import create_app

__all__ = ["create_app"]
