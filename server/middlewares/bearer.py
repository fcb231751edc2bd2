"""Bearer tokens on the API routes (a layer): who the client is, and whether the route lets it in.

`Authorization: Bearer <token>`. A request without the header is anonymous; one with a header
that is not a valid token (malformed, unknown, revoked, expired) answers 401 on every API route,
public ones included, so a client never mistakes a broken token for access. Whether an anonymous
request may pass, and which scopes a token needs, come from the route's RouteMeta (`@requires`,
`@read_only`) and `auth.public_reads` (server/auth/policy.py). Answers follow RFC 6750: 401 with
`WWW-Authenticate: Bearer`, 403 with `error="insufficient_scope"`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from aiohttp import hdrs, web

from server.auth.grants import Grant, InvalidToken, MalformedToken, TokenGrants
from server.auth.policy import needs_token
from server.config import AuthConfig
from server.errors import Forbidden, Unauthorized
from server.keys import GRANTS_KEY, IDENTITY_KEY
from server.models.api_token import has_token_shape
from server.routing.chain import AppResource, Handler, Layer, Route

REALM = "api"
# Owner recorded on a job enqueued without a token: whoever holds its key may read it.
ANONYMOUS_OWNER = "anonymous"
# A token longer than this is not ours: refused before any work on it.
_MAX_HEADER = 512


def challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> dict[str, str]:
    """The WWW-Authenticate header of an RFC 6750 answer."""
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {hdrs.WWW_AUTHENTICATE: ", ".join(parts)}


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value when it has our shape, else None
    (the checksum is checked by the grant cache, only for a token it has not seen)."""
    if len(header) > _MAX_HEADER:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not has_token_shape(token):
        return None
    return token


_UNSET = object()


async def identify(request: web.Request, grants: Callable[[web.Request], TokenGrants] | None = None) -> Grant | None:
    """The grant of the request's token, None without an Authorization header (anonymous).

    Raises Unauthorized (401) for a header that is not a valid token. Worked out once per
    request (the rate-limit and bearer layers both ask); a token this process has seen
    costs a hash and a dict lookup, no await. `grants` finds the app's TokenGrants (default:
    through `request.config_dict`).
    """
    found = request.get(IDENTITY_KEY, _UNSET)
    if found is _UNSET:
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            found = None
        else:
            store = grants(request) if grants is not None else request.config_dict[GRANTS_KEY]
            found = _from_cache(store, header)
            if found is _UNSET:
                found = await _resolve(store, header)
        request[IDENTITY_KEY] = found
    if isinstance(found, Unauthorized):
        raise found
    return cast(Grant | None, found)


def _malformed() -> Unauthorized:
    detail = "The Authorization header is not a bearer token of this server (Authorization: Bearer <token>)."
    return Unauthorized(detail, headers=challenge("invalid_token", "malformed token"))


def _invalid() -> Unauthorized:
    detail = "The bearer token is not valid: unknown, revoked or expired."
    return Unauthorized(detail, headers=challenge("invalid_token", "unknown, revoked or expired token"))


def _from_cache(grants: TokenGrants, header: str) -> object:
    """The identity when it is settled without I/O (a cached or malformed token), else _UNSET."""
    presented = bearer_token(header)
    if presented is None:
        return _malformed()
    try:
        grant = grants.cached(presented)
    except InvalidToken:
        return _invalid()
    return _UNSET if grant is None else grant


async def _resolve(grants: TokenGrants, header: str) -> Grant | Unauthorized:
    presented = bearer_token(header)
    assert presented is not None  # _from_cache answered the malformed ones
    try:
        return await grants.resolve(presented)
    except MalformedToken:
        return _malformed()
    except InvalidToken:
        return _invalid()


def bearer_layer(config: AuthConfig) -> Layer:
    """The layer of the API routes enforcing tokens and scopes under `config`'s policy.

    Every API route gets it: a header that is not a valid token is refused even where none is
    needed. A public route's request without an Authorization header costs one dict lookup.
    """
    public_reads = config.public_reads
    grants = AppResource(GRANTS_KEY)

    def refuse(grant: Grant | None, scopes: frozenset[str]) -> None:
        if grant is None:
            raise Unauthorized("This route needs a bearer token (Authorization: Bearer <token>).", headers=challenge())
        if not scopes <= grant.scopes:
            missing = " ".join(sorted(scopes - grant.scopes))
            raise Forbidden(
                f"The token lacks the scope this route needs: {missing}.",
                headers=challenge("insufficient_scope", scope=" ".join(sorted(scopes))),
            )

    def bearer(route: Route, handler: Handler) -> Handler:
        scopes, read_only = route.meta.scopes, route.meta.read_only
        if route.method == "*":  # a catch-all handler: the method decides, request by request

            async def checked_per_method(request: web.Request) -> web.StreamResponse:
                grant = await identify(request, grants)
                if needs_token(scopes, read_only, request.method, public_reads=public_reads):
                    refuse(grant, scopes)
                return await handler(request)

            return checked_per_method

        if needs_token(scopes, read_only, route.method, public_reads=public_reads):

            async def token_needed(request: web.Request) -> web.StreamResponse:
                refuse(await identify(request, grants), scopes)
                return await handler(request)

            return token_needed

        async def token_checked(request: web.Request) -> web.StreamResponse:
            if hdrs.AUTHORIZATION in request.headers:
                await identify(request, grants)  # raises Unauthorized for a bad one
            return await handler(request)

        return token_checked

    return bearer


def client_grant(request: web.Request) -> Grant | None:
    """The grant the request was identified with (None: anonymous, or not an API request)."""
    found = request.get(IDENTITY_KEY)
    return found if isinstance(found, Grant) else None


def job_owner(request: web.Request) -> str:
    """What a job enqueued for this request records as its owner: its token, or anonymous."""
    grant = client_grant(request)
    return ANONYMOUS_OWNER if grant is None else f"token:{grant.token_id}"


def may_read_job(request: web.Request, owner: object) -> bool:
    """Whether this request may see a job whose owner is `owner` (None: enqueued by the system).

    A `jobs:read` token sees every job; the token that enqueued a job sees it; a job enqueued
    anonymously is seen by whoever holds its key. The system's jobs (cron) only by `jobs:read`.
    """
    grant = client_grant(request)
    if grant is not None and "jobs:read" in grant.scopes:
        return True
    if owner == ANONYMOUS_OWNER:
        return True
    return grant is not None and owner == f"token:{grant.token_id}"
