"""What a cached route declares: TTL, what the key varies on, its invalidation namespace."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Headers of a handler's answer kept in the entry besides Content-Type (a route may add more).
STORED_HEADERS = ("Content-Language", "ETag", "Last-Modified", "Link")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """What `@cached` declares for a route."""

    ttl: int | None
    vary_query: bool | frozenset[str]
    vary_headers: tuple[str, ...]
    namespace: str
    store_headers: tuple[str, ...]
    vary: str | None  # the Vary header answers carry
    content_type: str = "application/json"  # the only media type stored and replayed


def make_policy(
    ttl: int | None = None,
    *,
    vary_query: bool | Iterable[str] = True,
    vary_headers: Iterable[str] = (),
    namespace: str = "default",
    store_headers: Iterable[str] = (),
    content_type: str = "application/json",
) -> CachePolicy:
    """The checked policy of a declaration (see `routing.stamps.cached`); raises ValueError."""
    if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"namespace must match {_NAMESPACE.pattern}, got {namespace!r}")
    if isinstance(vary_query, str):
        raise ValueError("vary_query takes True, False or a list of parameter names, not a string")
    query: bool | frozenset[str] = vary_query if isinstance(vary_query, bool) else frozenset(vary_query)
    headers = tuple(vary_headers)
    return CachePolicy(
        ttl=ttl,
        vary_query=query,
        vary_headers=headers,
        namespace=namespace,
        store_headers=(*STORED_HEADERS, *store_headers),
        vary=", ".join(headers) or None,
        content_type=content_type.lower(),
    )
