"""The bench harness's logic without load: wrk parsing, statistics, targets, reports, the baseline app."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
import redis

from bench import harness, report
from bench.baseline_app import create_baseline_app
from bench.harness import Spread, WrkParseError
from bench.jobs import drain_rate
from bench.options import ROUTES, parse_args
from bench.stage import seed_users

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18081/healthz
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.49ms    1.64ms  46.89ms   92.03%
    Req/Sec    13.26k     1.61k   16.92k    75.00%
  Latency Distribution
     50%  812.00us
     75%    2.67ms
     90%    3.63ms
     99%    1.02s
  52855 requests in 2.00s, 8.82MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 10
Requests/sec:  26397.60
Transfer/sec:      4.41MB
"""


def test_wrk_output_is_parsed_into_figures():
    result = harness.parse_wrk(WRK_OUTPUT)
    assert result.requests_per_s == 26397.60
    assert result.p50_ms == pytest.approx(0.812)
    assert result.p99_ms == pytest.approx(1020.0)
    assert result.requests == 52855
    assert result.seconds == pytest.approx(2.0)
    assert result.non_2xx == 10
    assert result.socket_errors == 7
    assert result.error_share == pytest.approx(17 / 52855)


def test_wrk_output_without_errors_counts_none():
    clean = "\n".join(line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line)
    result = harness.parse_wrk(clean)
    assert (result.non_2xx, result.socket_errors) == (0, 0)


@pytest.mark.parametrize(
    "broken", ["", "unable to connect to 127.0.0.1:1 Connection refused", WRK_OUTPUT.replace("Requests/sec", "Req/s")]
)
def test_wrk_output_without_figures_is_an_error(broken):
    with pytest.raises(WrkParseError):
        harness.parse_wrk(broken)


@pytest.mark.parametrize(("text", "ms"), [("950.00us", 0.95), ("1.5ms", 1.5), ("2.00s", 2000.0), ("1.00m", 60000.0)])
def test_wrk_durations_become_milliseconds(text, ms):
    assert harness.duration_ms(text) == pytest.approx(ms)


def test_spread_is_median_min_max():
    assert harness.spread([3, 1, 2]) == Spread(2, 1, 3, 3)
    assert harness.spread([4, 1, 2, 3]).median == 2.5
    with pytest.raises(ValueError):
        harness.spread([])


def test_ratios_pair_runs_made_back_to_back():
    assert harness.pairwise_ratios([90, 80], [100, 100]) == [0.9, 0.8]
    with pytest.raises(ValueError):
        harness.pairwise_ratios([1, 2], [1])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile([7.0], 99) == 7.0


def test_http_targets_are_judged_on_medians():
    assert harness.http_targets(Spread(0.85, 0.8, 0.9, 3), Spread(9.9, 9, 12, 3)) == {"ratio": "met", "p99": "met"}
    assert harness.http_targets(Spread(0.84, 0.8, 0.9, 3), Spread(10.0, 9, 12, 3)) == {
        "ratio": "missed",
        "p99": "missed",
    }
    assert harness.http_targets(None, None) == {"ratio": "n/a", "p99": "n/a"}


def test_spread_formatting_shows_the_range_only_when_there_is_one():
    assert report.fmt_spread({"median": 12345.4, "min": 12001, "max": 12500, "n": 3}) == "12,345 (12,001–12,500)"
    assert report.fmt_spread({"median": 1.234, "min": 1.234, "max": 1.234, "n": 1}, 2) == "1.23"
    assert report.fmt_spread(None) == "–"


def sample_results() -> dict:
    def side(rps: float, p99: float) -> dict:
        return {
            "requests_per_s": Spread(rps, rps - 100, rps + 100, 3).as_dict(),
            "p50_ms": Spread(2.0, 1.9, 2.1, 3).as_dict(),
            "p99_ms": Spread(p99, p99 - 1, p99 + 1, 3).as_dict(),
        }

    return {
        "meta": {"mode": "full", "repetitions": 3, "duration_s": 4},
        "targets": dict(harness.TARGETS),
        "warnings": ["the machine was busy"],
        "http": [
            {
                "name": "healthz",
                "method": "GET",
                "path": "/healthz",
                "status": "ok",
                "ours": side(9000, 6.0),
                "baseline": side(10000, 5.0),
                "ratio": Spread(0.9, 0.88, 0.92, 3).as_dict(),
                "targets": {"ratio": "met", "p99": "met"},
                "notes": [],
            },
            {
                "name": "foo",
                "method": "GET",
                "path": "/api/v1/foo",
                "status": "ok",
                "ours": side(4000, 30.0),
                "baseline": side(16000, 9.0),
                "ratio": Spread(0.25, 0.24, 0.3, 3).as_dict(),
                "targets": {"ratio": "missed", "p99": "missed"},
                "notes": ["a note"],
            },
            {
                "name": "bar",
                "method": "POST",
                "path": "/api/v1/bar",
                "status": "skipped",
                "reason": "skipped: route not available",
            },
        ],
        "jobs": {
            "status": "ok",
            "ours": {},
            "ours_reason": "skipped: no worker",
            "ratio": None,
            "target": "skipped",
            "raw": {"jobs_per_s": Spread(1000, 900, 1100, 3).as_dict()},
            "notes": ["raw alone"],
        },
        "memory": {"status": "ok", "idle_mb": 50.0, "after_mb": 55.5, "target": "met"},
        "profile": {
            "status": "ok",
            "route": "GET /api/v1/foo",
            "tool": "py-spy",
            "why": "slowest",
            "files": ["profile-foo.svg"],
            "summary": {"packages": [{"frame": "aiohttp", "samples": 5, "share": 0.5}]},
        },
    }


def test_markdown_report_has_a_row_per_figure_and_the_verdicts():
    results = sample_results()
    results["verdicts"] = report.collect_verdicts(results)
    text = report.render_markdown(results)
    assert (
        "| `GET /healthz` | ours | 9,000 (8,900–9,100) | 2.00 (1.90–2.10) | 6.00 (5.00–7.00) "
        "| 0.90 (0.88–0.92) | met | met |" in text
    )
    assert "| | baseline | 10,000 (9,900–10,100) |" in text
    assert "| `POST /api/v1/bar` | – | skipped: route not available |" in text
    assert "| `GET /api/v1/foo` | ours | 4,000 (3,900–4,100) |" in text and "**missed**" in text
    assert "- `GET /api/v1/foo`: a note" in text
    assert "| ours | skipped: no worker |" in text
    assert "| raw | 1,000 (900–1,100) |" in text
    assert "| after the HTTP runs | 55.5 | met |" in text
    assert "| `aiohttp` | 50.0 % |" in text
    assert "> **Warning:** the machine was busy" in text
    assert "| POST /api/v1/bar: >= 0.85 of baseline, p99 < 10 ms | skipped |" in text
    assert "| jobs: >= 0.90 of raw SAQ | skipped |" in text


def test_verdicts_list_every_target():
    verdicts = report.collect_verdicts(sample_results())
    assert verdicts["GET /healthz: >= 0.85 of baseline"] == "met"
    assert verdicts["GET /api/v1/foo: p99 < 10 ms"] == "missed"
    assert verdicts["web process < 80 MB RSS after the runs"] == "met"


def test_results_are_written_as_markdown_and_json(tmp_path):
    md, js = report.write_results(sample_results(), tmp_path / "out")
    assert md.read_text().startswith("# Benchmark results")
    assert json.loads(js.read_text())["http"][0]["ratio"]["median"] == 0.9


def test_collapsed_stacks_are_summarized_by_frame_and_package():
    raw = (
        "<module> (/p/server/__main__.py:5);run_app (/v/lib/python3.11/site-packages/aiohttp/web.py:1) 6\n"
        "<module> (/p/server/__main__.py:5);get_foo (/p/server/controllers/foo.py:9);"
        "dumps (/usr/lib/python3.11/json/__init__.py:3) 3\n"
        "worker (/v/lib/python3.11/site-packages/aiosqlite/core.py:66) 1\n"
        "garbage line\n"
    )
    summary = harness.summarize_collapsed(raw)
    assert summary["samples"] == 10
    assert summary["self"][0] == {"frame": "run_app (aiohttp/web.py)", "samples": 6, "share": 0.6}
    assert {p["frame"]: p["samples"] for p in summary["packages"]} == {"aiohttp": 6, "json": 3, "aiosqlite": 1}
    own = {p["frame"]: p["samples"] for p in summary["own_inclusive"]}
    assert own == {"<module> (server/__main__.py)": 9, "get_foo (server/controllers/foo.py)": 3}


def test_rss_is_read_from_proc_status():
    assert harness.rss_mb_from_status("Name:\tpython\nVmRSS:\t  51200 kB\n") == 50.0
    with pytest.raises(ValueError):
        harness.rss_mb_from_status("Name:\tpython\n")


def test_the_post_body_is_the_contracts_bar_body():
    body = json.loads(harness.lua_body((BENCH_DIR / "post_bar.lua").read_text()))
    assert isinstance(body["hello"], str)
    assert body["world"] and all(isinstance(item["color"], str) for item in body["world"])


def test_drain_rate_leaves_out_the_warm_up():
    # 100 jobs, one started every 10 ms, each taking 5 ms: the last 90 from 1100 ms to 1995 ms.
    jobs = [(1000 + i * 10, 1005 + i * 10) for i in range(100)]
    assert drain_rate(jobs) == pytest.approx(90 / 0.895)
    with pytest.raises(RuntimeError):
        drain_rate([(1, 2)])


def test_options_quick_and_only():
    quick = parse_args(["--quick", "--only", "foo,jobs", "--only", "bar"])
    assert (quick.repetitions, quick.duration, quick.jobs) == (1, 2, 500)
    assert quick.only == ("foo", "jobs", "bar")
    assert [r.name for r in quick.http_routes] == ["foo", "bar"]
    full = parse_args([])
    assert full.repetitions >= 3 and set(full.only) == {r.name for r in ROUTES} | {"jobs"}
    with pytest.raises(SystemExit):
        parse_args(["--only", "nope"])


def test_seeding_fills_required_columns(tmp_path):
    db_path = tmp_path / "bench.db"
    with sqlite3.connect(db_path) as db:
        db.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, version INTEGER NOT NULL, note TEXT DEFAULT 'x')"
        )
    assert seed_users(db_path, 25) == 25
    assert seed_users(db_path, 10) == 25  # never shrinks, never duplicates
    with sqlite3.connect(db_path) as db:
        name, note = db.execute("SELECT name, note FROM users WHERE id = 1").fetchone()
    assert (name, note) == ("bench-user-00000", "x")


def users_table(tmp_path: Path) -> Path:
    """A SQLite file with the users table the baseline reads, empty."""
    db_path = tmp_path / "bench.db"
    with sqlite3.connect(db_path) as db:
        db.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL)"
        )
    return db_path


async def test_baseline_app_answers_like_the_contract(aiohttp_client, redis_url, tmp_path):
    db_path = users_table(tmp_path)
    seed_users(db_path, 30)
    client = await aiohttp_client(create_baseline_app(str(db_path), redis_url, "bench:baz"))
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    assert await (await client.get("/api/v1/foo")).json() == {"hello": "world", "count": 30, "version": 1}
    body = harness.lua_body((BENCH_DIR / "post_bar.lua").read_text())
    resp = await client.post("/api/v1/bar", data=body, headers={"Content-Type": "application/json"})
    assert await resp.json() == {"hello": "world", "count": 2, "data": ["red", "blue"]}
    users = await (await client.get("/api/v1/users?limit=20")).json()
    assert (len(users["items"]), users["total"], users["limit"], users["offset"]) == (20, 30, 20, 0)
    assert set(users["items"][0]) == {"id", "name", "created_at", "updated_at"}
    assert (await client.get("/api/v1/baz")).status == 503  # not primed yet
    primed = {"fact": "Cats purr.", "job": {"key": "k", "url": "/api/v1/jobs/k"}}
    sync = redis.Redis.from_url(redis_url)
    try:
        sync.set("bench:baz", json.dumps(primed))
    finally:
        sync.close()
    assert await (await client.get("/api/v1/baz")).json() == primed


async def test_the_contract_floor_does_what_every_request_of_ours_does(aiohttp_client, redis_url, tmp_path):
    db_path = users_table(tmp_path)
    client = await aiohttp_client(create_baseline_app(str(db_path), redis_url, "bench:baz", floor=True))
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-1"})
    assert await resp.json() == {"status": "ok"}
    assert (resp.headers["X-Request-ID"], resp.headers["X-Content-Type-Options"]) == ("abc-1", "nosniff")
    made = (await client.get("/healthz", headers={"X-Request-ID": "not valid!"})).headers["X-Request-ID"]
    assert made != "not valid!" and re.fullmatch(r"[0-9a-f]{16}-[0-9]+", made)
    missing = await client.get("/nowhere")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    assert (await missing.json())["request_id"] == missing.headers["X-Request-ID"]
    wrong_host = await client.get("/healthz", headers={"Host": "evil.example"})
    assert wrong_host.status == 400 and wrong_host.content_type == "application/problem+json"


def test_the_floor_is_reported_beside_ours_and_the_bare_app():
    results = sample_results()
    healthz = results["http"][0]
    healthz["floor_ratio"] = Spread(0.8, 0.75, 0.85, 3).as_dict()
    healthz["ours_floor_ratio"] = Spread(0.95, 0.9, 1.0, 3).as_dict()
    healthz["peers"] = {"floor": {"requests_per_s": Spread(8000, 7900, 8100, 3).as_dict()}}
    text = report.render_markdown(results)
    assert "| `GET /healthz` | 0.80 (0.75–0.85) | 0.95 (0.90–1.00) | 0.90 (0.88–0.92) |" in text
    assert "| ours (aiohttp, this project) | bare aiohttp | bare aiohttp + the contract's per-request minimum |" in text


def test_floor_ratios_pair_the_runs():
    from bench.http_runs import floor_ratios

    runs = {
        kind: [{"requests_per_s": rps} for rps in figures]
        for kind, figures in (("ours", [80, 90, 70]), ("baseline", [100, 100, 100]), ("floor", [90, 100, 80]))
    }
    got = floor_ratios(runs)
    assert got["floor_ratio"]["median"] == 0.9  # 0.9, 1.0, 0.8
    assert got["ours_floor_ratio"]["median"] == pytest.approx(80 / 90)  # 80/90, 90/100, 70/80
    assert floor_ratios({"ours": runs["ours"], "baseline": runs["baseline"]}) == {}


async def test_the_postgresql_baseline_answers_as_our_server_does(
    aiohttp_client, redis_url, tmp_path, postgres_databases
):
    from bench.baseline_pg_app import create_baseline_app as create_pg_baseline_app
    from bench.databases import seed_postgres
    from server.app import create_app
    from testing.config import make_test_config

    url = postgres_databases()
    assert await seed_postgres(url, 30) == 30
    ours = await aiohttp_client(
        create_app(
            make_test_config(
                database=tmp_path / "x.db", redis_url=redis_url, database_url=url, cache={"enabled": False}
            )
        )
    )
    baseline = await aiohttp_client(create_pg_baseline_app(url, 1, 2))
    for path in ("/api/v1/foo", "/api/v1/users?limit=20", "/api/v1/users?limit=5&offset=28"):
        answers = [await (await client.get(path)).json() for client in (ours, baseline)]
        assert answers[0] == answers[1], path


def test_cpu_per_request_and_the_peers_are_reported_beside_requests_per_second():
    results = sample_results()
    healthz = results["http"][0]
    healthz["ours"]["cpu_us_per_request"] = Spread(40.0, 39.0, 41.0, 3).as_dict()
    healthz["baseline"]["cpu_us_per_request"] = Spread(34.0, 33.0, 35.0, 3).as_dict()
    healthz["cpu_ratio"] = Spread(0.85, 0.8, 0.9, 3).as_dict()
    healthz["peers"] = {
        "flask": {
            "requests_per_s": Spread(900, 800, 1000, 3).as_dict(),
            "cpu_us_per_request": Spread(700, 650, 750, 3).as_dict(),
        }
    }
    text = report.render_markdown(results)
    assert "| `GET /healthz` | 40.0 (39.0–41.0) | 34.0 (33.0–35.0) | 0.85 (0.80–0.90) |" in text
    assert "| route | ours (aiohttp, this project) | bare aiohttp | Flask + gunicorn (sync) |" in text
    assert "| `GET /healthz` | 9,000 (8,900–9,100) | 10,000 (9,900–10,100) | 900 (800–1,000) |" in text


def test_cpu_seconds_of_a_process_tree():
    from bench.processes import cpu_seconds

    assert cpu_seconds(os.getpid()) > 0
    assert cpu_seconds(2**22 + 12345) == 0.0  # gone: nothing counted
