"""The internal pages: Basic auth on everything under /internal, SAQ's dashboard under its prefix, failed jobs."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

import pytest
from fixtures_jobs import (
    INTERNAL_PASSWORD,
    INTERNAL_USER,
    app_with_enqueue_route,
    auth_header,
    clean_env,
    jobs_test_config,
    post_job,
)

from server.config import PROJECT_ROOT

PROTECTED = (
    "/internal/saq/",
    "/internal/saq/api/queues",
    "/internal/saq/static/app.js",
    "/internal/jobs/failed",
    "/internal/anything-added-later",
)


def basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.mark.parametrize("path", PROTECTED)
async def test_internal_pages_need_credentials(jobs_client, path):
    for headers in (
        {},
        auth_header(password="wrong"),
        auth_header(user="root"),
        auth_header(password=INTERNAL_PASSWORD + "x"),
        {"Authorization": "Bearer " + INTERNAL_PASSWORD},
        {"Authorization": "Basic not-base64!"},
        basic(INTERNAL_USER.encode() + INTERNAL_PASSWORD.encode()),  # no colon
    ):
        resp = await jobs_client.get(path, headers=headers)
        assert resp.status == 401, (path, headers)
        assert resp.headers["WWW-Authenticate"].startswith('Basic realm="internal"')
        body = await resp.json()
        assert body["status"] == 401 and INTERNAL_PASSWORD not in await resp.text()


async def test_without_a_password_nothing_under_internal_is_served(tmp_path, redis_url, aiohttp_client):
    config = jobs_test_config(tmp_path, redis_url, internal={"password": ""})
    client = await aiohttp_client(app_with_enqueue_route(config))
    for path in PROTECTED:
        for headers in ({}, auth_header(password="")):
            resp = await client.get(path, headers=headers)
            assert resp.status == 404, path
            assert "WWW-Authenticate" not in resp.headers
    assert (await client.get("/healthz")).status == 200  # the rest is untouched


async def test_public_routes_need_no_credentials(jobs_client):
    for path in ("/", "/healthz", "/api/v1/foo"):
        assert (await jobs_client.get(path)).status == 200


async def test_the_dashboard_works_under_its_prefix(jobs_client):
    resp = await jobs_client.get("/internal/saq/", headers=auth_header())
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    html = await resp.text()
    assert 'const root_path = "/internal/saq"' in html
    assert 'src="/internal/saq/static/app.js"' in html
    resp = await jobs_client.get("/internal/saq/queues/default", headers=auth_header())
    assert resp.status == 200 and await resp.text() == html  # the app renders every view itself
    assert (await jobs_client.get("/internal/saq/queues/default/jobs/gone", headers=auth_header())).status == 404

    # Static files: two of them exist only gzipped, served to clients that accept gzip.
    for name in ("pico.min.css", "snabbdom.js", "app.js"):
        resp = await jobs_client.get(
            f"/internal/saq/static/{name}", headers={**auth_header(), "Accept-Encoding": "gzip"}
        )
        assert resp.status == 200, name
        assert len(await resp.read()) > 1000, name
    app_js = await (await jobs_client.get("/internal/saq/static/app.js", headers=auth_header())).text()
    assert 'href: root_path + "/queues/" + job.queue' in app_js  # SAQ's unprefixed link, fixed

    resp = await jobs_client.get("/internal/saq/api/queues", headers=auth_header())
    assert resp.status == 200
    queues = (await resp.json())["queues"]
    assert [q["name"] for q in queues] == ["high", "default", "low"]


async def test_the_dashboard_api_shows_a_job_and_answers_404_for_unknown_ones(jobs_client):
    key = await post_job(jobs_client, "slow_job", seconds=0)
    resp = await jobs_client.get(f"/internal/saq/api/queues/default/jobs/{key}", headers=auth_header())
    assert resp.status == 200
    assert (await resp.json())["job"]["key"] == key
    resp = await jobs_client.get("/internal/saq/api/queues/default", headers=auth_header())
    assert [j["key"] for j in (await resp.json())["queue"]["jobs"]] == [key]
    for path in (
        "/internal/saq/api/queues/default/jobs/no-such-job",
        "/internal/saq/api/queues/nope",
        "/internal/saq/api/queues/nope/jobs/x",
    ):
        resp = await jobs_client.get(path, headers=auth_header())
        assert resp.status == 404, path
        assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_state_changing_requests_from_another_site_are_refused(jobs_client):
    key = await post_job(jobs_client, "slow_job", seconds=0)
    url = f"/internal/saq/api/queues/default/jobs/{key}/abort"
    resp = await jobs_client.post(url, headers={**auth_header(), "Origin": "https://evil.example"})
    assert resp.status == 403
    host = jobs_client.make_url("/").authority
    resp = await jobs_client.post(url, headers={**auth_header(), "Origin": f"http://{host}"})
    assert resp.status == 200


async def test_the_failed_jobs_page_with_nothing_failed(jobs_client):
    resp = await jobs_client.get("/internal/jobs/failed", headers=auth_header())
    assert resp.status == 200
    assert "No failed jobs recorded." in await resp.text()


def test_internal_password_command_creates_a_private_file_once(tmp_path):
    path = tmp_path / "var" / "internal_password"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", "internal-password", "--file", str(path)],
            cwd=PROJECT_ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(path)
    assert str(path) in first.stderr and "admin" in first.stderr
    password = path.read_text().strip()
    assert len(password) >= 24
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    second = run()
    assert second.returncode == 0 and path.read_text().strip() == password  # kept, not replaced


async def test_the_dashboard_answers_503_while_redis_is_down(private_redis, tmp_path, aiohttp_client):
    config = jobs_test_config(tmp_path, private_redis.url)
    client = await aiohttp_client(app_with_enqueue_route(config))
    assert (await client.get("/internal/saq/api/queues", headers=auth_header())).status == 200
    private_redis.stop()
    for path in ("/internal/saq/api/queues", "/internal/saq/api/queues/default/jobs/x", "/internal/jobs/failed"):
        resp = await client.get(path, headers=auth_header())
        assert resp.status == 503, path
        assert "Retry-After" in resp.headers
    assert (await client.get("/internal/saq/", headers=auth_header())).status == 200  # the page itself
