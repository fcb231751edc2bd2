"""Fixtures for API tokens: made through the same code as `python -m server token create`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import pytest

from server.app import create_app
from server.tokens import create_token

MakeToken = Callable[..., Awaitable[str]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make_token(config) -> MakeToken:
    """`await make_token(scopes, name=..., expires_in=...)`: a new token in the test's database."""

    async def make(
        scopes: Sequence[str] = ("users:write",),
        *,
        name: str = "test",
        expires_in: timedelta | None = None,
        config=config,
    ) -> str:
        _, secret = await create_token(config, name=name, scopes=scopes, expires_in=expires_in)
        return secret

    return make


@pytest.fixture
async def writer_token(make_token) -> str:
    """A token with users:write."""
    return await make_token(("users:write",), name="writer")


@pytest.fixture
async def writer_client(redis_url, aiohttp_client, config, writer_token):
    """The app, with a client that sends a users:write token on every request."""
    return await aiohttp_client(create_app(config), headers=bearer(writer_token))
