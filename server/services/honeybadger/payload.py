"""Honeybadger notices as plain data: the captured Report, secret filtering, and the payload built from them."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from server.config import PROJECT_ROOT

FILTERED = "[FILTERED]"
# How deep secrets are looked for in params, bodies and contexts; deeper values are replaced.
MAX_DEPTH = 16
STACK_LIMIT = 40


@dataclass(slots=True)
class Report:
    """One notice as captured on the caller's thread: references and plain values only."""

    token: str
    exception: BaseException | None = None
    traceback: TracebackType | None = None
    error_class: str | None = None
    error_message: str | None = None
    # Where a notice without an exception was sent from: (file, line, function), newest first.
    stack: list[tuple[str, int, str]] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    request_id: str | None = None
    url: str | None = None
    component: str | None = None
    action: str | None = None
    query: Mapping[str, str] | None = None
    body: Any = None
    params: Any = None
    headers: Mapping[str, str] | None = None
    method: str | None = None
    remote: str | None = None


def normalize_filters(filters: Iterable[str]) -> tuple[str, ...]:
    return tuple(f.lower().replace("-", "_") for f in filters if f)


def is_secret(key: object, filters: tuple[str, ...]) -> bool:
    """A key is secret when one of the filters is part of it: `token` covers `X-Auth-Token`."""
    name = str(key).lower().replace("-", "_")
    return any(f in name for f in filters)


def filter_secrets(value: Any, filters: tuple[str, ...], depth: int = 0) -> Any:
    """A copy of `value` where every mapping entry under a secret key reads "[FILTERED]"."""
    if depth > MAX_DEPTH:
        return "[TOO DEEP]"
    if isinstance(value, Mapping):
        return {
            str(k): FILTERED if is_secret(k, filters) else filter_secrets(v, filters, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [filter_secrets(v, filters, depth + 1) for v in value]
    return value


def request_params(query: Mapping[str, str] | None, body: Any) -> dict[str, Any]:
    """Query parameters (repeated ones as lists) and the JSON body, as frameworks merge them."""
    params: dict[str, Any] = {}
    if query:
        getall = getattr(query, "getall", None)
        for name in query:
            values = getall(name) if getall is not None else [query[name]]
            params[name] = values[0] if len(values) == 1 else list(values)
    if isinstance(body, Mapping):
        params.update(body)
    elif body is not None:
        params["_json"] = body  # Rails' name for a JSON body that is not an object
    return params


def cgi_data(headers: Mapping[str, str] | None, method: str | None, remote: str | None) -> dict[str, str]:
    """Request headers and method as CGI variables (HTTP_USER_AGENT, REQUEST_METHOD...)."""
    data: dict[str, str] = {}
    if method:
        data["REQUEST_METHOD"] = method
    if remote:
        data["REMOTE_ADDR"] = remote
    headers = headers or {}
    getall = getattr(headers, "getall", None)
    for name in headers:
        values = getall(name) if getall is not None else [headers[name]]
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        data[key] = ", ".join(values)
    return data


def project_path(filename: str) -> str:
    root = str(PROJECT_ROOT)
    return "[PROJECT_ROOT]" + filename[len(root) :] if filename.startswith(root + "/") else filename


def caller_stack(skip: int) -> list[tuple[str, int, str]]:
    """The calling frames, newest first, without reading any file (the sender thread reads the source)."""
    frames = itertools.islice(_walk(sys._getframe(skip + 1)), STACK_LIMIT)
    return [(f.f_code.co_filename, f.f_lineno, f.f_code.co_name) for f in frames]


def _walk(frame: FrameType | None) -> Iterable[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def json_default(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return "[unserializable]"


def build_payload(
    item: Report,
    filters: tuple[str, ...],
    hb_config: Any,
    notice_class: Any,
    read_source: Callable[..., Any],
) -> dict[str, Any]:
    """The JSON document Honeybadger's notices API takes, from honeybadger-python's Notice plus ours."""
    notice = notice_class(
        exception=item.exception,
        exc_traceback=item.traceback,
        error_class=item.error_class,
        error_message=item.error_message,
        context=filter_secrets(item.context, filters),
        tags=list(item.tags),
        config=hb_config,
        request_id=item.request_id,
    )
    payload: dict[str, Any] = notice.payload
    error = payload["error"]
    error["token"] = item.token  # chosen on the loop, so callers can show the id
    if item.stack is not None:
        error["backtrace"] = [
            {"number": line, "file": project_path(name), "method": func, "source": read_source((name, line))}
            for name, line, func in item.stack
        ]
    request = payload["request"]
    for key in ("url", "component", "action"):
        value = getattr(item, key)
        if value is not None:
            request[key] = value
    params = item.params if item.params is not None else request_params(item.query, item.body)
    if params:
        request["params"] = filter_secrets(params, filters)
    if item.headers is not None or item.method is not None:
        request["cgi_data"] = filter_secrets(cgi_data(item.headers, item.method, item.remote), filters)
    return payload
