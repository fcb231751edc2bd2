"""Fuzzing every route of the app: generated bodies for POST/PATCH/PUT, many-item arrays, long
digit strings in every path and query parameter, undeclared query parameters. Never a 5xx, and
never an answer larger than a bound."""

from __future__ import annotations

import json
import re
from collections import Counter
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_strategies import documents, json_values, valid_documents

from server.routing.meta import schemas_of as request_schemas
from server.routing.openapi import route_operations
from server.routing.versions import describe_routes

FUZZED_METHODS = {"POST", "PATCH", "PUT"}
EXAMPLES_PER_ROUTE = 300

# Bodies no generator is likely to hit, sent to every route as well.
NASTY = [
    (b"", "application/json"),
    (b"null", "application/json"),
    (b'{"a": NaN}', "application/json"),
    (b"[" * 50_000 + b"]" * 50_000, "application/json"),
    (b'{"x": "\\ud800"}', "application/json"),
    (b'"\xed\xa0\x80"', "application/json"),
    (b"\xff\xfe{\x00}\x00", "application/json"),
    (json.dumps({"n": 10**400}).encode(), "application/json"),
    (json.dumps({"n": -(2**64), "f": 1e308, "s": "\x00" * 100}).encode(), "application/json"),
    (json.dumps({"k" * 10_000: ["v" * 10_000] * 10}).encode(), "application/json"),
    (b"{}", "text/plain"),
    (b"a=1&b=2", "application/x-www-form-urlencoded"),
    # Many-item arrays, each item wrong or right, up to the body limit.
    (json.dumps({"hello": "x", "world": [1] * 500_000}, separators=(",", ":")).encode(), "application/json"),
    (json.dumps({"hello": 1, "world": [{"color": 1, "size": "x"}] * 35_000}).encode(), "application/json"),
    (
        json.dumps({"hello": "x", "world": [{"color": "c"}] * 70_000}, separators=(",", ":")).encode(),
        "application/json",
    ),
    (json.dumps([{"name": 1}] * 90_000, separators=(",", ":")).encode(), "application/json"),
    (json.dumps({"name": ["x"] * 200_000}, separators=(",", ":")).encode(), "application/json"),
    (json.dumps({f"k{i}": i for i in range(60_000)}, separators=(",", ":")).encode(), "application/json"),
]
# An error answer is small whatever the request: at most this many bytes (a 422 lists at most
# server.max_violations violations, each message shortened).
MAX_ERROR_BYTES = 32 * 1024
# Digit strings: just past 64 bits, past Python's int() limit (4,300 digits), and long.
LONG_DIGITS = ["9" * 20, "1" * 4301, "7" * 5000, "-" + "8" * 5000, "0" * 6000 + "1"]


def fuzzed_operations(app):
    """(method, path template, handler) of every body-taking operation, whoever added it."""
    for route in describe_routes(app):
        for method, handler in route_operations(route):
            if method in FUZZED_METHODS and not route.path.startswith("/internal"):
                yield method, route.path, handler


def request_strategy(path: str, handler):
    """(url, raw body, content type) triples for one route."""
    schemas = request_schemas(handler)
    names = [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    path_props = schemas["path"].schema.get("properties", {}) if "path" in schemas else {}
    values = {
        name: (valid_documents(path_props[name]) if name in path_props else st.just("1")).map(
            lambda v: quote(str(v), safe="")
        )
        | st.text(min_size=1, max_size=30).map(lambda v: quote(v, safe=""))
        for name in names
    }
    urls = st.fixed_dictionaries(values).map(lambda v: path.format(**v))
    body_schema = schemas["body"].schema if "body" in schemas else True
    as_json = (documents(body_schema) | json_values).map(lambda d: (json.dumps(d).encode(), "application/json"))
    raw = st.tuples(st.binary(max_size=64), st.sampled_from(["application/json", "text/plain"]))
    return st.tuples(urls, st.one_of(as_json, as_json, raw))


def collect(strategy, count: int) -> list:
    """`count` examples drawn by Hypothesis (sent afterwards: the HTTP client is async)."""
    examples: list = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(strategy)
    def draw(example):
        examples.append(example)

    draw()
    return examples


async def test_no_generated_body_gets_a_5xx(client):
    operations = list(fuzzed_operations(client.server.app))
    assert {("POST", "/api/v1/bar"), ("POST", "/api/v2/bar")} <= {(m, p) for m, p, _ in operations}
    for method, path, handler in operations:
        examples = collect(request_strategy(path, handler), EXAMPLES_PER_ROUTE)
        examples += [(re.sub(r"\{[^}]+\}", "1", path), nasty) for nasty in NASTY]
        statuses: Counter[int] = Counter()
        for url, (raw, content_type) in examples:
            resp = await client.request(method, url, data=raw, headers={"Content-Type": content_type})
            answer = await resp.read()
            assert resp.status < 500, (method, url, content_type, raw[:300], await resp.text())
            assert resp.status < 400 or len(answer) <= MAX_ERROR_BYTES, (method, url, raw[:300], len(answer))
            statuses[resp.status] += 1
        # The generators reach past the parser and the schema, into the handler.
        assert len(examples) >= EXAMPLES_PER_ROUTE
        assert statuses.keys() & {200, 201, 204} or "body" not in request_schemas(handler), (method, path, statuses)


def every_operation(app):
    """(method, path template, handler) of every public operation but /fail's deliberate 500."""
    for route in describe_routes(app):
        if route.path.startswith("/internal") or route.path.endswith("/fail"):
            continue
        for method, handler in route_operations(route):
            yield method, route.path, handler


def long_parameter_urls(path: str, handler) -> list[str]:
    """The path with each path parameter, then each declared query parameter, a long digit string."""
    names = re.findall(r"\{([^}:]+)[^}]*\}", path)
    plain = re.sub(r"\{[^}]+\}", "1", path)
    urls = []
    for digits in LONG_DIGITS:
        for name in names:
            urls.append(re.sub(r"\{" + re.escape(name) + r"[^}]*\}", digits, path).replace("{", "").replace("}", ""))
        query = request_schemas(handler).get("query")
        for param in query.schema.get("properties", {}) if query is not None else ():
            urls.append(f"{plain}?{param}={digits}")
        urls.append(f"{plain}?undeclared={digits}")
    urls += [f"{plain}?undeclared=1", f"{plain}?a=1&b=2&c=3", f"{plain}?" + "&".join(f"p{i}=1" for i in range(500))]
    return [re.sub(r"\{[^}]+\}", "1", url) for url in urls]


async def test_long_digits_and_undeclared_parameters_never_get_a_5xx(client):
    operations = list(every_operation(client.server.app))
    assert ("GET", "/api/v1/users/{user_id}") in {(m, p) for m, p, _ in operations}
    statuses: Counter[int] = Counter()
    for method, path, handler in operations:
        body = {"name": "x"} if method in FUZZED_METHODS else None
        for url in long_parameter_urls(path, handler):
            resp = await client.request(method, url, json=body)
            answer = await resp.read()
            assert resp.status < 500, (method, url[:200], answer[:500])
            limit = MAX_ERROR_BYTES if resp.status >= 400 else 1024 * 1024
            assert len(answer) <= limit, (method, url[:200], len(answer))
            statuses[resp.status] += 1
    assert statuses[400] and statuses[404], statuses  # refused, not served
