"""JSON in and out of HTTP: orjson where it gives the standard library's answer, the standard library where not.

Measured (docs/decisions.md, "orjson for request and response bodies"): orjson encodes foo's
answer in 0.2 us against 2.5-3.9 us for json.dumps plus encoding the text, and parses bar's body
in 1.1 us against 3.2 us; a whole request costs 40-50 us. Both paths give the same values:

- answers: orjson refuses what JSON has no room for (integers beyond 64 bits, non-string keys);
  those answers are encoded by the standard library, as before;
- bodies: a body orjson refuses is parsed again by the standard library, whose answer (the
  value, or the error a client reads) stays the one it always was; so is a body holding a run
  of 19 or more digits, which orjson would turn into a float where the standard library keeps
  every digit of an integer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json"
# A number orjson may not keep exact: beyond 64 bits it parses integers as floats. Found by
# mapping every digit to "0" and anything else to a space, then looking for 19 zeros in a row:
# 0.4 us on bar's body against 1.1 us for searching it with re.compile(rb"[0-9]{19}").
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19
# The common answer's headers, built once (passing content_type and charset builds them per answer).
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def dumps(data: Any) -> bytes:
    """`data` as compact UTF-8 JSON; raises TypeError/ValueError for what JSON cannot hold."""
    try:
        return orjson.dumps(data)
    except TypeError:  # an integer beyond 64 bits, a non-string key: the standard library's answer
        return json.dumps(data, separators=(",", ":")).encode()


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> web.Response:
    """aiohttp's json_response, encoded by `dumps` (the same Content-Type, charset utf-8)."""
    if headers is None and content_type == JSON_CONTENT_TYPE:
        return web.Response(body=dumps(data), status=status, headers=_JSON_HEADERS)
    return web.Response(body=dumps(data), status=status, headers=headers, content_type=content_type, charset="utf-8")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them by default.
    raise ValueError(f"{name} is not a JSON value")


# Built once: json.loads with any keyword argument builds a new decoder on every call.
_STDLIB_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_body(raw: bytes) -> Any:
    """The document of a request body: strict UTF-8, no NaN or Infinity.

    Raises ValueError (UnicodeDecodeError included) for a body that is not JSON, RecursionError
    for one nested too deeply: the standard library's errors, whichever parser ran.
    """
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard library says why, as it always did
    # Strict UTF-8 (RFC 8259): json.loads(bytes) would let encoded surrogates through.
    return _STDLIB_DECODER.decode(raw.decode("utf-8"))
