"""Domain errors: raised by models, services and handlers, turned into problem details in one place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# RFC 9457 problem details: how the errors middleware answers a DomainError.
PROBLEM_CONTENT_TYPE = "application/problem+json"


class DomainError(Exception):
    """Base of the errors the API answers with a 4xx/5xx problem; knows its status, nothing of HTTP."""

    status: int = 400
    title: str = "Bad Request"
    type: str = "about:blank"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        errors_truncated: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        # True when `errors` lists only the first violations (server.max_violations) of more.
        self.errors_truncated = errors_truncated
        self.headers = dict(headers or {})


class InvalidInput(DomainError):
    status, title = 400, "Bad Request"


class NotFound(DomainError):
    status, title = 404, "Not Found"


class Conflict(DomainError):
    status, title = 409, "Conflict"


class UnsupportedMediaType(DomainError):
    status, title = 415, "Unsupported Media Type"


class ValidationFailed(DomainError):
    status, title = 422, "Unprocessable Content"
    type = "/problems/validation-error"


class UpstreamError(DomainError):
    """A third party answered badly (5xx, malformed) or not at all."""

    status, title = 502, "Bad Gateway"


class UpstreamTimeout(UpstreamError):
    status, title = 504, "Gateway Timeout"


class ServiceUnavailable(DomainError):
    """A dependency we need (Redis, the queue) is down; the client may retry later."""

    status, title = 503, "Service Unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after))
