"""What every answer carries for browsers, and which Host names the server answers to.

- `X-Content-Type-Options: nosniff` on every answer, so a browser never reads a JSON or text
  answer as HTML or script;
- on HTML pages a Content-Security-Policy (no plugins, nothing loaded from other hosts, not
  framed by other sites; `/internal` not framed at all) and `Referrer-Policy: no-referrer`;
- `server.allowed_hosts`: a request whose Host header names another host is a 400, so a page
  on another site that rebinds its DNS name to 127.0.0.1 cannot drive the local API.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from server.config import Config
from server.errors import InvalidInput
from server.middlewares.auth import INTERNAL_PREFIX, under_prefix

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Addresses that mean "every interface": not a name a client can send.
_ANY_ADDRESS = ("0.0.0.0", "::", "")

# Inline scripts and styles are allowed: our pages and SAQ's dashboard use them; what matters is
# that nothing comes from, goes to, or frames from another origin.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors {frames}"
)
PAGE_CSP = _PAGE_POLICY.format(frames="'self'")
INTERNAL_CSP = _PAGE_POLICY.format(frames="'none'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every answer of the app and its sub-apps, errors and files too."""
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    if response.content_type == "text/html":
        internal = under_prefix(request.path, INTERNAL_PREFIX)
        headers.setdefault("Content-Security-Policy", INTERNAL_CSP if internal else PAGE_CSP)
        headers.setdefault("Referrer-Policy", "no-referrer")
        if internal:
            headers.setdefault("X-Frame-Options", "DENY")


def host_name(header: str) -> str:
    """The name of a Host header, lowercased, without port, brackets or a trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def allowed_host_names(config: Config) -> frozenset[str]:
    """`server.allowed_hosts`, or by default the loopback names and `server.host`."""
    if config.server.allowed_hosts:
        return frozenset(h.strip().lower().rstrip(".") for h in config.server.allowed_hosts)
    names = set(LOOPBACK_NAMES)
    if config.server.host not in _ANY_ADDRESS:
        names.add(host_name(config.server.host))
    return frozenset(names)


def _allowed(name: str, names: Iterable[str]) -> bool:
    return any(name == n or (n.startswith(".") and (name.endswith(n) or name == n[1:])) for n in names)


def host_guard(config: Config) -> Middleware:
    """A middleware answering 400 to a Host header not in `server.allowed_hosts` ("*": any)."""
    names = allowed_host_names(config)
    if "*" in names:

        @web.middleware
        async def any_host(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await handler(request)

        return any_host
    exact = frozenset(n for n in names if not n.startswith("."))
    suffixes = tuple(n for n in names if n.startswith("."))

    @web.middleware
    async def allowed_hosts(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get(hdrs.HOST)
        if header is not None:  # HTTP/1.0 may omit it; a browser never does
            name = host_name(header)
            if name not in exact and not _allowed(name, suffixes):
                raise InvalidInput("this server does not answer to that Host name (see server.allowed_hosts)")
        return await handler(request)

    return allowed_hosts
