"""Capturing a request for the error reporter: its context as a plain Report, taken on the loop without I/O."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.keys import BODY_KEY, REQUEST_ID_KEY
from server.routing.versions import api_version_of
from server.services.honeybadger.payload import Report, caller_stack
from server.services.honeybadger.sender import HoneybadgerReporter, new_report

# A client that went away is not a server error (CancelledError is a BaseException).
NOT_REPORTED: tuple[type[BaseException], ...] = (asyncio.CancelledError, ConnectionResetError)


def _url(request: web.Request) -> str:
    # Without the query: its values are reported, filtered, in params.
    try:
        return str(request.url.with_query(None))
    except ValueError:  # a Host header yarl refuses
        return request.path


def request_report(request: web.Request, *, tags: tuple[str, ...]) -> Report:
    """The request's context: references to immutable parts, read later by the sender thread."""
    route = request.match_info.route
    resource = route.resource
    rid = request.get(REQUEST_ID_KEY)
    version = api_version_of(request)
    name = route.name
    if version is not None and name is not None:
        name = name.partition(":")[2] or name  # v1:foo -> foo
    return new_report(
        tags=tags,
        request_id=rid,
        context={"request_id": rid, "api_version": version, "route": name},
        url=_url(request),
        component=resource.canonical if resource is not None else request.path,
        action=request.method,
        query=request.rel_url.query,  # immutable: read later, on the thread
        body=request.get(BODY_KEY),
        headers=request.headers,  # immutable too
        method=request.method,
        remote=request.remote,
    )


def report_request_error(reporter: HoneybadgerReporter, request: web.Request, exc: BaseException) -> str | None:
    """The errors middleware's report of an unhandled exception in a request (not a disconnect)."""
    if not reporter.enabled or isinstance(exc, NOT_REPORTED):
        return None
    report = request_report(request, tags=("http",))
    report.exception = exc
    report.traceback = exc.__traceback__
    return reporter.submit(report)


def notify_from_request(
    reporter: HoneybadgerReporter,
    request: web.Request,
    error_class: str,
    error_message: str,
    *,
    tags: tuple[str, ...] = (),
) -> str | None:
    """A custom notice (not an exception) carrying this request's context; its id, or None."""
    if not reporter.enabled:
        return None
    report = request_report(request, tags=tags)
    report.stack = caller_stack(1)
    return reporter.notify(error_class, error_message, report=report)
