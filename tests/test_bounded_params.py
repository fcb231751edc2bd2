"""Path and query integers are bounded by their schema before int(): long digit strings are a
404 (ids) or a 400 (query parameters), never a 500."""

from __future__ import annotations

import pytest
from support import problem

DIGITS_5000 = "9" * 5000
DIGITS_4301 = "1" * 4301


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("digits", [DIGITS_5000, DIGITS_4301, "1" * 20, "9223372036854775808"])
async def test_an_id_of_any_length_is_404(client, method, digits):
    resp = await client.request(method, f"/api/v1/users/{digits}", json={"name": "x"})
    body = await problem(resp, 404)
    assert len(str(body)) < 2048


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("digits", [DIGITS_5000, DIGITS_4301, "-" + DIGITS_5000, "0" * 5000 + "1" * 30])
async def test_a_long_integer_query_parameter_is_400(client, name, digits):
    resp = await client.get(f"/api/v1/users?{name}={digits}")
    body = await problem(resp, 400)
    assert [e["parameter"] for e in body["errors"]] == [name]
    assert "digits" in body["errors"][0]["detail"]
    assert len(str(body)) < 2048


async def test_leading_zeros_do_not_count_as_digits(client):
    resp = await client.get("/api/v1/users?limit=" + "0" * 5000 + "5")
    assert resp.status == 200
    assert (await resp.json())["limit"] == 5


@pytest.mark.parametrize(
    "query",
    [
        f"kind=a&offset={'7' * 20}",  # minimum only: taken as 64-bit
        f"kind=a&ratio={DIGITS_5000}",  # a number, not an integer
        f"kind=a&ratio={DIGITS_5000}.5",
        f"kind=a&limit={DIGITS_5000}",
    ],
)
async def test_numbers_of_every_schema_are_bounded(sample_client, query):
    resp = await sample_client.get(f"/sample/items?{query}")
    body = await problem(resp, 400)
    assert len(str(body)) < 2048


async def test_a_long_path_integer_of_a_sample_route_is_404(sample_client):
    await problem(await sample_client.get(f"/sample/items/{DIGITS_5000}"), 404)
    await problem(await sample_client.get(f"/sample/items/-{DIGITS_5000}"), 404)


async def test_a_long_job_key_is_404(client):
    await problem(await client.get("/api/v1/jobs/" + "k" * 5000), 404)
