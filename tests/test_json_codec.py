"""JSON bodies in and out: orjson's speed, the standard library's answers wherever the two would differ."""

from __future__ import annotations

import json

import pytest

from server.json_codec import dumps, json_response, loads_body


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hello": "world", "world": [{"color": "red", "size": 1.5}, {"color": "blue"}]}',
        b'{"n": 123456789012345678901234567890, "m": -99999999999999999999}',  # beyond 64 bits: exact ints
        b'{"a": 1, "a": 2}',
        b'"\\ud83d\\ude00"',
        b"[1e308, -0, 0.1, 2.5e-3]",
        b'"\\ud800"',  # a lone surrogate: the standard library takes it (the validation refuses it later)
        b"1e400",
        b"[1844674407370955161, 18446744073709551615, 18446744073709551616]",  # 19 and 20 digits
        b"[-9223372036854775808, 123456789012345678]",  # 19 digits at the 64-bit floor, then 18
        b"[1234567890.123456789, 12345678901234567.8e2]",  # digits split by a point: runs under 19
    ],
)
def test_bodies_parse_as_the_standard_library_parses_them(raw):
    assert loads_body(raw) == json.loads(raw.decode())
    assert type(loads_body(raw)) is type(json.loads(raw.decode()))


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"NaN", ValueError),
        (b"[1, Infinity]", ValueError),
        (b'"\xed\xa0\x80"', UnicodeDecodeError),
        (b'"\xff"', UnicodeDecodeError),
        (b"{", ValueError),
        (b"9" * 5000, ValueError),  # the standard library's digit limit, as before
        (b"[" * 100_000 + b"]" * 100_000, RecursionError),
    ],
)
def test_bodies_that_are_not_json_raise_the_standard_librarys_errors(raw, error):
    with pytest.raises(error):
        loads_body(raw)


def test_answers_encode_compactly_and_fall_back_for_what_orjson_refuses():
    assert dumps({"hello": "world", "count": 3}) == b'{"hello":"world","count":3}'
    assert json.loads(dumps({"big": 2**70})) == {"big": 2**70}
    assert json.loads(dumps({1: "x"})) == {"1": "x"}
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_json_response_keeps_aiohttps_content_type():
    response = json_response({"a": 1}, status=201, headers={"Location": "/x"})
    assert (response.status, response.headers["Location"], response.body) == (201, "/x", b'{"a":1}')
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    plain = json_response({"a": 1})
    assert (plain.status, plain.content_type, plain.charset) == (200, "application/json", "utf-8")
    assert plain.headers["Content-Type"] == "application/json; charset=utf-8"
    plain.headers["X-Request-ID"] = "one"  # an answer's headers are its own
    assert "X-Request-ID" not in json_response({"a": 1}).headers
    problem = json_response({}, content_type="application/problem+json")
    assert problem.headers["Content-Type"] == "application/problem+json; charset=utf-8"
