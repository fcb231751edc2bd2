"""Request validation: bodies, query and path parameters, hooks, 400/413/415/422, compiled once."""

from __future__ import annotations

import json

import jsonschema
import pytest
from support import assert_problem, make_test_config

from server.app import create_app
from server.controllers.bar import POST_BAR_SCHEMA
from server.routing.meta import schemas_of as request_schemas
from server.routing.schemas import CompiledSchema
from server.routing.stamps import body_schema

VALID_BAR = {"hello": "there", "world": [{"color": "red", "size": 1.5}, {"color": "blue"}]}


# --- POST /api/v*/bar: the contract's route, with its declared hook ------------------------------


@pytest.mark.parametrize("version", [1, 2])
async def test_bar_answers_count_and_colors(client, version):
    resp = await client.post(f"/api/v{version}/bar", json=VALID_BAR)
    assert resp.status == 200
    assert await resp.json() == {"hello": "world", "count": 2, "data": ["red", "blue"]}


async def test_bar_keeps_the_order_and_extra_fields_are_allowed(client):
    world = [{"color": c, "size": i} for i, c in enumerate(["ß", "green", "", "red"])]
    resp = await client.post("/api/v1/bar", json={"hello": "", "world": world, "extra": [1]})
    assert resp.status == 200
    assert await resp.json() == {"hello": "world", "count": 4, "data": ["ß", "green", "", "red"]}


@pytest.mark.parametrize(
    "body, pointers",
    [
        ({}, ["", ""]),  # both required members missing: one error each, at the object
        ({"hello": "x"}, [""]),
        ({"hello": 1, "world": [{"color": "red"}]}, ["/hello"]),
        ({"hello": "x", "world": []}, ["/world"]),
        ({"hello": "x", "world": {"color": "red"}}, ["/world"]),
        ({"hello": "x", "world": [{"size": 1}]}, ["/world/0"]),
        ({"hello": "x", "world": [{"color": "red", "size": "big"}]}, ["/world/0/size"]),
        ({"hello": "x", "world": [{"color": "red"}, "blue"]}, ["/world/1"]),
        (
            {"hello": None, "world": [{"color": 1}, {"color": "a", "size": True}]},
            ["/hello", "/world/0/color", "/world/1/size"],
        ),
        ([VALID_BAR], [""]),
        ("hello", [""]),
        (None, [""]),
    ],
)
async def test_bar_schema_failure_is_the_controllers_own_422(client, body, pointers):
    raw = json.dumps(body).encode()
    resp = await client.post("/api/v1/bar", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert resp.headers["Content-Type"].startswith("application/json")
    answer = await resp.json()
    assert answer["success"] is False
    assert answer["message"]
    assert sorted(e["pointer"] for e in answer["errors"]) == sorted(pointers)
    assert all(e["detail"] for e in answer["errors"])


async def test_bar_lists_every_violation(client):
    resp = await client.post("/api/v1/bar", json={})
    answer = await resp.json()
    details = " ".join(e["detail"] for e in answer["errors"])
    assert len(answer["errors"]) == 2
    assert "'hello'" in details and "'world'" in details


async def test_not_json_is_400(client):
    for raw in (
        b"{",
        b"",
        b"{'hello': 1}",
        b"\xff\xfe\x00",
        b"[1,]",
        b'{"a": NaN}',
        b"Infinity",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"hello": "\\ud800", "world": [{"color": "x"}]}',
        b'{"hello": "x", "world": [{"color": "\\uDC00 \\ud83d"}]}',
        b'"\xed\xa0\x80"',
        b"\xef\xbb\xbf{}",
    ):
        resp = await client.post("/api/v1/bar", data=raw, headers={"Content-Type": "application/json"})
        body = await resp.json()
        assert_problem(resp, body, 400)
        assert "not valid JSON" in body["detail"]


async def test_escaped_pairs_and_backslashes_are_fine(client):
    for color in ("\U0001f600", "\\ud800", "é"):
        resp = await client.post("/api/v1/bar", json={"hello": "x", "world": [{"color": color}]})
        assert resp.status == 200
        assert (await resp.json())["data"] == [color]


async def test_wrong_content_type_is_415(client):
    raw = json.dumps(VALID_BAR).encode()
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ):
        resp = await client.post("/api/v1/bar", data=raw, headers={"Content-Type": content_type})
        assert_problem(resp, await resp.json(), 415)
    resp = await client.post("/api/v1/bar", data=raw)  # aiohttp sends application/octet-stream
    assert_problem(resp, await resp.json(), 415)


async def test_json_content_types_are_accepted(client):
    raw = json.dumps(VALID_BAR).encode()
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        resp = await client.post("/api/v1/bar", data=raw, headers={"Content-Type": content_type})
        assert resp.status == 200, content_type


async def test_body_over_the_limit_is_413(tmp_path, redis_url, aiohttp_client):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, server={"max_body_bytes": 2048})
    client = await aiohttp_client(create_app(config))
    world = [{"color": "x" * 40}] * 40
    raw = json.dumps({"hello": "big", "world": world}).encode()
    assert len(raw) > 2048
    resp = await client.post("/api/v1/bar", data=raw, headers={"Content-Type": "application/json"})
    assert_problem(resp, await resp.json(), 413)
    resp = await client.post("/api/v1/bar", json={"hello": "small", "world": world[:10]})
    assert resp.status == 200


# --- the default answer, query and path parameters (test-built sub-app) ------------------------


async def test_default_answer_is_422_problem_details_with_pointers(sample_client):
    resp = await sample_client.post("/sample/notes", json={"text": "", "when": "2024-02-30", "x": 1})
    body = await resp.json()
    assert_problem(resp, body, 422)
    assert body["type"] == "/problems/validation-error"
    pointers = sorted(e["pointer"] for e in body["errors"])
    assert pointers == ["", "/text", "/when"]  # "x" is not allowed: reported at the object
    assert all(set(e) == {"pointer", "detail"} for e in body["errors"])


async def test_a_declared_hook_may_decline(sample_client):
    resp = await sample_client.put("/sample/notes", json={"text": 5})
    body = await resp.json()
    assert_problem(resp, body, 422)
    assert body["errors"][0]["pointer"] == "/text"


async def test_valid_body_reaches_the_handler_parsed(sample_client):
    note = {"text": "hi", "when": "2024-02-29", "id": "12345678-1234-1234-1234-123456789abc", "stars": 5}
    resp = await sample_client.post("/sample/notes", json=note)
    assert resp.status == 201
    assert await resp.json() == note


async def test_formats_are_checked(sample_client):
    for bad in ({"text": "a", "when": "yesterday"}, {"text": "a", "id": "not-a-uuid"}):
        resp = await sample_client.post("/sample/notes", json=bad)
        assert resp.status == 422, bad


async def test_query_parameters_are_coerced(sample_client):
    resp = await sample_client.get(
        "/sample/items",
        params=[
            ("kind", "a"),
            ("limit", "10"),
            ("offset", "0"),
            ("ratio", "0.5"),
            ("flag", "true"),
            ("tag", "x"),
            ("tag", "y"),
        ],
    )
    assert resp.status == 200
    assert await resp.json() == {"kind": "a", "limit": 10, "offset": 0, "ratio": 0.5, "flag": True, "tag": ["x", "y"]}


@pytest.mark.parametrize(
    "query, parameters",
    [
        ("kind=a&limit=0", ["limit"]),
        ("kind=a&limit=101", ["limit"]),
        ("kind=a&limit=abc", ["limit"]),
        ("kind=a&limit=1_0", ["limit"]),  # int() would take it; a URL's integer is plain digits
        ("kind=a&limit=%201", ["limit"]),
        ("kind=a&limit=10.0", ["limit"]),
        ("kind=a&offset=-1", ["offset"]),
        ("kind=a&ratio=nan", ["ratio"]),
        ("kind=a&ratio=1e400", ["ratio"]),
        ("kind=a&flag=yes", ["flag"]),
        ("kind=a&tag=a&tag=b&tag=c&tag=d", ["tag"]),
        ("kind=a&tag=", ["tag"]),
        ("kind=c", ["kind"]),
        ("", ["kind"]),
        ("kind=a&sort=name", ["sort"]),
        ("limit=0&sort=name", ["kind", "limit", "sort"]),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(sample_client, query, parameters):
    resp = await sample_client.get(f"/sample/items?{query}")
    body = await resp.json()
    assert_problem(resp, body, 400)
    assert sorted(e["parameter"] for e in body["errors"]) == parameters
    assert all(set(e) == {"parameter", "detail"} and e["detail"] for e in body["errors"])


async def test_path_parameters_are_coerced(sample_client):
    resp = await sample_client.get("/sample/items/42")
    assert resp.status == 200
    assert await resp.json() == {"item_id": 42}
    resp = await sample_client.get(f"/sample/items/{2**63 - 1}")
    assert await resp.json() == {"item_id": 2**63 - 1}


async def test_bad_path_parameters_are_404(sample_client):
    for value in ("abc", "0", "-1", "1.5", "1_0", str(2**63), "9" * 40, "%20"):
        resp = await sample_client.get(f"/sample/items/{value}")
        assert_problem(resp, await resp.json(), 404)


# --- class-based views -------------------------------------------------------------------------


async def test_view_without_schema_is_untouched(sample_client):
    resp = await sample_client.get("/sample/views/plain")
    assert resp.status == 200
    assert await resp.json() == {"view": "plain"}


async def test_view_valid_body(sample_client):
    resp = await sample_client.post("/sample/views/v1", json={"text": "hello"})
    assert resp.status == 201
    assert await resp.json() == {"note": {"text": "hello"}}
    resp = await sample_client.patch("/sample/views/v1", json={"text": "hello", "stars": 0})
    assert resp.status == 200


async def test_view_instance_method_hook_answers(sample_client):
    resp = await sample_client.post("/sample/views/first", json={"text": 1, "stars": 9})
    assert resp.status == 422
    body = await resp.json()
    assert body["hook"] == "instance"
    assert body["view"] == "first"  # the hook ran on a view built for this request
    assert sorted(e["pointer"] for e in body["errors"]) == ["/stars", "/text"]


async def test_view_staticmethod_hook_answers(sample_client):
    resp = await sample_client.patch("/sample/views/x", json={"text": "", "when": 3})
    assert resp.status == 422
    assert await resp.json() == {"hook": "static", "count": 2}


async def test_view_without_hook_gets_the_default_answer(sample_client):
    resp = await sample_client.put("/sample/views/x", json=[])
    body = await resp.json()
    assert_problem(resp, body, 422)
    assert body["errors"] == [{"pointer": "", "detail": "[] is not of type 'object'"}]


async def test_view_bad_json_and_media_type(sample_client):
    resp = await sample_client.post("/sample/views/x", data=b"{", headers={"Content-Type": "application/json"})
    assert_problem(resp, await resp.json(), 400)
    resp = await sample_client.post("/sample/views/x", data=b"{}", headers={"Content-Type": "text/plain"})
    assert_problem(resp, await resp.json(), 415)


async def test_view_unserved_method_is_405(sample_client):
    resp = await sample_client.delete("/sample/views/x")
    assert_problem(resp, await resp.json(), 405)


# --- compiled once; jsonschema only for invalid bodies -----------------------------------------


async def test_schemas_are_compiled_once(sample_client, client):
    before = CompiledSchema.compilations
    for i in range(60):
        assert (await client.post("/api/v1/bar", json=VALID_BAR)).status == 200
        assert (await client.post("/api/v2/bar", json={"hello": i})).status == 422
        assert (await sample_client.get(f"/sample/items?kind=a&limit={i + 1}")).status == 200
        assert (await sample_client.get("/sample/items/0")).status == 404
        assert (await sample_client.post("/sample/views/x", json={"text": "t"})).status == 201
    assert CompiledSchema.compilations == before


def test_one_stamp_compiles_once_for_every_handler_it_marks():
    before = CompiledSchema.compilations
    stamp = body_schema({"type": "object"})

    async def first(request): ...

    async def second(request): ...

    stamp(first)
    stamp(second)
    assert CompiledSchema.compilations == before + 1
    assert request_schemas(first)["body"] is request_schemas(second)["body"]


def test_a_broken_schema_fails_when_decorating():
    with pytest.raises(jsonschema.SchemaError):
        body_schema({"type": "objekt"})


async def test_valid_bodies_never_run_jsonschema(client, monkeypatch):
    calls = []
    original = jsonschema.Draft202012Validator.iter_errors

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    # The reference class, and the lazy jsonschema walker that lists an invalid body's violations.
    lazy = type(request_schemas(bar_handler(client))["body"].lazy)
    for cls in (jsonschema.Draft202012Validator, lazy):
        monkeypatch.setattr(cls, "iter_errors", counting)
        monkeypatch.setattr(cls, "is_valid", lambda *a, **k: pytest.fail("is_valid"))
    for _ in range(20):
        assert (await client.post("/api/v1/bar", json=VALID_BAR)).status == 200
    assert calls == []
    assert (await client.post("/api/v1/bar", json={"hello": 1})).status == 422
    assert calls  # the full error list of an invalid body comes from jsonschema


def bar_handler(client):
    routes = [r for r in client.server.app.router.routes() if r.resource and r.resource.canonical == "/api/v1/bar"]
    assert routes
    return routes[0].handler


async def test_the_stamped_schema_is_the_one_validating(client):
    assert request_schemas(bar_handler(client))["body"].schema is POST_BAR_SCHEMA
    resp = await client.post("/api/v1/bar", json=VALID_BAR)
    assert resp.status == 200


def test_when_the_validators_disagree_the_fast_one_decides_and_names_the_violation():
    # jsonschema's "email" check only looks for an "@"; jsonschema_rs checks the address.
    compiled = CompiledSchema({"type": "object", "properties": {"to": {"type": "string", "format": "email"}}})
    assert compiled.full.is_valid({"to": "@example.com"})
    assert not compiled.is_valid({"to": "@example.com"})
    errors = compiled.errors({"to": "@example.com"})
    assert [path for path, _ in errors] == [["to"]]
    assert compiled.errors({"to": "a@example.com"}) == []
