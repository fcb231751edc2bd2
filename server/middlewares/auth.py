"""HTTP Basic auth for the internal pages: everything under /internal, with the credentials of `internal.*`.

The middleware sits on the root app, so a page added anywhere under the prefix (a route, a
sub-app) is protected without doing anything. With no password configured nothing under the
prefix is served at all (404), so a forgotten setting never exposes the dashboards.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from server.keys import CONFIG_KEY
from server.routing.meta import meta_for

INTERNAL_PREFIX = "/internal"
INTERNAL_REALM = "internal"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def under_prefix(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) of a `Basic` Authorization header, or None when it is not one.

    Parsed here: aiohttp's BasicAuth is deprecated and goes away in aiohttp 4.
    """
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def credentials_match(authorization: str | None, username: str, password: str) -> bool:
    """True when the Authorization header carries exactly these Basic credentials (constant time)."""
    given = basic_credentials(authorization)
    if given is None or not password:
        return False
    # Both comparisons always run, so the time taken says nothing about which part was wrong.
    user_ok = hmac.compare_digest(given[0], username.encode())
    password_ok = hmac.compare_digest(given[1], password.encode())
    return user_ok & password_ok


def scraper_token_matches(request: web.Request) -> bool:
    """The route takes a scraper's token (`@accepts_scraper_token`) and the request carries the
    configured one (constant-time comparison)."""
    route = meta_for(request)
    if route is None or not route.scraper_token:
        return False
    token = request.config_dict[CONFIG_KEY].metrics.token
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _cross_origin(request: web.Request) -> bool:
    """A browser's request sent by another site: its Origin is not this host."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return False
    try:
        return URL(origin).authority != request.host
    except ValueError:
        return True


def basic_auth(prefix: str = INTERNAL_PREFIX, realm: str = INTERNAL_REALM) -> Middleware:
    """A middleware requiring the `internal` credentials for every path under `prefix` (or, on a
    route stamped `accepts_scraper_token`, the scraper's bearer token).

    401 with `WWW-Authenticate: Basic realm=...` without them, 404 when no password is
    configured, 403 for a state-changing request another site's page made (the browser would
    attach the cached credentials to it).
    """
    challenge = f'Basic realm="{realm}", charset="UTF-8"'

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else ""
        if not (under_prefix(request.path, prefix) or under_prefix(canonical, prefix)):
            return await handler(request)
        if scraper_token_matches(request):
            return await handler(request)
        internal = request.config_dict[CONFIG_KEY].internal
        if not internal.password:
            raise web.HTTPNotFound()
        if not credentials_match(request.headers.get(hdrs.AUTHORIZATION), internal.username, internal.password):
            raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: challenge})
        if request.method not in SAFE_METHODS and _cross_origin(request):
            raise web.HTTPForbidden(text="cross-site requests to internal pages are refused")
        return await handler(request)

    return middleware


internal_auth = basic_auth()
