"""What a handler needs to know about API versions, without importing the route tables."""

from __future__ import annotations

from aiohttp import web

from server.keys import API_VERSION_KEY


def api_version(request: web.Request) -> int:
    """The API version whose sub-app is serving this request."""
    return request.app[API_VERSION_KEY]
