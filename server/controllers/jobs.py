"""GET /jobs/{key}: a background job's state, looked up across the priority queues."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from saq.job import Job

from server.errors import NotFound
from server.json_codec import json_response
from server.keys import PATH_KEY
from server.routing.openapi import problem_response
from server.routing.stamps import describe, path_schema
from server.workers.enqueue import find_job

routes = web.RouteTableDef()

# SAQ's keys are uuid1 strings; callers may choose their own (cron jobs use "cron:<function>").
JOB_PATH_SCHEMA = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            # "no character outside the set" rather than ^...$: Python's $ also matches before a
            # trailing newline, ECMA-262's (and jsonschema-rs's) does not.
            "not": {"pattern": "[^A-Za-z0-9._:-]"},
        }
    },
}


def _timestamp(ms: int) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def error_summary(error: str | None) -> str | None:
    """The last line of a stored traceback ("ValueError: bad"), never the traceback itself."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def describe_job(job: Job) -> dict[str, Any]:
    """The public view of a job, as GET /api/v1/jobs/{key} answers it."""
    return {
        "key": job.key,
        "function": job.function,
        "status": job.status.value,
        "result": job.result,
        "error": error_summary(job.error),
        "attempts": job.attempts,
        "queued": _timestamp(job.queued),
        "started": _timestamp(job.started),
        "completed": _timestamp(job.completed),
    }


@routes.get("/jobs/{key:[^{}/]{1,128}}", name="job-detail")
@describe(responses={503: problem_response(503)})
@path_schema(JOB_PATH_SCHEMA)
async def get_job(request: web.Request) -> web.Response:
    key = request[PATH_KEY]["key"]
    job = await find_job(request.config_dict, key)
    if job is None:
        raise NotFound(f"no job with key {key!r} (unknown, or finished long enough ago to be forgotten)")
    return json_response(describe_job(job))
