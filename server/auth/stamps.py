"""Access stamps on handlers: `@requires(scope)`, `@read_only`, `@rate_limit(rate, burst=...)`.

A stamp only records what the route declares (on `handler.__access__`); the auth and rate-limit
middlewares of the API sub-apps and the OpenAPI builder read it, so decorator order does not
matter and one middleware serves every route.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

H = TypeVar("H", bound=Callable[..., Any])

STAMP = "__access__"

# Every scope a token may hold, with what it allows. A stamp naming another is a typo, refused at
# import; `token create` refuses unknown scopes the same way.
SCOPES: dict[str, str] = {
    "users:write": "Create, update and delete users",
    "jobs:read": "Read the state and result of any background job, whoever started it",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_RATE_RE = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,5})?([smhd])")
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit per client: `count` requests every `period` seconds, `burst` of them at once.

    Enforced as GCRA (a token bucket of `burst`, refilled at count/period), keyed by `name`:
    routes with the same name share one allowance.
    """

    count: int
    period: int
    burst: int
    name: str

    @property
    def interval(self) -> float:
        """Seconds between two requests at the sustained rate (GCRA's emission interval)."""
        return self.period / self.count

    @property
    def window(self) -> int:
        """Seconds an empty bucket takes to fill again: the draft's policy window `w`."""
        return max(1, math.ceil(self.burst * self.interval))

    def policy_header(self) -> str:
        """The `RateLimit-Policy` value (IETF httpapi ratelimit-headers draft): quota and window."""
        return f'"{self.name}";q={self.burst};w={self.window}'


def parse_rate(text: str, *, burst: int | None = None, name: str) -> Rate:
    """`"20/s"`, `"1000/h"`, `"300/5m"` as a Rate (burst defaults to the count); raises ValueError."""
    match = _RATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a rate is <count>/<period> with the period in s, m, h or d (e.g. 20/s, 300/5m), got {text!r}")
    count = int(match.group(1))
    period = int(match.group(2) or 1) * _PERIODS[match.group(3)]
    burst = count if burst is None else burst
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be a positive whole number, got {burst!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
        raise ValueError(f"a rate's name is 1-64 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
    return Rate(count=count, period=period, burst=burst, name=name)


@dataclass(frozen=True, slots=True)
class Access:
    """What a route declares about who may call it and how often."""

    # A token holding every one of these is needed (implies a token is needed).
    scopes: frozenset[str] = frozenset()
    # Changes nothing (a POST that computes an answer): the default policy treats it as a read.
    read_only: bool = False
    # This route's own limit instead of rate_limit.default.
    rate: Rate | None = None


NO_STAMP = Access()


def access_of(handler: Any) -> Access:
    """The access declared on a handler (the defaults when it has no stamp)."""
    return getattr(handler, STAMP, NO_STAMP) if handler is not None else NO_STAMP


def _update(handler: H, **changes: Any) -> H:
    setattr(handler, STAMP, dataclasses.replace(access_of(handler), **changes))
    return handler


def requires(*scopes: str) -> Callable[[H], H]:
    """Only a token holding every one of `scopes` may call the route (401 without one, 403 without them).

    Raises ValueError, when decorating, for a scope not in SCOPES.
    """
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope(s) {unknown}; the scopes are {sorted(SCOPES)}")

    def stamp(handler: H) -> H:
        return _update(handler, scopes=access_of(handler).scopes | frozenset(scopes))

    return stamp


def read_only(handler: H) -> H:
    """Declare that the route changes nothing, whatever its method: with `auth.public_reads` it
    is public like a GET (POST /bar computes an answer from its body and stores nothing)."""
    return _update(handler, read_only=True)


def rate_limit(rate: str, *, burst: int | None = None, name: str | None = None) -> Callable[[H], H]:
    """Limit each client to `rate` on this route ("20/s", "1000/h"), `burst` at once (default:
    the count), instead of `rate_limit.default`. Routes stamped with the same `name` share one
    allowance (default: the handler's name). Raises ValueError, when decorating, for a bad rate.
    """
    parse_rate(rate, burst=burst, name=name or "route")  # a bad declaration fails at import

    def stamp(handler: H) -> H:
        parsed = parse_rate(rate, burst=burst, name=name or getattr(handler, "__name__", "route"))
        return _update(handler, rate=parsed)

    return stamp


def needs_token(access: Access, method: str, *, public_reads: bool) -> bool:
    """The default policy: whether a call of `method` on a route declaring `access` needs a token."""
    if access.scopes or not public_reads:
        return True
    return not (method in SAFE_METHODS or access.read_only)
