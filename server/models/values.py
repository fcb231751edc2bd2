"""Python values as the database stores them: timestamps as ISO 8601 text, checked numbers and text."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

from server.models.errors import InvalidQuery

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds: the text SQLite's strftime('%Y-%m-%dT%H:%M:%fZ', 'now') writes.

    Both backends store timestamps as this text (PostgreSQL's column default writes it with
    to_char), so they compare, sort and serialise identically.
    """
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive datetimes are taken as UTC
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def shown(value: object, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sql_value(value: Any, *, bool_as_int: bool = True, nul_in_text: bool = True) -> Any:
    """A Python value as it is stored and compared; raises InvalidQuery for what cannot be.

    SQLite has no boolean type (`bool_as_int`); PostgreSQL's driver sends bools as booleans.
    PostgreSQL's text cannot hold U+0000 (`nul_in_text`); SQLite's can.
    """
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return int(value) if bool_as_int else value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidQuery(f"integer {shown(value)} does not fit in 64 bits")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise InvalidQuery("NaN is not a storable number")
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidQuery("text must be valid Unicode (it has a lone surrogate)") from None
        if not nul_in_text and "\x00" in value:
            raise InvalidQuery("text cannot contain the NUL character (U+0000) in this database")
        return value
    if isinstance(value, datetime):
        return utc_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    raise InvalidQuery(f"values of type {type(value).__name__} cannot be stored or compared")
