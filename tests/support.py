"""Test helpers: test configs (from testing/config.py) and the checks every error answer gets."""

from __future__ import annotations

from testing.config import deep_merge, make_test_config

__all__ = ["PROBLEM", "assert_problem", "deep_merge", "json_ok", "make_test_config", "problem"]


PROBLEM = "application/problem+json"


def assert_problem(resp, body, status):
    """What a client of any error answer sees: RFC 9457 fields, its request id, no traceback."""
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith(PROBLEM)
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "request_id"}
    assert body["request_id"] == resp.headers["X-Request-ID"]
    assert "Traceback" not in str(body["detail"])


async def problem(resp, status: int) -> dict:
    """The problem-details body of `resp`, after checking it as `assert_problem` does."""
    body = await resp.json(content_type=None)
    assert resp.status == status, body
    assert_problem(resp, body, status)
    return body


async def json_ok(client, path: str, **kwargs):
    """(response, its JSON body) of a GET that must answer 200 (the body is shown when not)."""
    resp = await client.get(path, **kwargs)
    assert resp.status == 200, await resp.text()
    return resp, await resp.json()
