"""Filter operators of `where(column__operator=value)`: each builds one SQL condition with parameters.

Values are always parameters, checked by the dialect first (InvalidQuery for what cannot be
stored or compared); column names reach here quoted, after the model has checked them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.models.dialect import Dialect
from server.models.errors import InvalidQuery
from server.models.values import shown


@dataclass(frozen=True, slots=True)
class Condition:
    sql: str
    params: tuple[Any, ...] = ()


Operator = Callable[[Dialect, str, Any], Condition]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _compare(symbol: str) -> Operator:
    def build(dialect: Dialect, column: str, value: Any) -> Condition:
        if value is None:
            raise InvalidQuery(f"{symbol} needs a value, not None (use __isnull)")
        return Condition(f"{column} {symbol} ?", (dialect.value(value),))

    return build


def _eq(dialect: Dialect, column: str, value: Any) -> Condition:
    if value is None:
        return Condition(f"{column} IS NULL")
    return Condition(f"{column} = ?", (dialect.value(value),))


def _ne(dialect: Dialect, column: str, value: Any) -> Condition:
    # NULL-safe, so rows whose column is NULL count as different (both engines accept this form).
    return Condition(f"{column} IS DISTINCT FROM ?", (dialect.value(value),))


def _sequence(dialect: Dialect, op: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidQuery(f"__{op} takes a list of values, got {shown(value)}")
    return tuple(dialect.value(v) for v in value)


def _in(dialect: Dialect, column: str, value: Any) -> Condition:
    values = _sequence(dialect, "in", value)
    if not values:
        return Condition("FALSE")  # nothing is in an empty list
    return Condition(f"{column} IN ({', '.join('?' * len(values))})", values)


def _notin(dialect: Dialect, column: str, value: Any) -> Condition:
    values = _sequence(dialect, "notin", value)
    if not values:
        return Condition("TRUE")
    return Condition(f"{column} NOT IN ({', '.join('?' * len(values))})", values)


def _between(dialect: Dialect, column: str, value: Any) -> Condition:
    values = _sequence(dialect, "between", value)
    if len(values) != 2 or None in values:
        raise InvalidQuery(f"__between takes [low, high], got {shown(value)}")
    return Condition(f"{column} BETWEEN ? AND ?", values)


def _text(dialect: Dialect, op: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidQuery(f"__{op} takes text, got {shown(value)}")
    text: str = dialect.value(value)
    return text


def _like(dialect: Dialect, column: str, value: Any) -> Condition:
    # The caller's own pattern: % and _ are wildcards, and no character escapes them.
    return Condition(f"{column} {dialect.like} ?{dialect.raw_like_escape}", (_text(dialect, "like", value),))


def _pattern(op: str, make: Callable[[str], str]) -> Operator:
    def build(dialect: Dialect, column: str, value: Any) -> Condition:
        pattern = make(_escape_like(_text(dialect, op, value)))
        return Condition(f"{column} {dialect.like} ? ESCAPE '\\'", (pattern,))

    return build


def _isnull(dialect: Dialect, column: str, value: Any) -> Condition:
    if not isinstance(value, bool):
        raise InvalidQuery(f"__isnull takes true or false, got {shown(value)}")
    return Condition(f"{column} IS NULL" if value else f"{column} IS NOT NULL")


# `like`, `startswith`, `endswith` and `contains` ignore the case of ASCII letters on both
# backends (SQLite's LIKE; PostgreSQL's ILIKE on COLLATE "C" text folds ASCII only).
OPERATORS: dict[str, Operator] = {
    "eq": _eq,
    "exact": _eq,
    "ne": _ne,
    "gt": _compare(">"),
    "gte": _compare(">="),
    "ge": _compare(">="),
    "lt": _compare("<"),
    "lte": _compare("<="),
    "le": _compare("<="),
    "in": _in,
    "notin": _notin,
    "not_in": _notin,
    "between": _between,
    "like": _like,
    "startswith": _pattern("startswith", lambda s: s + "%"),
    "endswith": _pattern("endswith", lambda s: "%" + s),
    "contains": _pattern("contains", lambda s: "%" + s + "%"),
    "isnull": _isnull,
}
