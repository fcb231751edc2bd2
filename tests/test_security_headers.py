"""What browsers are told: nosniff on every answer, a CSP and Referrer-Policy on HTML pages
(/internal never framed), and no answer at all to a Host name that is not the server's."""

from __future__ import annotations

import pytest
from fixtures_jobs import auth_header
from support import make_test_config, problem

from server.app import create_app
from server.config import load_config

EVERY_KIND = [
    ("GET", "/", 200),
    ("GET", "/healthz", 200),
    ("GET", "/api/v1/foo", 200),
    ("GET", "/openapi.json", 200),
    ("GET", "/docs", 200),
    ("GET", "/api/v1/nowhere", 404),
    ("GET", "/api/v3/foo", 404),
    ("DELETE", "/api/v1/foo", 405),
    ("GET", "/api/v1/users?limit=0", 400),
    ("GET", "/api/v1/fail", 500),
    ("GET", "/internal/status", 401),
]


@pytest.mark.parametrize(("method", "path", "status"), EVERY_KIND)
async def test_every_answer_says_nosniff(jobs_client, method, path, status):
    resp = await jobs_client.request(method, path)
    await resp.read()
    assert resp.status == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/internal/status",
        "/internal/jobs/failed",
        "/internal/saq/",
        "/internal/saq/static/app.js",
        "/internal/saq/api/queues",
    ],
)
async def test_internal_answers_say_nosniff_and_are_never_framed(jobs_client, path):
    resp = await jobs_client.get(path, headers=auth_header())
    await resp.read()
    assert resp.status == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    if resp.content_type == "text/html":
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/", "/docs"])
async def test_html_pages_carry_a_content_security_policy(client, path):
    resp = await client.get(path)
    assert resp.status == 200 and resp.content_type == "text/html"
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "object-src 'none'" in policy
    assert "frame-ancestors 'self'" in policy
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_json_answers_carry_no_page_policy(client):
    resp = await client.get("/api/v1/foo")
    assert "Content-Security-Policy" not in resp.headers


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:1", "[::1]:8080", "LOCALHOST.", "[::1]"]
)
async def test_loopback_hosts_are_answered(client, host):
    resp = await client.get("/healthz", headers={"Host": host})
    assert resp.status == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8080", "localhost.evil.example", "10.0.0.1", "[::2]:80", "127.0.0.1.nip.io", ""],
)
async def test_other_hosts_are_a_400(client, host):
    resp = await client.get("/api/v1/foo", headers={"Host": host})
    body = await problem(resp, 400)
    assert "allowed_hosts" in body["detail"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_configured_hosts_replace_the_default(tmp_path, redis_url, aiohttp_client):
    config = make_test_config(
        database=tmp_path / "h.db", redis_url=redis_url, server={"allowed_hosts": ["api.example.com", ".example.org"]}
    )
    client = await aiohttp_client(create_app(config))
    for host, status in [
        ("api.example.com", 200),
        ("API.example.com:443", 200),
        ("example.org", 200),
        ("a.b.example.org", 200),
        ("localhost", 400),
        ("example.com", 400),
        ("badexample.org", 400),
    ]:
        resp = await client.get("/healthz", headers={"Host": host})
        assert resp.status == status, host


async def test_a_star_answers_any_host(tmp_path, redis_url, aiohttp_client):
    config = make_test_config(database=tmp_path / "h.db", redis_url=redis_url, server={"allowed_hosts": ["*"]})
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/healthz", headers={"Host": "anything.example"})).status == 200


async def test_the_configured_listening_host_is_allowed(tmp_path, redis_url, aiohttp_client):
    config = make_test_config(database=tmp_path / "h.db", redis_url=redis_url, server={"host": "myhost.lan"})
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/healthz", headers={"Host": "myhost.lan:8080"})).status == 200
    assert (await client.get("/healthz", headers={"Host": "other.lan"})).status == 400


def test_allowed_hosts_from_the_environment(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("")
    config = load_config(path, {"SERVER_ALLOWED_HOSTS": "api.example.com, .example.org"})
    assert config.server.allowed_hosts == ("api.example.com", ".example.org")
