"""What every answer carries for browsers, and which Host names the server answers to.

- `X-Content-Type-Options: nosniff` on every answer, so a browser never reads a JSON or text
  answer as HTML or script;
- on HTML pages a Content-Security-Policy (no plugins, nothing loaded from other hosts, not
  framed by other sites; `/internal` not framed at all) and `Referrer-Policy: no-referrer`;
- `server.allowed_hosts`: a request whose Host header names another host is a 400, so a page
  on another site that rebinds its DNS name to 127.0.0.1 cannot drive the local API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping

from aiohttp import hdrs, web
from multidict import istr

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


_NOSNIFF_HEADER = istr("X-Content-Type-Options")  # istr: not case-folded again per answer


def add_security_headers(request: web.BaseRequest, headers: MutableMapping[str, str]) -> None:
    """The headers every answer carries, and an HTML page's policy. The one middleware calls it on
    every answer it returns (errors included) and on redirects, before aiohttp sends them:
    as an `on_response_prepare` signal on the root app it cost every request about 5 % (the
    signal's dispatch; measured with py-spy on GET /healthz)."""
    headers[_NOSNIFF_HEADER] = "nosniff"
    # The raw header, not response.content_type: that parses the header on every answer.
    if headers.get(hdrs.CONTENT_TYPE, "")[:9].lower() == "text/html":
        # Only pages need the path: `request.path` decodes the URL on its first use.
        internal = under_prefix(request.path, INTERNAL_PREFIX)
        headers.setdefault("Content-Security-Policy", INTERNAL_CSP if internal else PAGE_CSP)
        headers.setdefault("Referrer-Policy", "no-referrer")
        if internal:
            headers.setdefault("X-Frame-Options", "DENY")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare, on the /internal sub-app: answers a handler prepares itself (SAQ's
    dashboard serves files) and files, whose Content-Type is known only when they are sent."""
    add_security_headers(request, response.headers)


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


# Raises InvalidInput (400) for a request whose Host header the server does not answer to.
HostCheck = Callable[[web.Request], None]


_SEEN_HOSTS_MAX = 64


def host_check(config: Config) -> HostCheck | None:
    """The check of `server.allowed_hosts` ("*": none) that the one middleware runs on every request."""
    names = allowed_host_names(config)
    if "*" in names:
        return None
    exact = frozenset(n for n in names if not n.startswith("."))
    suffixes = tuple(n for n in names if n.startswith("."))
    # Host header values already found allowed: clients send the same few, so the common case is
    # one set lookup. Bounded, so that varied headers cannot grow it.
    seen: set[str] = set()

    def check(request: web.Request) -> None:
        header = request.headers.get(hdrs.HOST)
        if header is None or header in seen:  # HTTP/1.0 may omit it; a browser never does
            return
        name = host_name(header)
        if name not in exact and not _allowed(name, suffixes):
            raise InvalidInput("this server does not answer to that Host name (see server.allowed_hosts)")
        if len(seen) < _SEEN_HOSTS_MAX:
            seen.add(header)

    return check
