"""`python -m server token create|list|revoke`: API tokens from the command line.

Each command opens the configured database (applying missing migrations when
`database.auto_migrate` is on, as start-up does), does its work, and closes it. `revoke` also
tells the running servers over Redis, so the token stops working at once; without Redis it
stops within `auth.cache_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TextIO

from server.auth.grants import publish_revocation
from server.auth.limiter import REDIS_ERRORS
from server.auth.policy import check_scopes
from server.config import Config
from server.models import api_token
from server.models.api_token import ApiToken
from server.models.backends import make_database
from server.models.database import Database
from server.models.migrate import prepare_database
from server.resources import make_redis

_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`"30d"`, `"12h"`, `"90m"`, `"2w"`, `"3600s"` as a timedelta; raises ValueError."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"a duration is a number and a unit (s, m, h, d, w), e.g. 30d; got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@asynccontextmanager
async def open_database(config: Config) -> AsyncIterator[Database]:
    """The configured database, migrated as start-up would; raises SchemaError when it cannot be."""
    db = make_database(config.database, small=True)
    await db.open()
    try:
        await prepare_database(db, auto_migrate=config.database.auto_migrate)
        yield db
    finally:
        await db.close()


async def create_token(
    config: Config, *, name: str, scopes: Sequence[str], expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """Make a token in the configured database: its row, and the token (shown once).

    Raises ValueError for an unknown scope or a bad name, SchemaError when the database is not ready.
    """
    checked = check_scopes(scopes)
    expires_at = None if expires_in is None else datetime.now(UTC) + expires_in
    async with open_database(config) as db:
        return await api_token.create_token(db, name=name, scopes=checked, expires_at=expires_at)


async def revoke_token(config: Config, token_id: int) -> tuple[ApiToken | None, int | None]:
    """Revoke in the database, then tell the running servers: (the token's row or None, how many
    processes heard it, None when Redis could not be reached)."""
    async with open_database(config) as db:
        token = await api_token.revoke_token(db, token_id)
    if token is None:
        return None, None
    redis = make_redis(config, socket_timeout=config.redis.socket_timeout)
    try:
        async with asyncio.timeout(config.redis.socket_timeout + config.redis.connect_timeout):
            listeners = await publish_revocation(redis, token.id)
    except REDIS_ERRORS:
        listeners = None
    finally:
        await redis.aclose()
    return token, listeners


def describe(row: ApiToken) -> str:
    """One line of `token list`: the id first, never the secret (only its hash is stored)."""
    return "\t".join(
        [
            str(row.id),
            row.name,
            f"scopes={','.join(row.scopes) or '-'}",
            f"created={row.created_at}",
            f"last_used={row.last_used_at or 'never'}",
            f"expires={row.expires_at or 'never'}",
            row.status(),
        ]
    )


async def token_command(config: Config, action: str, args: dict[str, object], out: TextIO = sys.stdout) -> int:
    """Run one `token` sub-command; its exit status (2 for bad arguments)."""
    err = sys.stderr
    if action == "create":
        try:
            expires = args.get("expires")
            expires_in = parse_duration(str(expires)) if expires else None
            token, secret = await create_token(
                config,
                name=str(args["name"]),
                scopes=list(args.get("scope") or []),  # type: ignore[call-overload]
                expires_in=expires_in,
            )
        except ValueError as exc:
            print(f"token create: {exc}", file=err)
            return 2
        print(
            f"created token {token.id} {token.name!r}: scopes {' '.join(token.scopes) or '(none)'}, "
            f"expires {token.expires_at or 'never'}. It is shown once; keep it now:",
            file=out,
        )
        print(secret, file=out)
        return 0
    if action == "list":
        async with open_database(config) as db:
            for token in await api_token.list_tokens(db):
                print(describe(token), file=out)
        return 0
    if action == "revoke":
        token_id = int(args["id"])  # type: ignore[call-overload]
        revoked, listeners = await revoke_token(config, token_id)
        if revoked is None:
            print(f"token revoke: no token with id {token_id}", file=err)
            return 1
        print(f"token {revoked.id} {revoked.name!r} revoked at {revoked.revoked_at}", file=out)
        if listeners is None:
            print(
                f"Redis could not be reached: running servers refuse the token within "
                f"{config.auth.cache_ttl:g} s (auth.cache_ttl)",
                file=err,
            )
        return 0
    raise ValueError(f"unknown token action {action!r}")
