"""The api_tokens table, and the tokens themselves: made at random, recognisable, stored as a hash.

A token is `asrv_` followed by 43 base62 characters carrying 256 random bits and 6 characters of
CRC-32 checksum over them. The prefix lets people and secret scanners recognise a leaked token;
the checksum lets the server refuse a mistyped or made-up one without a database lookup. Only
the SHA-256 of a token is stored: a token holds 256 random bits, so a fast hash is enough (a
slow KDF protects guessable passwords, which these are not; docs/decisions.md, "API tokens").
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from server.models.database import Database
from server.models.values import utc_timestamp

TOKEN_PREFIX = "asrv_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 43  # 62**43 > 2**256
_CHECK_LENGTH = 6  # 62**6 > 2**32
TOKEN_LENGTH = len(TOKEN_PREFIX) + _BODY_LENGTH + _CHECK_LENGTH

NAME_MAX = 128

_COLUMNS = "id, name, scopes, created_at, last_used_at, expires_at, revoked_at"
INSERT_TOKEN_SQL = (
    "INSERT INTO api_tokens (name, token_hash, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?) RETURNING id"
)
SELECT_TOKENS_SQL = f"SELECT {_COLUMNS} FROM api_tokens ORDER BY id"
SELECT_TOKEN_SQL = f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?"
SELECT_TOKEN_BY_HASH_SQL = f"SELECT {_COLUMNS} FROM api_tokens WHERE token_hash = ?"
REVOKE_TOKEN_SQL = "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
# The guard keeps it to one write a minute per token even when several processes touch it.
TOUCH_TOKEN_SQL = "UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LENGTH)


def generate_token() -> str:
    """A new token: the prefix, 256 random bits in base62, and their checksum."""
    body = _base62(secrets.randbits(256), _BODY_LENGTH)
    return f"{TOKEN_PREFIX}{body}{_checksum(body)}"


def has_token_shape(token: str) -> bool:
    """Our prefix, length and alphabet: cheap, and all a cached token needs (the checksum was
    checked before it was ever cached)."""
    body = token[len(TOKEN_PREFIX) :]
    return len(token) == TOKEN_LENGTH and token.startswith(TOKEN_PREFIX) and body.isascii() and body.isalnum()


def well_formed(token: str) -> bool:
    """Whether `token` has our shape and a matching checksum (says nothing of whether it exists)."""
    if not has_token_shape(token):
        return False
    body = token[len(TOKEN_PREFIX) : -_CHECK_LENGTH]
    return secrets.compare_digest(_checksum(body), token[-_CHECK_LENGTH:])


def hash_token(token: str) -> str:
    """What the database keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One row of api_tokens (never the token itself, nor its hash)."""

    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: str
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None

    @classmethod
    def from_row(cls, row: Iterable[object]) -> ApiToken:
        id_, name, scopes, created_at, last_used_at, expires_at, revoked_at = row
        return cls(
            id=int(id_),  # type: ignore[call-overload]
            name=str(name),
            scopes=tuple(str(scopes).split()),
            created_at=str(created_at),
            last_used_at=None if last_used_at is None else str(last_used_at),
            expires_at=None if expires_at is None else str(expires_at),
            revoked_at=None if revoked_at is None else str(revoked_at),
        )

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= utc_timestamp(now)

    def status(self, now: datetime | None = None) -> str:
        """ "active", "revoked" or "expired"."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(now) else "active"


async def create_token(
    db: Database, *, name: str, scopes: Iterable[str], expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Store a new token; returns its row and the token itself (not kept anywhere: show it once).

    Raises ValueError for a name that is empty or longer than 128 characters, or a scope with
    white space in it.
    """
    if not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"a token's name has 1 to {NAME_MAX} characters, got {len(name)}")
    scope_list = list(dict.fromkeys(scopes))
    if any(not scope or scope.split() != [scope] for scope in scope_list):
        raise ValueError("a scope is one word without white space")
    plaintext = generate_token()
    created = utc_timestamp()
    expires = None if expires_at is None else utc_timestamp(expires_at)
    [inserted] = await db.execute_returning(
        INSERT_TOKEN_SQL, (name, hash_token(plaintext), " ".join(scope_list), created, expires)
    )
    row = ApiToken(int(inserted[0]), name, tuple(scope_list), created, None, expires, None)
    return row, plaintext


async def list_tokens(db: Database) -> list[ApiToken]:
    return [ApiToken.from_row(row) for row in await db.fetchall(SELECT_TOKENS_SQL)]


async def find_token(db: Database, token_id: int) -> ApiToken | None:
    row = await db.fetchone(SELECT_TOKEN_SQL, (token_id,))
    return None if row is None else ApiToken.from_row(row)


async def find_token_by_hash(db: Database, token_hash: str) -> ApiToken | None:
    row = await db.fetchone(SELECT_TOKEN_BY_HASH_SQL, (token_hash,))
    return None if row is None else ApiToken.from_row(row)


async def revoke_token(db: Database, token_id: int) -> ApiToken | None:
    """Mark the token revoked (a revoked one stays as it was); its row after, None if there is none."""
    await db.execute(REVOKE_TOKEN_SQL, (utc_timestamp(), token_id))
    return await find_token(db, token_id)


async def touch_tokens(db: Database, used: dict[int, str], older_than: str) -> None:
    """Set last_used_at of each token id to its time, where the stored one is before `older_than`."""
    async with db.transaction() as tx:
        await tx.executemany(TOUCH_TOKEN_SQL, [(at, token_id, older_than) for token_id, at in used.items()])
