"""GET /openapi.json and GET /docs: generated from the route tables and the stamped schemas."""

from __future__ import annotations

import re

from aiohttp import web
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from validation_app import ITEM_PATH_SCHEMA, NOTE_SCHEMA

from server.controllers.bar import POST_BAR_SCHEMA
from server.controllers.versions import API_VERSIONS
from server.keys import OPENAPI_KEY
from server.routing.versions import describe_routes

VIEW_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH")


def expected_operations(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every public route, straight from the route tables."""
    expected = set()
    for info in describe_routes(app):
        if info.path.startswith("/internal"):
            continue
        if info.method == "*" and isinstance(info.handler, type) and issubclass(info.handler, web.View):
            expected |= {(m, info.path) for m in VIEW_METHODS if hasattr(info.handler, m.lower())}
        elif info.method != "*":
            expected.add((info.method, info.path))
    return expected


def documented_operations(doc) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def resolve(doc, ref: str):
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validator_for_ref(doc, ref: str) -> Draft202012Validator:
    """A validator for a schema of the document, its $refs resolved inside the document."""
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": "urn:openapi" + ref}, registry=registry)


def response_schema_ref(doc, path, method, status, media="application/json") -> str:
    response = doc["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = resolve(doc, response["$ref"])
        media = "application/problem+json"
    return response["content"][media]["schema"]["$ref"]


async def fetch_doc(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()


async def test_openapi_is_a_valid_3_1_document(client):
    doc = await fetch_doc(client)
    assert doc["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(doc).validate()


async def test_openapi_lists_every_public_route_of_every_version(client):
    doc = await fetch_doc(client)
    app = client.server.app
    expected = expected_operations(app)
    assert documented_operations(doc) == expected
    for version in API_VERSIONS:
        assert any(path.startswith(f"/api/v{version}/") for _, path in expected)
    for page in ("/", "/healthz", "/readyz", "/openapi.json", "/docs"):
        assert ("GET", page) in expected
    assert not any(path.startswith("/internal") for path in doc["paths"])
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_openapi_with_a_test_built_sub_app(sample_client):
    doc = await fetch_doc(sample_client)
    OpenAPIV31SpecValidator(doc).validate()
    assert documented_operations(doc) == expected_operations(sample_client.server.app)
    view = doc["paths"]["/sample/views/{name}"]
    assert set(view) == {"get", "post", "patch", "put"}  # the class-based view's methods
    assert view["post"]["summary"] == "Echo a note (hook: an instance method)"
    assert view["get"]["parameters"] == [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]

    item = doc["paths"]["/sample/items/{item_id}"]["get"]
    assert item["parameters"] == [
        {"name": "item_id", "in": "path", "required": True, "schema": ITEM_PATH_SCHEMA["properties"]["item_id"]}
    ]
    assert set(item["responses"]) == {"200", "404", "500"}

    listing = doc["paths"]["/sample/items"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert set(params) == {"kind", "limit", "offset", "ratio", "flag", "tag"}
    assert all(p["in"] == "query" for p in params.values())
    assert params["kind"]["required"] is True and params["limit"]["required"] is False
    assert params["kind"]["description"] == "Which items"
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert set(listing["responses"]) == {"200", "400", "500"}

    notes = doc["paths"]["/sample/notes"]["post"]
    assert set(notes["responses"]) == {"201", "400", "413", "415", "422", "500"}  # 201 from @describe
    # The schema's own $ref into its $defs still resolves inside the document.
    ref = notes["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    component = resolve(doc, ref)
    day = resolve(doc, component["properties"]["when"]["$ref"])
    assert day == NOTE_SCHEMA["$defs"]["day"]
    note = validator_for_ref(doc, ref)
    assert note.is_valid({"text": "hi", "when": "2024-01-31"})
    assert not note.is_valid({"text": "hi", "when": 5})


async def test_request_bodies_are_the_validating_schemas(client):
    doc = await fetch_doc(client)
    for version in API_VERSIONS:
        operation = doc["paths"][f"/api/v{version}/bar"]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert resolve(doc, body["content"]["application/json"]["schema"]["$ref"]) == POST_BAR_SCHEMA
        assert set(operation["responses"]) == {"200", "400", "413", "415", "422", "500"}
        for status, component in ((400, "BadRequest"), (413, "PayloadTooLarge"), (415, "UnsupportedMediaType")):
            assert operation["responses"][str(status)] == {"$ref": f"#/components/responses/{component}"}
    problem = doc["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "request_id"]
    codes = {
        name
        for name, response in doc["components"]["responses"].items()
        if response["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    }
    assert codes >= {
        "BadRequest",
        "NotFound",
        "MethodNotAllowed",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "ValidationFailed",
        "InternalServerError",
    }


async def test_answers_match_their_documented_schemas(sample_client):
    client = sample_client
    doc = await fetch_doc(client)
    cases = [
        (client.post("/api/v1/bar", json={"hello": "a", "world": [{"color": "red"}]}), "/api/v1/bar", "post", 200),
        (client.post("/api/v1/bar", json={"hello": 1}), "/api/v1/bar", "post", 422),
        (client.post("/api/v1/bar", data=b"{"), "/api/v1/bar", "post", 415),
        (
            client.post("/api/v1/bar", data=b"{", headers={"Content-Type": "application/json"}),
            "/api/v1/bar",
            "post",
            400,
        ),
        (client.post("/sample/notes", json={"text": ""}), "/sample/notes", "post", 422),
        (client.get("/sample/items?limit=0"), "/sample/items", "get", 400),
        (client.get("/sample/items/abc"), "/sample/items/{item_id}", "get", 404),
        (client.get("/api/v2/fail"), "/api/v2/fail", "get", 500),
    ]
    for request, path, method, status in cases:
        resp = await request
        assert resp.status == status, (path, status)
        validator = validator_for_ref(doc, response_schema_ref(doc, path, method, status))
        body = await resp.json(content_type=None)
        errors = [e.message for e in validator.iter_errors(body)]
        assert errors == [], (path, status, body)


async def test_the_document_is_built_once(client):
    first = await (await client.get("/openapi.json")).read()
    cached = client.server.app[OPENAPI_KEY]["document"]
    second = await (await client.get("/openapi.json")).read()
    assert first == second
    assert client.server.app[OPENAPI_KEY]["document"] is cached
    await client.get("/docs")
    assert client.server.app[OPENAPI_KEY]["document"] is cached


async def test_docs_page_shows_every_operation_offline(sample_client):
    doc = await fetch_doc(sample_client)
    resp = await sample_client.get("/docs")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    html = await resp.text()
    for path, item in doc["paths"].items():
        for _method, operation in item.items():
            assert f'id="{operation["operationId"]}"' in html
            assert path in html
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    assert "&#34;color&#34;" in html or '"color"' in html  # the bar schema itself is shown
    # Nothing is loaded from elsewhere: no external script, stylesheet, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "<link" not in html


async def test_index_links_to_the_docs(client):
    html = await (await client.get("/")).text()
    assert 'href="/docs"' in html and 'href="/openapi.json"' in html


def test_describe_is_optional_and_can_hide_a_route():
    from server.routing.openapi import build_openapi, problem_response
    from server.routing.stamps import describe
    from server.routing.versions import RouteInfo

    async def shown(request): ...

    @describe(hidden=True)
    async def hidden(request): ...

    @describe(responses={200: "Fine", 503: problem_response(503), 504: problem_response(504)})
    async def upstream(request): ...

    async def documented(request):
        """First line is the summary.

        The rest is not."""

    routes = [
        RouteInfo(None, "GET", "/a", None, shown),
        RouteInfo(None, "GET", "/b", None, hidden),
        RouteInfo(3, "DELETE", "/api/v3/c/{c_id}", "c", documented),
        RouteInfo(None, "GET", "/internal/x", None, shown),
        RouteInfo(None, "*", "/any", None, shown),
        RouteInfo(1, "GET", "/api/v1/up", None, upstream),
    ]
    doc = build_openapi(routes, title="t", version="1")
    OpenAPIV31SpecValidator(doc).validate()
    assert set(doc["paths"]) == {"/a", "/api/v3/c/{c_id}", "/api/v1/up"}
    assert doc["paths"]["/api/v1/up"]["get"]["responses"] == {
        "200": {"description": "Fine"},
        "500": {"$ref": "#/components/responses/InternalServerError"},
        "503": {"$ref": "#/components/responses/ServiceUnavailable"},
        "504": {"$ref": "#/components/responses/GatewayTimeout"},
    }
    assert "summary" not in doc["paths"]["/a"]["get"]
    delete = doc["paths"]["/api/v3/c/{c_id}"]["delete"]
    assert delete["summary"] == "First line is the summary."
    assert delete["tags"] == ["v3"]
    assert set(delete["responses"]) == {"2XX", "404", "500"}  # success code unknown without a stamp
