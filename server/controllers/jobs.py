"""GET /jobs/{key}: a background job's state, looked up across the priority queues."""

from __future__ import annotations

from aiohttp import web
from saq.job import Job

from server.helpers.errors import NotFound
from server.keys import PATH_KEY
from server.middlewares.validation import path_schema
from server.workers.enqueue import find_job
from server.workers.queues import describe_job

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


def job_link(request: web.Request, job: Job) -> dict[str, str]:
    """`{"key", "url"}` of a job, the URL under the API version serving this request."""
    url = request.app.router["job-detail"].url_for(key=job.key)
    return {"key": job.key, "url": str(url)}


@routes.get("/jobs/{key:[^{}/]{1,128}}", name="job-detail")
@path_schema(JOB_PATH_SCHEMA)
async def get_job(request: web.Request) -> web.Response:
    key = request[PATH_KEY]["key"]
    job = await find_job(request.config_dict, key)
    if job is None:
        raise NotFound(f"no job with key {key!r} (unknown, or finished long enough ago to be forgotten)")
    return web.json_response(describe_job(job))
