"""The one middleware every request passes: its X-Request-ID, and every error as RFC 9457 problem details.

Request ids and error handling are one layer (one coroutine frame per request): the id is set
before anything else runs, on the log context too, and every answer carries it, problems
included. Errors, ours or aiohttp's (404, 405 with Allow, 413), become problem details;
tracebacks only reach the log and the error reporter.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from server.errors import DomainError
from server.keys import REPORTER_KEY, REQUEST_ID_KEY
from server.log_context import current_request_id
from server.middlewares.problems import problem
from server.middlewares.reporting import report_request_error
from server.middlewares.request_id import REQUEST_ID_HEADER, incoming_or_new

log = logging.getLogger(__name__)

# Headers of an aiohttp HTTPException worth keeping on the problem answer.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Location")


@web.middleware
async def request_id_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = incoming_or_new(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = rid
    token = current_request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            # Redirects and other non-error HTTP exceptions travel as exceptions; tag them too.
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        response = http_exception_problem(request, exc)
    except DomainError as exc:
        response = problem(
            request,
            exc.status,
            exc.title,
            detail=exc.detail,
            type=exc.type,
            errors=exc.errors,
            headers=exc.headers,
        )
    except ConnectionResetError:
        # The client went away mid-request: nobody to answer, nothing to report; aiohttp logs it.
        raise
    except Exception as exc:  # CancelledError is a BaseException: a cancelled handler is not caught
        response = unhandled_problem(request, exc)
    finally:
        current_request_id.reset(token)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


def http_exception_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    return problem(request, exc.status, exc.reason, detail=detail, headers=headers)


def unhandled_problem(request: web.Request, exc: Exception) -> web.Response:
    """Log and report an error no handler expected; the 500 answer says nothing of it."""
    log.exception("unhandled error in %s %s", request.method, request.path)
    reporter = request.config_dict.get(REPORTER_KEY)
    if reporter is not None:
        try:
            report_request_error(reporter, request, exc)
        except Exception:
            log.exception("error reporter failed")
    return problem(request, 500, "Internal Server Error", detail="The server failed to handle the request.")
