"""A model's table as the query builder sees it: its columns, checked names, and the SQL built once."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.models.dialect import Dialect
from server.models.errors import InvalidQuery
from server.models.operators import OPERATORS, Condition
from server.models.values import shown

IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def quote(name: str) -> str:
    # Only declared, IDENTIFIER_RE-checked names ever get here; quoting keeps keywords usable.
    return f'"{name}"'


@dataclass(frozen=True, slots=True)
class Table:
    """Column names that come from callers (filters, ordering, values) are checked here before any SQL."""

    name: str
    columns: tuple[str, ...]
    primary_key: str = "id"
    # Columns that are never NULL: PostgreSQL then orders them without NULLS FIRST/LAST, so
    # an index on them still serves ORDER BY (the primary key is always one).
    not_null: frozenset[str] = frozenset()
    column_set: frozenset[str] = field(init=False)
    quoted: str = field(init=False)
    select_all_sql: str = field(init=False)
    count_sql: str = field(init=False)
    find_sql: str = field(init=False)
    delete_sql: str = field(init=False)
    returning_sql: str = field(init=False)

    def __post_init__(self) -> None:
        for name in (self.name, *self.columns):
            if not IDENTIFIER_RE.match(name) or "__" in name:
                raise TypeError(f"{name!r} is not a lowercase identifier without '__'")
        set_ = object.__setattr__  # a frozen dataclass filling its derived fields once
        set_(self, "column_set", frozenset(self.columns))
        table = quote(self.name)
        columns = ", ".join(map(quote, self.columns))
        set_(self, "quoted", table)
        set_(self, "select_all_sql", f"SELECT {columns} FROM {table}")
        set_(self, "count_sql", f"SELECT COUNT(*) FROM {table}")
        set_(self, "find_sql", f"{self.select_all_sql} WHERE {quote(self.primary_key)} = ?")
        set_(self, "delete_sql", f"DELETE FROM {table} WHERE {quote(self.primary_key)} = ?")
        set_(self, "returning_sql", f" RETURNING {columns}")

    def check_columns(self, names: Iterable[str]) -> None:
        """Raise InvalidQuery naming the first name that is not a declared column."""
        for name in names:
            if name not in self.column_set:
                raise InvalidQuery(f"unknown column {shown(name)} for {self.name} (known: {', '.join(self.columns)})")

    def condition(self, dialect: Dialect, key: str, value: Any) -> Condition:
        """One filter (`column` or `column__operator`) as SQL; raises InvalidQuery."""
        column, sep, op = key.partition("__")
        op = op if sep else "eq"
        self.check_columns([column])
        build = OPERATORS.get(op)
        if build is None:
            raise InvalidQuery(f"unknown operator {shown(op)} in {shown(key)} (known: {', '.join(OPERATORS)})")
        return build(dialect, quote(column), value)

    def order_term(self, dialect: Dialect, spec: Any) -> str:
        """`"name"` or `"-name"` as an ORDER BY term; raises InvalidQuery."""
        if not isinstance(spec, str):
            raise InvalidQuery(f"order by takes column names, got {shown(spec)}")
        descending = spec.startswith("-")
        column = spec[1:] if spec[:1] in ("-", "+") else spec
        self.check_columns([column])
        nullable = column != self.primary_key and column not in self.not_null
        return dialect.order_term(quote(column), descending, nullable=nullable)

    def insert_sql(self, names: Iterable[str]) -> str:
        """INSERT of these columns (or of the defaults only), returning every column."""
        names = list(names)
        if not names:
            return f"INSERT INTO {self.quoted} DEFAULT VALUES{self.returning_sql}"
        placeholders = ", ".join("?" * len(names))
        return f"INSERT INTO {self.quoted} ({', '.join(map(quote, names))}) VALUES ({placeholders}){self.returning_sql}"

    def update_sql(self, names: Iterable[str], *, never_back: str | None = None) -> str:
        """UPDATE of these columns of the row whose primary key is the last parameter, returning it.

        The column `never_back` (a timestamp the model stamps) takes its parameter only when that
        is later than what the row holds: concurrent writers commit in another order than they
        read their clocks (and hosts' clocks differ), and a row's updated_at must not go back.
        Its parameter is given twice.
        """

        def assign(column: str) -> str:
            q = quote(column)
            return f"{q} = CASE WHEN {q} > ? THEN {q} ELSE ? END" if column == never_back else f"{q} = ?"

        assignments = ", ".join(assign(c) for c in names)
        return f"UPDATE {self.quoted} SET {assignments} WHERE {quote(self.primary_key)} = ?{self.returning_sql}"
