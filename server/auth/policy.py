"""What a route may declare about access, without HTTP: the scopes that exist, rates, the default policy.

The decorators that declare them (`@requires`, `@read_only`, `@rate_limit`) are in
server/routing/stamps.py and write the handler's RouteMeta; the bearer and rate-limit
middlewares and the OpenAPI builder read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.config import RateLimitConfig

# Every scope a token may hold, with what it allows. A stamp naming another is a typo, refused at
# import; `token create` refuses unknown scopes the same way.
SCOPES: dict[str, str] = {
    "users:write": "Create, update and delete users",
    "jobs:read": "Read the state and result of any background job, whoever started it",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Beyond this a limit limits nothing, and Lua's numbers would print in exponent form.
MAX_BURST = 1_000_000_000

_RATE_RE = re.compile(r"([1-9][0-9]{0,8})/([1-9][0-9]{0,5})?([smhd])")
_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
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
    _policy: str = field(init=False, repr=False, compare=False, default="")

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
        return self._policy

    def __post_init__(self) -> None:
        # Sent on every limited answer: built once.
        object.__setattr__(self, "_policy", f'"{self.name}";q={self.burst};w={self.window}')


def parse_rate(text: str, *, burst: int | None = None, name: str) -> Rate:
    """`"20/s"`, `"1000/h"`, `"300/5m"` as a Rate (burst defaults to the count); raises ValueError."""
    match = _RATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a rate is <count>/<period>, the period in s, m, h or d (20/s, 300/5m), got {text!r}")
    count = int(match.group(1))
    period = int(match.group(2) or 1) * _PERIODS[match.group(3)]
    burst = count if burst is None else burst
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
        raise ValueError(f"burst must be a whole number from 1 to {MAX_BURST}, got {burst!r}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"a rate's name is 1-64 characters of A-Z a-z 0-9 _ . : -, got {name!r}")
    return Rate(count=count, period=period, burst=burst, name=name)


def default_rate(config: RateLimitConfig) -> Rate | None:
    """`rate_limit.default` as a Rate named "default", or None when there is none."""
    if not config.default:
        return None
    return parse_rate(config.default, burst=config.default_burst, name="default")


def check_scopes(scopes: Sequence[str]) -> list[str]:
    """The scopes, each once, in order; raises ValueError naming the first that does not exist."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; the scopes are {', '.join(sorted(SCOPES))}")
    return list(dict.fromkeys(scopes))


def needs_token(scopes: frozenset[str], read_only: bool, method: str, *, public_reads: bool) -> bool:
    """The default policy: whether a call of `method` on a route declaring `scopes` (and
    `read_only`) needs a token. With `public_reads`, reads and read-only routes are public."""
    if scopes or not public_reads:
        return True
    return not (method in SAFE_METHODS or read_only)
