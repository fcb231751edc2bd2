"""X-Request-ID: echo a well-formed incoming id, generate one otherwise, log it on every line."""

from __future__ import annotations

import os
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from server.keys import REQUEST_ID_KEY
from server.log_context import current_request_id

REQUEST_ID_HEADER = "X-Request-ID"
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
