"""Cat Facts client: one fact from the configured upstream, on the app's shared ClientSession."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import aiohttp

from server.config import CatFactsConfig
from server.errors import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

# A fact is a sentence; anything much larger is not the API we expect.
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class CatFact:
    fact: str
    length: int


def parse_fact(body: bytes) -> CatFact:
    """The fact in an upstream answer `{"fact": ..., "length": ...}`; raises UpstreamError."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise UpstreamError("the cat facts service answered with malformed JSON") from None
    fact = document.get("fact") if isinstance(document, dict) else None
    if not isinstance(fact, str) or not fact.strip():
        raise UpstreamError("the cat facts service answered without a fact")
    length = document.get("length")
    return CatFact(fact, length if isinstance(length, int) and not isinstance(length, bool) else len(fact))


async def _get_once(session: aiohttp.ClientSession, config: CatFactsConfig) -> CatFact:
    async with session.get(config.url, headers={"Accept": "application/json"}) as response:
        if response.status != 200:
            raise UpstreamError(f"the cat facts service answered {response.status}")
        body = bytearray()
        async for chunk in response.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise UpstreamError("the cat facts service answered with an oversized body")
    return parse_fact(bytes(body))


async def fetch_cat_fact(session: aiohttp.ClientSession, config: CatFactsConfig) -> CatFact:
    """One cat fact, the whole call (retry included) bounded by `config.timeout`.

    A connection error is retried once (a stale keep-alive connection, a blip). Raises
    UpstreamTimeout when the time runs out, UpstreamError for an unreachable upstream, a non-200
    answer, malformed JSON or a missing fact.
    """
    try:
        async with asyncio.timeout(config.timeout):
            try:
                return await _get_once(session, config)
            except aiohttp.ClientConnectionError as exc:
                if isinstance(exc, asyncio.TimeoutError):  # aiohttp's timeouts are connection errors too
                    raise
                log.info("cat facts connection failed (%s: %s); retrying once", type(exc).__name__, exc)
            return await _get_once(session, config)
    except TimeoutError:
        raise UpstreamTimeout(f"the cat facts service did not answer within {config.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"the cat facts service is unreachable: {type(exc).__name__}") from None
