"""X-Request-ID values (a well-formed incoming id is kept, anything else replaced by a cheap unique one),
the W3C `traceparent`, and the access log line that carries both.

Both go on every log line of the request (server/log_context.py) and into the jobs it enqueues;
the one middleware (errors.py `every_request`) sets them.
"""

from __future__ import annotations

import itertools
import os
import re

from aiohttp import web
from aiohttp.web_log import AccessLogger
from multidict import istr

from server.keys import REQUEST_ID_KEY
from server.log_context import current_request_id, current_traceparent, valid_traceparent

# istr: aiohttp's header maps take these without case-folding them again on every request.
REQUEST_ID_HEADER = istr("X-Request-ID")
TRACEPARENT_HEADER = istr("traceparent")
_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _fresh_prefix() -> str:
    return os.urandom(8).hex() + "-"


# A process's ids: 64 random bits, then a counter. Unique across processes (and across forks: a
# child draws a new prefix) without a system call per request; os.urandom(16).hex() costs about
# 0.5 us a request, a counter 0.1 us. The ids are tags for logs and reports, not secrets: nothing
# may rely on one being unguessable.
_prefix = _fresh_prefix()
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix, _counter = _fresh_prefix(), itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A fresh id such as `9f86d081884c7d65-42`: 16 hex digits of the process, a decimal counter
    (formatting it in hex cost half as much again)."""
    return f"{_prefix}{next(_counter)}"


def incoming_or_new(value: str | None) -> str:
    """The client's id when it is 1-128 chars of [A-Za-z0-9._-], else a fresh one."""
    if value is not None and _VALID_ID.fullmatch(value):
        return value
    return new_request_id()


class RequestAccessLogger(AccessLogger):
    """aiohttp's access logger, whose line carries the request's id and trace context like the
    request's other lines (aiohttp writes it after the middlewares have returned)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID_KEY) if isinstance(request, web.Request) else None
        if rid is None:  # refused before any middleware ran (a malformed request)
            super().log(request, response, time)
            return
        id_reset = current_request_id.set(rid)
        trace_reset = current_traceparent.set(valid_traceparent(request.headers.get(TRACEPARENT_HEADER)))
        try:
            super().log(request, response, time)
        finally:
            current_traceparent.reset(trace_reset)
            current_request_id.reset(id_reset)
