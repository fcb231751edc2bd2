"""Fixtures of the validation and OpenAPI tests: the app with a test-built sub-app mounted."""

from __future__ import annotations

import pytest
from validation_app import PREFIX, build_sample_app

from server.app import api_layers, create_app


@pytest.fixture
async def sample_client(redis_url, aiohttp_client, config, make_token):
    """The real app plus /sample (function handlers with every kind of schema, a class-based view),
    with a client sending a token: /sample has the API's layers, so its writes need one."""
    token = await make_token((), name="sample")
    app = create_app(config)
    app.add_subapp(PREFIX, build_sample_app(api_layers(config)))
    return await aiohttp_client(app, headers={"Authorization": f"Bearer {token}"})
