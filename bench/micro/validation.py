"""Cost per call of validating the bar body: jsonschema per call, precompiled, and our fast path.

Run: .venv/bin/python -m bench.micro.validation [--repeat N]
Prints the median over N repeats of the time per call, in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from server.controllers.bar import POST_BAR_SCHEMA, post_bar
from server.routing.meta import schemas_of as request_schemas

VALID = {"hello": "there", "world": [{"color": "red", "size": 1.5}, {"color": "blue"}]}
INVALID = {"hello": 1, "world": [{"size": "big"}, {"color": "blue"}]}


def per_call_us(fn: Callable[[], Any], repeat: int, target_s: float = 0.05) -> float:
    """Median time of one call, in microseconds; each repeat runs for about `target_s`."""
    timer = timeit.Timer(fn)
    number, elapsed = 1, 0.0
    while elapsed < target_s / 5:
        number *= 2
        elapsed = timer.timeit(number)
    number = max(1, int(number * target_s / elapsed))
    return statistics.median(t / number * 1e6 for t in timer.repeat(repeat=repeat, number=number))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    compiled = request_schemas(post_bar)["body"]  # the very object the middleware uses
    assert compiled.schema is POST_BAR_SCHEMA
    reference = Draft202012Validator(POST_BAR_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def validate_per_call() -> None:
        jsonschema.validate(VALID, POST_BAR_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

    rows = [
        ("jsonschema.validate() per call (the old code)", "valid", validate_per_call),
        ("Draft202012Validator precompiled, .validate", "valid", lambda: reference.validate(VALID)),
        ("Draft202012Validator precompiled, .is_valid", "valid", lambda: reference.is_valid(VALID)),
        ("ours: CompiledSchema.is_valid (jsonschema_rs)", "valid", lambda: compiled.is_valid(VALID)),
        ("ours: CompiledSchema.errors (a valid body: fast path)", "valid", lambda: compiled.errors(VALID)),
        ("ours: CompiledSchema.is_valid (jsonschema_rs)", "invalid", lambda: compiled.is_valid(INVALID)),
        ("ours: CompiledSchema.errors (full list)", "invalid", lambda: compiled.errors(INVALID)),
    ]
    assert compiled.is_valid(VALID) and reference.is_valid(VALID)
    assert not compiled.is_valid(INVALID) and len(compiled.errors(INVALID)) == 3

    print(f"bar schema, two-item body; median of {args.repeat} repeats; Python {sys.version.split()[0]}")
    print(f"{'validator':<54} {'body':<8} {'us/call':>10}")
    print("-" * 74)
    for name, body, fn in rows:
        print(f"{name:<54} {body:<8} {per_call_us(fn, args.repeat):>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
