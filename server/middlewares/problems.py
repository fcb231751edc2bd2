"""RFC 9457 problem-details responses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web

from server.errors import PROBLEM_CONTENT_TYPE
from server.json_codec import json_response
from server.keys import REQUEST_ID_KEY


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    request: web.Request,
    status: int,
    title: str | None = None,
    *,
    detail: str | None = None,
    type: str = "about:blank",
    errors: Sequence[Mapping[str, Any]] | None = None,
    errors_truncated: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Build an `application/problem+json` answer carrying the request id."""
    body: dict[str, Any] = {
        "type": type,
        "title": title or status_title(status),
        "status": status,
        "detail": detail if detail is not None else (title or status_title(status)),
        "request_id": request.get(REQUEST_ID_KEY),
    }
    if errors is not None:
        body["errors"] = list(errors)
        if errors_truncated:  # `errors` lists only the first violations (server.max_violations)
            body["errors_truncated"] = True
    return json_response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)
