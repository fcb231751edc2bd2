"""The one middleware every request passes: its X-Request-ID, the Host check, every error as problem details,
the security headers on every answer, the request's metrics.

Request ids (and the W3C traceparent), the allowed Host names, error handling and the request
metrics are one layer (one coroutine frame per request; each middleware more costs a frame and
aiohttp's wrapper around it): the id is set before anything else runs, on the log context too, and every answer
carries it, problems included (RFC 9457). Errors, ours or aiohttp's (404, 405 with Allow, 413), become problem details;
tracebacks only reach the log and the error reporter. The metrics time everything the app does
for the request and count it by route template (404s as "<unmatched>"), method and status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import AbstractRoute

from server.errors import DomainError
from server.keys import REPORTER_KEY, REQUEST_ID_KEY, STORAGE_FAULTS_KEY
from server.log_context import current_request_id, current_traceparent, valid_traceparent
from server.metrics import process_metrics, route_label
from server.middlewares.problems import problem
from server.middlewares.reporting import report_request_error
from server.middlewares.request_id import REQUEST_ID_HEADER, TRACEPARENT_HEADER, incoming_or_new
from server.middlewares.security import HostCheck, add_security_headers
from server.models.faults import retry_after, storage_fault

log = logging.getLogger(__name__)

# Metric labels stay a closed set: any other method (aiohttp accepts any token) is counted as OTHER.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's code for a client that went away before the answer.
CLIENT_CLOSED = 499

# Headers of an aiohttp HTTPException worth keeping on the problem answer (the rate limits' and
# CORS's are put on it by their layers: see `with_headers`).
_KEPT_HEADERS = (
    "Allow",
    "Retry-After",
    "WWW-Authenticate",
    "Location",
    "RateLimit",
    "RateLimit-Policy",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Vary",
)


def every_request(check_host: HostCheck | None = None, *, count: bool = False) -> Middleware:
    """The one middleware every request passes: its id, the Host check (`security.host_check`),
    problem details for every error, and with `count` (metrics.enabled) the request's metrics:
    its latency by route, method and status, and the requests in flight (server/metrics.py)."""

    labels: dict[AbstractRoute, str] = {}  # the metrics' route label of each route, worked out once

    @web.middleware
    async def request_id_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        metrics = process_metrics() if count else None
        if metrics is not None:
            started = time.perf_counter()
            metrics.in_flight += 1
        headers = request.headers
        rid = incoming_or_new(headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID_KEY] = rid
        # Set, never reset: aiohttp runs each request in a task of its own, whose copy of the
        # context ends with it (aiohttp#3406); nothing after the request sees these values.
        current_request_id.set(rid)
        traceparent = headers.get(TRACEPARENT_HEADER)
        if traceparent is not None:
            current_traceparent.set(valid_traceparent(traceparent))
        response: web.StreamResponse | None = None
        status = CLIENT_CLOSED  # counted when no answer is made: the client went away (cancelled, reset)
        try:
            if check_host is not None:
                check_host(request)
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                # Redirects and other non-error HTTP exceptions travel as exceptions; tag them too.
                exc.headers[REQUEST_ID_HEADER] = rid
                add_security_headers(request, exc.headers)
                status = exc.status
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
                errors_truncated=exc.errors_truncated,
                headers=exc.headers,
            )
        except ConnectionResetError:
            # The client went away mid-request: nobody to answer, nothing to report; aiohttp logs it.
            raise
        except Exception as exc:  # CancelledError is a BaseException: a cancelled handler is not caught
            response = unhandled_problem(request, exc)
        finally:
            if metrics is not None:
                metrics.in_flight -= 1
                route = request.match_info.route
                label = labels.get(route)
                if label is None:
                    label = route_label(route.resource)
                    if route.resource is not None:  # not a 404's route, made anew for each one
                        labels[route] = label
                method = request.method
                metrics.observe_request(
                    label,
                    method if method in KNOWN_METHODS else "OTHER",
                    response.status if response is not None else status,
                    time.perf_counter() - started,
                )
        if not response.prepared:
            answer_headers = response.headers
            answer_headers[REQUEST_ID_HEADER] = rid
            add_security_headers(request, answer_headers)
        return response

    return request_id_and_errors


async def with_headers(
    request: web.Request, handler: Handler, add: Callable[[MutableMapping[str, str]], None]
) -> web.StreamResponse:
    """`handler`'s answer with `add(headers)` applied to its headers, error answers included: an
    HTTP error or a DomainError carries them into its problem details, and any other exception is
    answered here, as the one middleware would (logged, reported, 500; a storage fault's 503), so
    that it carries them too. For the layers whose headers belong on every answer (rate limits, CORS)."""
    try:
        response = await handler(request)
    except ConnectionResetError:
        raise
    except (web.HTTPException, DomainError) as exc:
        add(exc.headers)
        raise
    except Exception as exc:  # CancelledError is a BaseException: a cancelled handler is not caught
        response = unhandled_problem(request, exc)
    if not response.prepared:
        add(response.headers)
    return response


def http_exception_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    return problem(request, exc.status, exc.reason, detail=detail, headers=headers)


def unhandled_problem(request: web.Request, exc: Exception) -> web.Response:
    """A storage fault's 503, or a 500 for an error no handler expected (logged and reported; the
    answer says nothing of it)."""
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


# Without a Host check (tests and benchmarks of the layer itself).
request_id_and_errors = every_request()
