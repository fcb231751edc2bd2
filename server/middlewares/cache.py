"""Response caching in Redis: one middleware serving the routes stamped `@cached(...)`, and namespace invalidation.

A stamped GET/HEAD route is answered from Redis when a valid entry exists (`X-Cache: HIT`, one
round trip), else from its handler (`MISS`), whose 200 answer is stored for the route's TTL.
Concurrent misses of one key are collapsed: one request computes under a short Redis lock, the
others poll for its entry and compute themselves only after `cache.wait_timeout`. When Redis
fails, the handler answers (`BYPASS`); the cache never turns an answer into an error.

The middleware sits outside `validation`, so a hit skips validation: only answers to requests
that passed it are stored, and the key covers every query parameter unless the route declares a
subset (`vary_query=(...)`), which it should only do when its query schema ignores the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis

from server.cache.policy import CachePolicy
from server.cache.store import REDIS_ERRORS, Entry, ResponseCache, invalidate
from server.config import CacheConfig
from server.keys import API_VERSION_KEY, CACHE_KEY
from server.routing.meta import meta_for

log = logging.getLogger(__name__)

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
# First poll of a waiting miss, and the cap of its doubling.
_POLL_FIRST = 0.005
_POLL_MAX = 0.05


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
    key = f"v{request.app.get(API_VERSION_KEY, 0)}:GET:{request.rel_url.raw_path}"
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


def _mark(response: web.StreamResponse, state: str, policy: CachePolicy, max_age: int | None) -> None:
    if response.prepared:  # streamed answers carry no cache headers
        return
    headers = response.headers
    headers["X-Cache"] = state
    if max_age is not None:
        headers.setdefault("Cache-Control", f"max-age={max_age}")
    if policy.vary:
        headers["Vary"] = policy.vary


def _hit(entry: Entry, policy: CachePolicy) -> web.Response:
    elapsed = time.time() - entry.stored_at
    headers = {
        "Content-Type": entry.content_type,
        **entry.headers,
        "X-Cache": "HIT",
        "Age": str(max(0, int(elapsed))),
        "Cache-Control": f"max-age={max(0, int(entry.ttl - elapsed))}",
    }
    if policy.vary:
        headers["Vary"] = policy.vary
    return web.Response(body=entry.body, status=entry.status, headers=headers)


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
    kept = {h: headers[h] for h in policy.store_headers if h in headers}
    content_type = headers.get("Content-Type", "application/octet-stream")
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
    key: str
    ttl: int

    async def compute(self, generation: str, lock_token: str | None) -> web.StreamResponse:
        """Run the handler, store a storable answer (fenced by `generation`), release the lock."""
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
                await store.store(namespace, self.key, entry, generation, lock_token)
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

    async def wait_for_holder(self, deadline: float, not_before: float) -> Entry | bool:
        """The entry the lock holder stored; True when the lock is free again without one (the
        holder failed, answered a non-200, or was fenced off by an invalidation); False once
        `deadline` passed. Raises REDIS_ERRORS."""
        loop = asyncio.get_running_loop()
        delay = _POLL_FIRST
        while loop.time() + delay <= deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            raw, locked = await self.store.poll(self.policy.namespace, self.key)
            if raw is not None:
                entry = Entry.decode(raw)
                if entry is not None and entry.stored_at >= not_before:
                    return entry
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
                token, generation = await store.lock(self.policy.namespace, self.key)
                waited = True if token is not None else await self.wait_for_holder(deadline, not_before)
            except REDIS_ERRORS as exc:
                store.outage.failed(exc)
                return await _bypass(self.request, self.handler, self.policy)
            if token is not None:
                return await self.compute(generation, token)
            if isinstance(waited, Entry):
                return _hit(waited, self.policy)
            if not waited:
                log.info("gave up waiting for the request filling %s; computing", self.key)
                return await self.compute(generation, None)


async def serve_cached(request: web.Request, handler: Handler, policy: CachePolicy) -> web.StreamResponse:
    """Answer a cacheable request from the cache, or from the handler and fill the cache."""
    store = request.config_dict[CACHE_KEY]
    if not store.config.enabled or not store.outage.usable():
        return await _bypass(request, handler, policy)
    key = request_key(request, policy)
    refresh = wants_refresh(request)
    try:
        if store.pending:
            await store.flush_pending()
        if not refresh:
            raw = await store.get(store.entry_key(policy.namespace, key))
            if raw is not None:
                entry = Entry.decode(raw)
                if entry is not None:
                    store.outage.succeeded()
                    return _hit(entry, policy)
    except REDIS_ERRORS as exc:
        store.outage.failed(exc)
        return await _bypass(request, handler, policy)
    store.outage.succeeded()
    miss = _Miss(request, handler, policy, store, key, policy.ttl or store.config.default_ttl)
    return await miss.answer(not_before=time.time() if refresh else 0.0)


@web.middleware
async def cache(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = meta_for(request)
    policy = route.cache if route is not None else None
    if policy is None or request.method not in CACHEABLE_METHODS:
        return await handler(request)
    return await serve_cached(request, handler, policy)


async def invalidate_namespace(
    target: web.Request | web.Application | Redis, namespace: str, *, prefix: str | None = None
) -> bool:
    """Drop every cached answer of `namespace`, for every API version and process.

    Call it after the write is committed and before answering. With a request or the app:
    never raises; returns False when Redis is unreachable, and the invalidation is then applied
    before this process's next cache read. With a bare Redis client (a worker, a script):
    raises what Redis raises; `prefix` defaults to the config's default.
    """
    if isinstance(target, Redis):
        await invalidate(target, prefix or CacheConfig().prefix, namespace)
        return True
    store = target.config_dict[CACHE_KEY] if isinstance(target, web.Request) else target[CACHE_KEY]
    return await store.invalidate_or_defer(namespace)
