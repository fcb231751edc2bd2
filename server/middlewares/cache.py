"""Response caching in Redis: the layer serving the routes stamped `@cached(...)`, namespace invalidation.

A stamped GET/HEAD route is answered from Redis when a valid entry exists (`X-Cache: HIT`, one
round trip), else from its handler (`MISS`), whose 200 answer is stored for the route's TTL.
Concurrent misses of one key are collapsed: one request computes under a short Redis lock, the
others poll for its entry and compute themselves only after `cache.wait_timeout`. When Redis
fails, the handler answers (`BYPASS`); the cache never turns an answer into an error.

What a client cannot do through it: grow the key space with parameters the route does not
declare (a 400), make every request recompute (`no-cache` is honoured within a per-client
budget), or read an entry from before a write that has answered (every entry key carries the
namespace's generation, read from the database; see server/cache/store.py). What
Redis cannot do through it: choose what a hit answers beyond the body (status 200, the route's
declared content type, only its declared headers, each checked).

The layer sits outside `validation_layer`, so a hit skips validation: only answers to requests
that passed it are stored, and the key covers every declared query parameter unless the route
names a subset (`vary_query=(...)`), which it should only do when its handler ignores the others.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from aiohttp import hdrs, web
from redis.asyncio import Redis

from server.cache.policy import CachePolicy
from server.cache.store import REDIS_ERRORS, Entry, Generations, ResponseCache, bump_generation, invalidate
from server.config import CacheConfig
from server.errors import InvalidInput
from server.keys import CACHE_KEY, DB_KEY, GENERATIONS_KEY
from server.metrics import process_metrics
from server.middlewares.bearer import client_grant
from server.routing.chain import AppResource, Handler, Route
from server.routing.meta import RouteMeta
from server.routing.versions import api_version_of

log = logging.getLogger(__name__)

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
_CACHEABLE_ROUTES = CACHEABLE_METHODS | {hdrs.METH_ANY}
# A header value replayed from Redis: visible ASCII and tabs only (no CR/LF, no controls).
_SAFE_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]{0,1024}")
# First poll of a waiting miss, and the cap of its doubling.
_POLL_FIRST = 0.005
_POLL_MAX = 0.05


def declared_parameters(route: RouteMeta) -> frozenset[str]:
    """The query parameters a route declares: its query schema's properties (none without one)."""
    query = route.query
    return frozenset(query.schema.get("properties", {})) if query is not None else frozenset()


def check_parameters(request: web.Request, route: RouteMeta, policy: CachePolicy) -> None:
    """Raises InvalidInput (400) for a query parameter the route does not declare, when the
    key covers every parameter (`vary_query=True`): each would otherwise be a new entry."""
    if policy.vary_query is not True or not request.rel_url.raw_query_string:
        return
    unknown = sorted(set(request.query) - declared_parameters(route))
    if unknown:
        raise InvalidInput(
            "unknown query parameters",
            errors=[
                {"parameter": name[:64], "detail": f"{name[:64]!r} is not a parameter of this route"}
                for name in unknown[:20]
            ],
            errors_truncated=len(unknown) > 20,
        )


def _query_part(request: web.Request, vary_query: bool | frozenset[str]) -> str:
    if vary_query is True:
        raw = request.rel_url.raw_query_string
        if not raw:
            return ""
        # Sorted by name only: the order of a repeated parameter's values can matter.
        return "&".join(sorted((p for p in raw.split("&") if p), key=lambda p: p.partition("=")[0]))
    if not vary_query:
        return ""
    chosen = [(k, v) for k, v in request.query.items() if k in vary_query]
    return urlencode(sorted(chosen, key=lambda kv: kv[0]))


def request_key(request: web.Request, policy: CachePolicy) -> str:
    """What identifies this request's answer: API version, method, path, sorted query, declared headers.

    Readable in Redis (`v1:GET:/api/v1/baz?a=1&b=2`). HEAD shares GET's entries: aiohttp answers
    HEAD with GET's handler, minus the body. Header values are quoted, so a crafted query or
    header cannot produce another request's key.
    """
    key = f"v{api_version_of(request) or 0}:GET:{request.rel_url.raw_path}"
    query = _query_part(request, policy.vary_query)
    if query:
        key = f"{key}?{query}"
    if policy.vary_headers:
        headers = request.headers
        key += "".join(f"|{h}={quote(headers[h], safe='')}" if h in headers else f"|{h}" for h in policy.vary_headers)
    return key


def wants_refresh(request: web.Request) -> bool:
    """The client asked not to be served a stored answer (Cache-Control no-cache / max-age=0)."""
    value = request.headers.get("Cache-Control")
    if value is None:
        return request.headers.get("Pragma", "").strip().lower() == "no-cache"
    directives = {d.strip().lower().replace(" ", "") for d in value.split(",")}
    return "no-cache" in directives or "max-age=0" in directives


def client_identity(request: web.Request) -> str:
    """Who a `no-cache` refresh is counted against: the request's token (the bearer layer runs
    before this one), else the peer address (behind a proxy, the proxy: every anonymous client
    then shares one budget, which errs on the side of the cache)."""
    grant = client_grant(request)
    if grant is not None:
        return f"token:{grant.token_id}"
    return request.remote or "unknown"


def _count(policy: CachePolicy, state: str) -> None:
    metrics = process_metrics()
    if metrics is not None:
        metrics.count_cache(policy.namespace, state)


def _mark(response: web.StreamResponse, state: str, policy: CachePolicy, max_age: int | None) -> None:
    _count(policy, state)
    if response.prepared:  # streamed answers carry no cache headers
        return
    headers = response.headers
    headers["X-Cache"] = state
    if max_age is not None:
        headers.setdefault("Cache-Control", f"max-age={max_age}")
    if policy.vary:
        headers["Vary"] = policy.vary


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _hit(entry: Entry, policy: CachePolicy) -> web.Response | None:
    """The answer an entry gives, or None when the entry is not one this route could have
    stored (another media type, a header it did not declare, an unsafe value): whoever can
    write to Redis must not choose what the origin serves."""
    if entry.status != 200 or _media_type(entry.content_type) != policy.content_type:
        return None
    if not _SAFE_HEADER_VALUE.fullmatch(entry.content_type):
        return None
    kept: dict[str, str] = {}
    for name, value in entry.headers.items():
        if name not in policy.store_headers or not isinstance(value, str) or not _SAFE_HEADER_VALUE.fullmatch(value):
            return None
        kept[name] = value
    elapsed = time.time() - entry.stored_at
    headers = {
        "Content-Type": entry.content_type,
        **kept,
        "X-Cache": "HIT",
        "Age": str(max(0, int(elapsed))),
        "Cache-Control": f"max-age={max(0, int(entry.ttl - elapsed))}",
    }
    if policy.vary:
        headers["Vary"] = policy.vary
    _count(policy, "HIT")
    return web.Response(body=entry.body, status=200, headers=headers)


def _entry_of(response: web.StreamResponse, policy: CachePolicy, ttl: int) -> Entry | None:
    """What to store of a handler's answer, or None when it must not be stored."""
    if response.status != 200 or not isinstance(response, web.Response) or response.prepared:
        return None
    body = response.body
    if not isinstance(body, bytes):  # a streaming payload: not ours to buffer
        return None
    headers = response.headers
    if response.cookies or "Set-Cookie" in headers:  # per-client state never goes to a shared cache
        return None
    control = headers.get("Cache-Control", "").lower()
    if "no-store" in control or "private" in control:
        return None
    content_type = headers.get("Content-Type", "application/octet-stream")
    if _media_type(content_type) != policy.content_type:
        return None
    kept = {h: headers[h] for h in policy.store_headers if h in headers}
    return Entry(200, ttl, time.time(), content_type, kept, body)


async def _bypass(request: web.Request, handler: Handler, policy: CachePolicy) -> web.StreamResponse:
    response = await handler(request)
    _mark(response, "BYPASS", policy, None)
    return response


@dataclass(slots=True)
class _Miss:
    """One request's miss: what it needs to compute, store and release."""

    request: web.Request
    handler: Handler
    policy: CachePolicy
    store: ResponseCache
    key: str  # with the generation: g<gen>:<request key>
    ttl: int

    async def compute(self, lock_token: str | None) -> web.StreamResponse:
        """Run the handler, store a storable answer, release the lock."""
        store, namespace = self.store, self.policy.namespace
        try:
            response = await self.handler(self.request)
        except BaseException:
            if lock_token is not None:
                await self.release(lock_token)
            raise
        entry = _entry_of(response, self.policy, self.ttl)
        try:
            if entry is not None:
                await store.store(namespace, self.key, entry, lock_token)
            elif lock_token is not None:
                await store.unlock(namespace, self.key, lock_token)
        except REDIS_ERRORS as exc:
            store.outage.failed(exc)
        _mark(response, "MISS", self.policy, self.ttl if entry is not None else None)
        return response

    async def release(self, lock_token: str) -> None:
        try:
            await self.store.unlock(self.policy.namespace, self.key, lock_token)
        except REDIS_ERRORS as exc:  # the lock expires by itself after cache.lock_timeout
            self.store.outage.failed(exc)

    async def wait_for_holder(self, deadline: float, not_before: float) -> web.Response | bool:
        """The answer from the entry the lock holder stored; True when the lock is free again
        without one (the holder failed or answered a non-200); False once `deadline` passed.
        Raises REDIS_ERRORS."""
        loop = asyncio.get_running_loop()
        delay = _POLL_FIRST
        while loop.time() + delay <= deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            raw, locked = await self.store.poll(self.policy.namespace, self.key)
            if raw is not None:
                entry = Entry.decode(raw)
                if entry is not None and entry.stored_at >= not_before:
                    answer = _hit(entry, self.policy)
                    if answer is not None:
                        return answer
            if not locked:
                return True
        return False

    async def answer(self, not_before: float) -> web.StreamResponse:
        """Compute under the key's lock, or wait for the request holding it and answer with its entry."""
        store = self.store
        deadline = asyncio.get_running_loop().time() + store.config.wait_timeout
        while True:
            # Only Redis calls are guarded: an error of the handler itself must not run it twice.
            try:
                token = await store.lock(self.policy.namespace, self.key)
                waited = True if token is not None else await self.wait_for_holder(deadline, not_before)
            except REDIS_ERRORS as exc:
                store.outage.failed(exc)
                return await _bypass(self.request, self.handler, self.policy)
            if token is not None:
                return await self.compute(token)
            if isinstance(waited, web.Response):
                return waited
            if not waited:
                log.info("gave up waiting for the request filling %s; computing", self.key)
                return await self.compute(None)


async def serve_cached(
    request: web.Request,
    handler: Handler,
    route: RouteMeta,
    policy: CachePolicy,
    store: ResponseCache,
    generations: Generations,
) -> web.StreamResponse:
    """Answer a cacheable request from the cache, or from the handler and fill the cache.

    Raises InvalidInput (400) for an undeclared query parameter, what reading the namespace's
    generation from the database raises (a storage fault is a 503)."""
    check_parameters(request, route, policy)
    if not store.config.enabled or not store.outage.usable():
        return await _bypass(request, handler, policy)
    generation = await generations.get(policy.namespace)
    key = f"g{generation}:{request_key(request, policy)}"
    try:
        refresh = wants_refresh(request) and await store.refresh_allowed(client_identity(request))
        if not refresh:
            raw = await store.get(store.entry_key(policy.namespace, key))
            if raw is not None:
                entry = Entry.decode(raw)
                answer = _hit(entry, policy) if entry is not None else None
                if answer is not None:
                    store.outage.succeeded()
                    return answer
                log.warning("ignored a cache entry this route could not have stored: %s", key[:200])
    except REDIS_ERRORS as exc:
        store.outage.failed(exc)
        return await _bypass(request, handler, policy)
    store.outage.succeeded()
    miss = _Miss(request, handler, policy, store, key, policy.ttl or store.config.default_ttl)
    return await miss.answer(not_before=time.time() if refresh else 0.0)


def cache_layer(route: Route, handler: Handler) -> Handler | None:
    """The layer answering a `@cached` route from Redis (see the module docstring); None for any other."""
    declared, policy = route.meta, route.meta.cache
    if policy is None or route.method not in _CACHEABLE_ROUTES:
        return None
    store, generations = AppResource(CACHE_KEY), AppResource(GENERATIONS_KEY)

    async def served_cached(request: web.Request) -> web.StreamResponse:
        if request.method not in CACHEABLE_METHODS:  # a "*" route's other methods
            return await handler(request)
        return await serve_cached(request, handler, declared, policy, store(request), generations(request))

    return served_cached


async def invalidate_namespace(
    target: web.Request | web.Application | Redis, namespace: str, *, prefix: str | None = None
) -> bool:
    """Make every cached answer of `namespace` stale, for every API version and process.

    With a request or the app: bumps the namespace's generation in the database (raises what
    the database raises), then deletes the stored entries if Redis answers; returns whether it
    did. Call it after the write, before answering, or better inside the write's transaction
    (see `invalidating`). With a bare Redis client (a worker, a script): only deletes the
    entries (`prefix` defaults to the config's default), raising what Redis raises; a process
    with the database should bump the generation with `bump_generation(db, namespace)`.
    """
    if isinstance(target, Redis):
        await invalidate(target, prefix or CacheConfig().prefix, namespace)
        return True
    config = target.config_dict if isinstance(target, web.Request) else target
    await bump_generation(config[DB_KEY], namespace)
    return await config[CACHE_KEY].drop(namespace)


@asynccontextmanager
async def invalidating(request: web.Request, namespace: str) -> AsyncIterator[None]:
    """A write unit that makes `namespace` stale as it commits: the generation is bumped in the
    same transaction, so no process serves an entry from before the write once it has committed;
    the old entries are deleted from Redis afterwards (best effort).

        async with invalidating(request, "users"):
            user = await User.create(db, name=name)
    """
    db = request.config_dict[DB_KEY]
    async with db.transaction():
        yield
        await bump_generation(db, namespace)
    await request.config_dict[CACHE_KEY].drop(namespace)
