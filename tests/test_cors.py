"""CORS on the root app: preflights answered before any handler, allowed and refused origins."""

from __future__ import annotations

import pytest
from fixtures_jobs import auth_header
from support import make_test_config, problem

from server.app import create_app
from server.config import ConfigError, build_config

APP = "https://app.example"
EVIL = "https://evil.example"
CORS = {
    "allow_origins": [APP],
    "allow_methods": ["GET", "POST", "PATCH", "DELETE"],
    "allow_headers": ["Authorization", "Content-Type"],
    "max_age": 600,
}


@pytest.fixture
async def cors_client(redis_url, tmp_path, aiohttp_client):
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        cors=CORS,
        internal={"username": "admin", "password": "test-internal-password"},
    )
    return await aiohttp_client(create_app(config))


def preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_a_preflight_from_an_allowed_origin_is_answered_without_a_handler(cors_client):
    # POST /users would answer 401 without a token, and no route serves OPTIONS (405): a 204
    # proves the answer came from the CORS middleware alone.
    resp = await cors_client.options("/api/v1/users", headers=preflight(APP))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert set(resp.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "PATCH", "DELETE"}
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert "Origin" in resp.headers["Vary"]
    assert resp.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (preflight(EVIL), "origin"),
        (preflight(APP, method="PUT"), "method"),
        (preflight(APP, headers="authorization, x-secret"), "x-secret"),
    ],
)
async def test_a_refused_preflight_is_403_without_cors_headers(cors_client, headers, why):
    resp = await cors_client.options("/api/v1/users", headers=headers)
    body = await problem(resp, 403)
    assert why in body["detail"]
    assert not any(name.startswith("Access-Control-Allow") for name in resp.headers)


async def test_simple_requests_carry_the_origin_only_when_allowed(cors_client):
    allowed = await cors_client.get("/api/v1/foo", headers={"Origin": APP})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    exposed = allowed.headers["Access-Control-Expose-Headers"]
    assert {"X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After"} <= set(exposed.split(", "))
    assert allowed.headers["Vary"] == "Origin"

    refused = await cors_client.get("/api/v1/foo", headers={"Origin": EVIL})
    assert refused.status == 200  # served; the browser keeps the answer from the page
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert refused.headers["Vary"] == "Origin"

    same_site = await cors_client.get("/api/v1/foo")  # no Origin: not a cross-origin request
    assert "Access-Control-Allow-Origin" not in same_site.headers


async def test_error_answers_carry_the_cors_headers_too(cors_client):
    for resp in (
        await cors_client.post("/api/v1/users", json={"name": "x"}, headers={"Origin": APP}),  # 401
        await cors_client.get("/api/v1/users/999", headers={"Origin": APP}),  # 404
        await cors_client.get("/nowhere", headers={"Origin": APP}),  # 404 outside the API
    ):
        assert resp.status >= 400
        assert resp.headers["Access-Control-Allow-Origin"] == APP  # the page can read the problem


async def test_internal_pages_never_answer_cors(cors_client):
    resp = await cors_client.get("/internal/status", headers={**auth_header(), "Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await cors_client.options("/internal/saq/", headers=preflight(APP, method="GET"))
    assert resp.status != 204 and "Access-Control-Allow-Origin" not in resp.headers


async def test_credentials_are_sent_with_the_named_origin(redis_url, tmp_path, aiohttp_client):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, cors={**CORS, "allow_credentials": True})
    client = await aiohttp_client(create_app(config))
    resp = await client.options("/api/v1/users", headers=preflight(APP))
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    resp = await client.get("/api/v1/foo", headers={"Origin": APP})
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


async def test_any_origin_gets_a_star_without_credentials(redis_url, tmp_path, aiohttp_client):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, cors={**CORS, "allow_origins": ["*"]})
    client = await aiohttp_client(create_app(config))
    resp = await client.get("/api/v1/foo", headers={"Origin": EVIL})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert (await client.options("/api/v1/foo", headers=preflight(EVIL, method="GET"))).status == 204


def test_credentials_with_a_star_are_refused_by_the_config():
    with pytest.raises(ConfigError, match=r"cors\.allow_credentials"):
        build_config({"cors": {"allow_origins": ["*"], "allow_credentials": True}})
    with pytest.raises(ConfigError, match=r"cors\.allow_origins"):
        build_config({"cors": {"allow_origins": ["app.example"]}})  # an origin has a scheme


async def test_no_cors_by_default(client):
    resp = await client.get("/api/v1/foo", headers={"Origin": APP})
    assert not any(name.startswith("Access-Control-") for name in resp.headers)
    resp = await client.options("/api/v1/users", headers=preflight(APP))
    assert resp.status == 405  # no preflight answering at all: the router's answer
