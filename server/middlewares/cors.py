"""CORS for browsers on other origins: a small middleware on the root app, configured by `cors.*`.

Our own because aiohttp-cors reads its configuration from `request.app`, which inside a sub-app
(`/internal`, a test's) is the sub-app, and breaks there. It sits just inside the one middleware
(errors.py), so the Host check, request ids and security headers apply to preflights too. With
`cors.allow_origins` empty (the default) it is not installed at all.

A preflight (OPTIONS with Access-Control-Request-Method) is answered here and never reaches a
handler: 204 with the allowed methods and headers for an allowed origin, 403 problem details
otherwise. Other requests from an allowed origin get Access-Control-Allow-Origin on their
answer, errors included; from any other origin they are served without it, so the browser keeps
the answer from the page. The internal pages never take part: a page of another origin must not
read them with the operator's credentials (docs/decisions.md, "CORS on the root app").
"""

from __future__ import annotations

from collections.abc import MutableMapping
from functools import partial

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from server.config import CorsConfig
from server.middlewares.auth import INTERNAL_PREFIX, under_prefix
from server.middlewares.errors import with_headers
from server.middlewares.problems import problem

# Request headers a browser sends without asking (Fetch's CORS-safelisted request headers).
SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})


def _add_vary(headers: MutableMapping[str, str], *names: str) -> None:
    present = [v.strip() for v in headers.get(hdrs.VARY, "").split(",") if v.strip()]
    lowered = {v.lower() for v in present}
    present += [name for name in names if name.lower() not in lowered]
    headers[hdrs.VARY] = ", ".join(present)


def cors(config: CorsConfig) -> Middleware | None:
    """The CORS middleware for `config`, or None when no origin is allowed."""
    if not config.allow_origins:
        return None
    any_origin = "*" in config.allow_origins
    origins = frozenset(config.allow_origins)
    methods = frozenset(config.allow_methods)
    any_header = "*" in config.allow_headers
    allowed_headers = frozenset(h.lower() for h in config.allow_headers)
    credentials = config.allow_credentials
    exposed = ", ".join(config.expose_headers)

    def allow_origin(headers: MutableMapping[str, str], origin: str) -> None:
        # "*" only without credentials (config refuses the pair); otherwise the origin itself.
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if any_origin and not credentials else origin
        if credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    def preflight(request: web.Request, origin: str) -> web.StreamResponse:
        method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].strip()
        asked = [
            h.strip().lower()
            for h in request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",")
            if h.strip()
        ]
        refused = None
        if not (any_origin or origin in origins):
            refused = f"origin {origin!r} is not allowed"
        elif method not in methods:
            refused = f"method {method!r} is not allowed (allowed: {', '.join(sorted(methods)) or 'none'})"
        elif not any_header and (
            extra := [h for h in asked if h not in allowed_headers and h not in SAFELISTED_HEADERS]
        ):
            refused = f"request header(s) {', '.join(extra)} not allowed"
        vary = (hdrs.ORIGIN, hdrs.ACCESS_CONTROL_REQUEST_METHOD, hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        if refused is not None:
            response = problem(request, 403, "Forbidden", detail=f"CORS preflight refused: {refused}.")
            _add_vary(response.headers, *vary)
            return response
        response = web.Response(status=204)
        allow_origin(response.headers, origin)
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ", ".join(sorted(methods))
        if asked:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(asked)
        if config.max_age:
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = str(config.max_age)
        _add_vary(response.headers, *vary)
        return response

    def decorate(headers: MutableMapping[str, str], origin: str) -> None:
        if any_origin or origin in origins:
            allow_origin(headers, origin)
            if exposed:
                headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = exposed
        if not any_origin or credentials:
            _add_vary(headers, hdrs.ORIGIN)  # the answer depends on who asks

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or under_prefix(request.path, INTERNAL_PREFIX):
            return await handler(request)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return preflight(request, origin)
        return await with_headers(request, handler, partial(decorate, origin=origin))  # errors too

    return middleware
