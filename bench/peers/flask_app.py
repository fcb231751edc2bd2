"""The seed's stack as a peer: Flask on gunicorn (one sync worker), doing foo's and bar's work.

    BENCH_DB=bench.db bench/.peers-venv/bin/gunicorn --chdir bench/peers flask_app:app

Runs from bench/.peers-venv only. bar is checked against the contract's schema with the same
validator ours uses (jsonschema-rs, compiled once), and answered in the contract's shapes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import jsonschema_rs
from flask import Flask, jsonify, request

COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"
BAR_SCHEMA = json.loads((Path(__file__).resolve().parent / "bar_schema.json").read_text())
BAR_VALIDATOR = jsonschema_rs.validator_for(BAR_SCHEMA)

app = Flask(__name__)
# One sync worker serves one request at a time: one connection is enough.
db = sqlite3.connect(os.environ["BENCH_DB"], check_same_thread=False)


@app.get("/healthz")
def get_healthz():
    return jsonify(status="ok")


@app.get("/api/v1/foo")
def get_foo():
    (count,) = db.execute(COUNT_USERS_SQL).fetchone()
    return jsonify(hello="world", count=count, version=1)


@app.post("/api/v1/bar")
def post_bar():
    body = request.get_json()  # 400 on a body that is not JSON, 415 on another Content-Type
    if not BAR_VALIDATOR.is_valid(body):
        errors = [
            {"pointer": "/" + "/".join(map(str, e.instance_path)), "detail": e.message}
            for e in BAR_VALIDATOR.iter_errors(body)
        ]
        return jsonify(success=False, message="the request body does not match the schema", errors=errors), 422
    colors = [item["color"] for item in body["world"]]
    return jsonify(hello="world", count=len(colors), data=colors)
