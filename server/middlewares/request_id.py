"""X-Request-ID: echo a well-formed incoming id, generate one otherwise; keep the W3C `traceparent`.

Both go on every log line of the request (server/log_context.py) and into the jobs it enqueues.
"""

from __future__ import annotations

import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_log import AccessLogger

from server.keys import REQUEST_ID_KEY
from server.log_context import current_request_id, current_traceparent, valid_traceparent

REQUEST_ID_HEADER = "X-Request-ID"
TRACEPARENT_HEADER = "traceparent"
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def incoming_or_new(value: str | None) -> str:
    """The client's id when it is 1-128 chars of [A-Za-z0-9._-], else a fresh one."""
    if value is not None and _VALID_ID.fullmatch(value):
        return value
    return os.urandom(16).hex()  # as unique as uuid4().hex, a quarter of the cost


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = incoming_or_new(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = rid
    previous = current_request_id.set(rid)
    traceparent = request.headers.get(TRACEPARENT_HEADER)
    trace_token = current_traceparent.set(valid_traceparent(traceparent)) if traceparent is not None else None
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Redirects and other non-error HTTP exceptions travel as exceptions; tag them too.
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    finally:
        current_request_id.reset(previous)
        if trace_token is not None:
            current_traceparent.reset(trace_token)


class RequestAccessLogger(AccessLogger):
    """aiohttp's access logger, whose line carries the request's id and trace context like the
    request's other lines (aiohttp writes it after the middlewares have returned)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID_KEY) if isinstance(request, web.Request) else None
        if rid is None:  # refused before any middleware ran (a malformed request)
            super().log(request, response, time)
            return
        id_token = current_request_id.set(rid)
        trace_token = current_traceparent.set(valid_traceparent(request.headers.get(TRACEPARENT_HEADER)))
        try:
            super().log(request, response, time)
        finally:
            current_traceparent.reset(trace_token)
            current_request_id.reset(id_token)
