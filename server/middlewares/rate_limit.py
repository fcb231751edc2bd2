"""Per-client rate limits on the API routes (a layer): a route's @rate_limit stamp, else rate_limit.default.

The client is its token when the request carries a valid one, else its address: the peer's, or
for a request from a trusted proxy (`rate_limit.trusted_proxies`) the first address of
X-Forwarded-For, from the right, that is not a trusted proxy. IPv6 clients are counted by /64,
the block one subscriber usually holds. Every limited answer, 429 or not, carries the
`RateLimit-Policy` and `RateLimit` headers of the IETF httpapi ratelimit-headers draft
(`"default";q=200;w=2` and `"default";r=199;t=1`); a 429 also carries `Retry-After`.
The counting happens in Redis (server/auth/limiter.py), so the limit holds across every
web process; when Redis fails, requests pass.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, MutableMapping, Sequence
from functools import partial

from aiohttp import web

from server.auth.policy import default_rate
from server.config import RateLimitConfig
from server.errors import TooManyRequests, Unauthorized
from server.keys import GRANTS_KEY, RATE_LIMITER_KEY
from server.middlewares.bearer import identify
from server.middlewares.errors import with_headers
from server.routing.chain import AppResource, Handler, Layer, Route

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = "X-Forwarded-For"


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[Network]) -> bool:
    return any(address in network for network in proxies)


def client_address(remote: str | None, forwarded_for: Sequence[str], proxies: Sequence[Network]) -> str:
    """The address a request is counted against (see the module docstring)."""
    if not proxies and remote and ":" not in remote:
        return remote  # IPv4 from the socket, nothing to believe or widen: parsing costs microseconds
    peer = _parse_ip(remote or "")
    if peer is None:
        return remote or "unknown"
    client = peer
    if proxies and _trusted(peer, proxies):
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _parse_ip(hop)
            if address is None:
                break  # not an address: whatever is left of it is not to be believed either
            client = address
            if not _trusted(address, proxies):
                break
    if isinstance(client, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((client, 64), strict=False).network_address) + "/64"
    return str(client)


def _put(headers: Mapping[str, str], target: MutableMapping[str, str]) -> None:
    target.update(headers)


def rate_limit_layer(config: RateLimitConfig) -> Layer:
    """The layer limiting each API route to its `@rate_limit`, else `rate_limit.default` (None
    for a route with neither)."""
    default = default_rate(config)
    proxies: list[Network] = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
    grants = AppResource(GRANTS_KEY)
    limiter = AppResource(RATE_LIMITER_KEY)

    def limited(route: Route, handler: Handler) -> Handler | None:
        rate = route.meta.rate_limit or default
        if rate is None:
            return None
        policy = rate.policy_header()

        async def rate_limited(request: web.Request) -> web.StreamResponse:
            try:
                grant = await identify(request, grants)
            except Unauthorized:
                grant = None  # counted by address; the bearer layer answers 401
            if grant is not None:
                client = f"token:{grant.token_id}"
            else:
                client = "ip:" + client_address(request.remote, request.headers.getall(FORWARDED_FOR, ()), proxies)
            decision = await limiter(request).hit(client, rate)
            if decision is None:  # Redis cannot tell: fail open
                return await handler(request)
            headers = {
                "RateLimit-Policy": policy,
                "RateLimit": f'"{rate.name}";r={decision.remaining};t={math.ceil(decision.reset_after)}',
            }
            if not decision.allowed:
                retry_after = max(1, math.ceil(decision.retry_after))
                raise TooManyRequests(
                    f"Too many requests: this route allows {rate.count} every {rate.period} s "
                    f"({rate.burst} at once) per client; retry in {retry_after} s.",
                    retry_after=retry_after,
                    headers=headers,
                )
            return await with_headers(request, handler, partial(_put, headers))

        return rate_limited

    return limited
