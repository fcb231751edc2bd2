"""What a bearer token grants, answered from a bounded in-process cache in front of the database.

A request carrying a token costs a SHA-256 and a dict lookup: the database is asked only for a
token this process has not seen within `auth.cache_ttl` seconds. Unknown tokens are remembered
too (apart, so a flood of made-up tokens cannot push out the real ones). Revocation reaches
every process at once: `token revoke` publishes the token's id on REVOCATION_CHANNEL and each
process drops it from its cache; when that message is lost (Redis down), the TTL bounds how
long a revoked token still works. A process that loses its subscription forgets every token
when it subscribes again, since it may have missed revocations meanwhile.

A token's `last_used_at` is written at most once per `auth.last_used_interval` per process, by
a task of its own (one transaction an interval for every token used), never by the request.
Measured: docs/decisions.md, "API tokens".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from server.auth.limiter import REDIS_ERRORS
from server.config import AuthConfig
from server.models.api_token import ApiToken, find_token_by_hash, hash_token, touch_tokens, well_formed
from server.models.database import Database
from server.models.values import utc_timestamp

log = logging.getLogger(__name__)

REVOCATION_CHANNEL = "auth:revoked"


class InvalidToken(Exception):
    """The token is unknown, revoked or expired; the message says which, for the logs."""


class MalformedToken(InvalidToken):
    """Not a token this server made: a typo, or made up (its checksum does not match)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: its id (the client's identity) and scopes."""

    token_id: int
    name: str
    scopes: frozenset[str]
    # Epoch seconds after which it is refused, or None.
    expires_at: float | None

    @classmethod
    def of(cls, row: ApiToken) -> Grant:
        expires = None if row.expires_at is None else datetime.fromisoformat(row.expires_at).timestamp()
        return cls(row.id, row.name, frozenset(row.scopes), expires)


# A cached answer: the grant (None: no usable token has this hash) and until when to trust it.
_Entry = tuple[Grant | None, float]


class TokenGrants:
    """The cache of token hash -> Grant for one process, over the database."""

    def __init__(self, db: Database, config: AuthConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._ttl = config.cache_ttl
        self._size = config.cache_size
        self._touch_interval = config.last_used_interval
        self._clock = clock
        self._known: dict[str, _Entry] = {}
        self._unknown: dict[str, _Entry] = {}
        # Bumped by every forget(): a lookup that started before one does not cache its answer.
        self._generation = 0
        self._last_touch: dict[int, float] = {}
        self._pending_touch: dict[int, str] = {}
        self._touch_task: asyncio.Task[None] | None = None
        self.lookups = 0  # database lookups, for tests and curiosity

    def cached(self, token: str) -> Grant | None:
        """The grant of a token this process knows (no await: the hot path), None when it must be
        looked up with `resolve`. Raises InvalidToken when it is known to be unknown, revoked or
        expired. Only checksummed tokens are ever cached, so a hit skips the checksum."""
        now = self._clock()
        entry = self._known.get(hash_token(token))
        if entry is None:
            entry = self._unknown.get(hash_token(token))
        if entry is None or entry[1] <= now:
            return None
        return self._granted(entry, now)

    async def resolve(self, token: str) -> Grant:
        """The grant of a token of our shape (`has_token_shape`), from the cache or the database;
        raises MalformedToken when its checksum is wrong, InvalidToken when it is unknown, revoked
        or expired."""
        grant = self.cached(token)
        if grant is not None:
            return grant
        if not well_formed(token):
            raise MalformedToken("the checksum does not match")
        now = self._clock()
        return self._granted(await self._load(hash_token(token), now), now)

    def _granted(self, entry: _Entry, now: float) -> Grant:
        grant = entry[0]
        if grant is None:
            raise InvalidToken("unknown or revoked token")
        if grant.expires_at is not None and grant.expires_at <= time.time():
            raise InvalidToken(f"token {grant.token_id} expired")
        if now - self._last_touch.get(grant.token_id, -1e18) >= self._touch_interval:
            self._touch(grant.token_id, now)
        return grant

    async def _load(self, digest: str, now: float) -> _Entry:
        generation = self._generation
        self.lookups += 1
        token = await find_token_by_hash(self._db, digest)
        grant = None if token is None or token.revoked_at is not None else Grant.of(token)
        entry: _Entry = (grant, now + self._ttl)
        if generation == self._generation and self._ttl > 0:
            table = self._known if grant is not None else self._unknown
            table.pop(digest, None)
            if len(table) >= self._size:
                del table[next(iter(table))]  # the oldest entry: dicts keep insertion order
            table[digest] = entry
        return entry

    def forget(self, token_id: int | None = None) -> None:
        """Drop one token (None: every token) from the cache: the next use asks the database."""
        self._generation += 1
        if token_id is None:
            self._known.clear()
            self._unknown.clear()
            return
        for digest in [d for d, (grant, _) in self._known.items() if grant and grant.token_id == token_id]:
            del self._known[digest]

    def _touch(self, token_id: int, now: float) -> None:
        if len(self._last_touch) >= self._size:
            self._last_touch.clear()
        self._last_touch[token_id] = now
        self._pending_touch[token_id] = utc_timestamp()

    def start(self) -> None:
        """Start writing the last-used times, one transaction per `auth.last_used_interval`."""
        self._touch_task = asyncio.get_running_loop().create_task(self._write_touches_every(), name="token-last-used")

    async def _write_touches_every(self) -> None:
        # Apart from the requests, and at most once an interval: a background write never queues
        # behind (or ahead of) the requests' writes more than once a minute.
        period = max(self._touch_interval, 0.5)
        while True:
            await asyncio.sleep(period)
            await self._write_touches()

    async def _write_touches(self) -> None:
        if not self._pending_touch:
            return
        used, self._pending_touch = self._pending_touch, {}
        older_than = utc_timestamp(datetime.now(UTC) - timedelta(seconds=self._touch_interval))
        try:
            await touch_tokens(self._db, used, older_than)
        except Exception as exc:  # a busy or read-only database: the next uses are recorded later
            log.warning("could not record when tokens were last used: %r", exc)

    async def close(self) -> None:
        """Stop, writing what is pending if the database takes it within 2 s (call before it closes)."""
        if self._touch_task is not None:
            self._touch_task.cancel()
            await asyncio.gather(self._touch_task, return_exceptions=True)
        try:
            await asyncio.wait_for(self._write_touches(), 2.0)
        except TimeoutError:
            log.warning("last-used times of %d tokens not written at shutdown", len(self._pending_touch))


async def publish_revocation(redis: Redis, token_id: int) -> int:
    """Tell every running process to forget `token_id`; how many listened. Raises a Redis error."""
    return int(await redis.publish(REVOCATION_CHANNEL, str(token_id)))


class RevocationListener:
    """Subscribes to REVOCATION_CHANNEL and calls `forget` for each revoked token id, until stopped.

    Redis going away is survived: it subscribes again with backoff, and forgets everything when it
    does (`forget(None)`), since revocations may have been missed meanwhile.
    """

    def __init__(self, redis: Redis, forget: Callable[[int | None], None], *, max_backoff: float = 5.0) -> None:
        self._redis = redis
        self._forget = forget
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="token-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(REVOCATION_CHANNEL)
                if not first:
                    log.info("listening for token revocations again; every cached token is checked anew")
                    self._forget(None)
                first = False
                backoff = 0.1
                self.subscribed.set()
                await self._listen(pubsub)
            except REDIS_ERRORS as exc:
                if self.subscribed.is_set():
                    log.warning(
                        "lost the token revocation channel (%r); tokens are rechecked within auth.cache_ttl", exc
                    )
                self.subscribed.clear()
                first = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                await _close(pubsub)

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            # A timeout, not a blocking read: get_message pings on the client's health-check
            # interval, so a silently dead connection is noticed.
            message = await pubsub.get_message(timeout=5.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                token_id = int(message["data"])
            except (TypeError, ValueError):
                log.warning("ignored a malformed message on %s", REVOCATION_CHANNEL)
                continue
            self._forget(token_id)


async def _close(pubsub: PubSub) -> None:
    try:
        await asyncio.wait_for(pubsub.aclose(), 2.0)  # type: ignore[no-untyped-call]
    except Exception:  # closing a broken connection may fail again: nothing is left to free
        pass
