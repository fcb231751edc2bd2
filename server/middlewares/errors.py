"""Every error, ours or aiohttp's, becomes RFC 9457 problem details; tracebacks only reach the log."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from server.errors import DomainError
from server.keys import REPORTER_KEY, STORAGE_FAULTS_KEY
from server.middlewares.problems import problem
from server.middlewares.reporting import report_request_error
from server.models.faults import retry_after, storage_fault

log = logging.getLogger(__name__)

# Headers of an aiohttp HTTPException worth keeping on the problem answer.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Location")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as exc:
        return problem(
            request,
            exc.status,
            exc.title,
            detail=exc.detail,
            type=exc.type,
            errors=exc.errors,
            errors_truncated=exc.errors_truncated,
            headers=exc.headers,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        return problem(request, exc.status, exc.reason, detail=detail, headers=headers)
    except ConnectionResetError:
        # The client went away mid-request: nobody to answer, nothing to report; aiohttp logs it.
        raise
    except Exception as exc:  # CancelledError is a BaseException: a cancelled handler is not caught
        kind = storage_fault(exc)
        if kind is not None:
            # Locked, busy, full, read-only: the service's condition, not a bug in the request or
            # the code. Logged once per outage, counted, never reported as an error.
            faults = request.config_dict.get(STORAGE_FAULTS_KEY)
            if faults is not None:
                faults.record(kind, exc)
            return problem(
                request,
                503,
                "Service Unavailable",
                detail="The database cannot take this request now; try again shortly.",
                headers={"Retry-After": str(retry_after(kind))},
            )
        log.exception("unhandled error in %s %s", request.method, request.path)
        reporter = request.config_dict.get(REPORTER_KEY)
        if reporter is not None:
            try:
                report_request_error(reporter, request, exc)
            except Exception:
                log.exception("error reporter failed")
        return problem(request, 500, "Internal Server Error", detail="The server failed to handle the request.")
