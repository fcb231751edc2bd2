"""The model base: sqlalchemy-mixins' everyday API (find, where, order_by, save, ...), async, over raw SQL.

Column names that come from callers (filters, ordering, values) are checked against the model's
declared columns before any SQL is built; values are always parameters. A bad name, operator or
value raises InvalidQuery, a DomainError the API answers with 400.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from server.errors import Conflict, InvalidInput, NotFound
from server.models.database import Database

IDENTIFIER_RE = re.compile(r"^[a-z][a-z0-9_]*$")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

M = TypeVar("M", bound="Model")


class InvalidQuery(InvalidInput):
    """An unknown column or operator, or a value SQLite cannot store or compare."""


class ModelNotFound(NotFound):
    """No row with that primary key (or it was deleted meanwhile)."""


def utc_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds: the text SQLite's strftime('%Y-%m-%dT%H:%M:%fZ', 'now') writes."""
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive datetimes are taken as UTC
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sql_value(value: Any) -> Any:
    """A Python value as SQLite stores it; raises InvalidQuery for what it cannot."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidQuery(f"integer {_shown(value)} does not fit in 64 bits")
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
        return value
    if isinstance(value, datetime):
        return utc_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    raise InvalidQuery(f"values of type {type(value).__name__} cannot be stored or compared")


def _quote(name: str) -> str:
    # Only declared, IDENTIFIER_RE-checked names ever get here; quoting keeps keywords usable.
    return f'"{name}"'


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class Condition:
    sql: str
    params: tuple[Any, ...] = ()


def _compare(symbol: str) -> Callable[[str, Any], Condition]:
    def build(column: str, value: Any) -> Condition:
        if value is None:
            raise InvalidQuery(f"{symbol} needs a value, not None (use __isnull)")
        return Condition(f"{column} {symbol} ?", (sql_value(value),))

    return build


def _eq(column: str, value: Any) -> Condition:
    if value is None:
        return Condition(f"{column} IS NULL")
    return Condition(f"{column} = ?", (sql_value(value),))


def _ne(column: str, value: Any) -> Condition:
    # IS NOT: NULL-safe, so rows whose column is NULL count as different.
    return Condition(f"{column} IS NOT ?", (sql_value(value),))


def _sequence(op: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidQuery(f"__{op} takes a list of values, got {_shown(value)}")
    return tuple(sql_value(v) for v in value)


def _in(column: str, value: Any) -> Condition:
    values = _sequence("in", value)
    if not values:
        return Condition("0")  # nothing is in an empty list
    return Condition(f"{column} IN ({', '.join('?' * len(values))})", values)


def _notin(column: str, value: Any) -> Condition:
    values = _sequence("notin", value)
    if not values:
        return Condition("1")
    return Condition(f"{column} NOT IN ({', '.join('?' * len(values))})", values)


def _between(column: str, value: Any) -> Condition:
    values = _sequence("between", value)
    if len(values) != 2 or None in values:
        raise InvalidQuery(f"__between takes [low, high], got {_shown(value)}")
    return Condition(f"{column} BETWEEN ? AND ?", values)


def _text(op: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidQuery(f"__{op} takes text, got {_shown(value)}")
    return sql_value(value)


def _like(column: str, value: Any) -> Condition:
    return Condition(f"{column} LIKE ?", (_text("like", value),))


def _pattern(op: str, make: Callable[[str], str]) -> Callable[[str, Any], Condition]:
    def build(column: str, value: Any) -> Condition:
        return Condition(f"{column} LIKE ? ESCAPE '\\'", (make(_escape_like(_text(op, value))),))

    return build


def _isnull(column: str, value: Any) -> Condition:
    if not isinstance(value, bool):
        raise InvalidQuery(f"__isnull takes true or false, got {_shown(value)}")
    return Condition(f"{column} IS NULL" if value else f"{column} IS NOT NULL")


# `like`, `startswith`, `endswith` and `contains` use SQLite's LIKE: ASCII letters match either case.
OPERATORS: dict[str, Callable[[str, Any], Condition]] = {
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


@dataclass(frozen=True, slots=True)
class Page(Generic[M]):
    items: list[M]
    total: int
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [item.to_dict() for item in self.items],
            "total": self.total,
            "limit": self.limit,
            "offset": self.offset,
        }


@dataclass(frozen=True, slots=True)
class Query(Generic[M]):
    """An immutable query: every method returns a new one; `all`, `first`, `count`, `page` run it."""

    model: type[M]
    db: Database
    conditions: tuple[Condition, ...] = ()
    ordering: tuple[str, ...] = ()
    limit_: int | None = field(default=None)
    offset_: int | None = field(default=None)

    def where(self, **filters: Any) -> Query[M]:
        """Also require `filters` (`column=value` or `column__operator=value`, all ANDed)."""
        extra = tuple(self.model._condition(key, value) for key, value in filters.items())
        return replace(self, conditions=self.conditions + extra)

    def order_by(self, *columns: str) -> Query[M]:
        """Order by these columns (`"name"`, `"-created_at"` for descending), after any earlier ordering."""
        return replace(self, ordering=self.ordering + tuple(self.model._order_term(c) for c in columns))

    def limit(self, count: int | None) -> Query[M]:
        return replace(self, limit_=None if count is None else _count("limit", count))

    def offset(self, count: int | None) -> Query[M]:
        return replace(self, offset_=None if count is None else _count("offset", count))

    def _where_sql(self) -> tuple[str, list[Any]]:
        params: list[Any] = []
        if not self.conditions:
            return "", params
        for condition in self.conditions:
            params.extend(condition.params)
        return " WHERE " + " AND ".join(f"({c.sql})" for c in self.conditions), params

    def _select_sql(self, select: str) -> tuple[str, list[Any]]:
        where, params = self._where_sql()
        sql = f"{select}{where}"
        if self.ordering:
            sql += " ORDER BY " + ", ".join(self.ordering)
        if self.limit_ is not None or self.offset_ is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if self.limit_ is None else self.limit_, self.offset_ or 0]
        return sql, params

    async def all(self) -> list[M]:
        sql, params = self._select_sql(self.model._select_all_sql)
        rows = await self.db.fetchall(sql, params)
        return [self.model._from_row(self.db, row) for row in rows]

    async def first(self) -> M | None:
        sql, params = self.limit(1)._select_sql(self.model._select_all_sql)
        row = await self.db.fetchone(sql, params)
        return None if row is None else self.model._from_row(self.db, row)

    async def count(self) -> int:
        """How many rows `all()` would return (limit and offset included)."""
        if self.limit_ is None and self.offset_ is None:
            where, params = self._where_sql()
            sql = f"SELECT COUNT(*) FROM {_quote(self.model.table)}{where}"
            return int(await self.db.fetchval(sql, params))
        sql, params = self._select_sql(f"SELECT 1 FROM {_quote(self.model.table)}")
        return int(await self.db.fetchval(f"SELECT COUNT(*) FROM ({sql})", params))

    async def page(self, limit: int, offset: int = 0) -> Page[M]:
        """One page of the results and the total number of matching rows."""
        total = await replace(self, limit_=None, offset_=None).count()
        items = await self.limit(limit).offset(offset).all()
        return Page(items=items, total=total, limit=limit, offset=offset)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT64_MAX:
        raise InvalidQuery(f"{name} must be a whole number from 0 to {INT64_MAX}, got {_shown(value)}")
    return value


class Model:
    """Base of the table models. A subclass declares its table and columns:

        class User(Model):
            table = "users"
            columns = ("id", "name", "created_at", "updated_at")
            created_column, updated_column = "created_at", "updated_at"
            id: int | None
            name: str

    Class methods take the Database; instances remember the one they came from.
    """

    table: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    primary_key: ClassVar[str] = "id"
    # Stamped with utc_timestamp() on insert (both) and on every update (updated_column).
    created_column: ClassVar[str | None] = None
    updated_column: ClassVar[str | None] = None
    repr_columns: ClassVar[tuple[str, ...]] = ()

    _column_set: ClassVar[frozenset[str]]
    _select_all_sql: ClassVar[str]
    _find_sql: ClassVar[str]
    _delete_sql: ClassVar[str]

    _db: Database | None
    # The values as last read from or written to the database; empty for a row not yet inserted.
    _saved: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "table" not in cls.__dict__:
            return  # an intermediate base without a table
        names = (cls.table, *cls.columns)
        for name in names:
            if not IDENTIFIER_RE.match(name) or "__" in name:
                raise TypeError(f"{cls.__name__}: {name!r} is not a lowercase identifier without '__'")
            if name in cls.columns and (name in dir(Model) or name in Model.__annotations__):
                raise TypeError(f"{cls.__name__}: column {name!r} would hide Model.{name}")
        named = (cls.primary_key, cls.created_column, cls.updated_column, *cls.repr_columns)
        extras = {name for name in named if name is not None}
        if not extras <= set(cls.columns):
            raise TypeError(f"{cls.__name__}: {sorted(extras - set(cls.columns))} are not declared columns")
        cls._column_set = frozenset(cls.columns)
        table = _quote(cls.table)
        cls._select_all_sql = f"SELECT {', '.join(map(_quote, cls.columns))} FROM {table}"
        cls._find_sql = f"{cls._select_all_sql} WHERE {_quote(cls.primary_key)} = ?"
        cls._delete_sql = f"DELETE FROM {table} WHERE {_quote(cls.primary_key)} = ?"

    def __init__(self, **values: Any) -> None:
        self._check_columns(values)
        for column in self.columns:
            setattr(self, column, values.get(column))
        self._db = None
        self._saved = {}

    # -- checking what callers pass -------------------------------------------------------------

    @classmethod
    def _known(cls) -> str:
        return ", ".join(cls.columns)

    @classmethod
    def _check_columns(cls, names: Iterable[str]) -> None:
        for name in names:
            if name not in cls._column_set:
                raise InvalidQuery(f"unknown column {_shown(name)} for {cls.table} (known: {cls._known()})")

    @classmethod
    def _condition(cls, key: str, value: Any) -> Condition:
        column, sep, op = key.partition("__")
        op = op if sep else "eq"
        cls._check_columns([column])
        build = OPERATORS.get(op)
        if build is None:
            raise InvalidQuery(f"unknown operator {_shown(op)} in {_shown(key)} (known: {', '.join(OPERATORS)})")
        return build(_quote(column), value)

    @classmethod
    def _order_term(cls, spec: str) -> str:
        if not isinstance(spec, str):
            raise InvalidQuery(f"order by takes column names, got {_shown(spec)}")
        direction = "DESC" if spec.startswith("-") else "ASC"
        column = spec[1:] if spec[:1] in ("-", "+") else spec
        cls._check_columns([column])
        return f"{_quote(column)} {direction}"

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def _from_row(cls, db: Database, row: Iterable[Any]) -> Self:
        obj = cls.__new__(cls)
        saved = dict(zip(cls.columns, row, strict=True))
        for column, value in saved.items():
            setattr(obj, column, value)
        obj._db = db
        obj._saved = saved
        return obj

    @classmethod
    def query(cls, db: Database) -> Query[Self]:
        """Every row, to narrow with `where`, `order_by`, `limit`, `offset`."""
        return Query(cls, db)

    @classmethod
    def where(cls, db: Database, **filters: Any) -> Query[Self]:
        """Rows matching every filter (`name="Asdf"`, `name__like="A%"`, ...); raises InvalidQuery."""
        return cls.query(db).where(**filters)

    @classmethod
    async def all(cls, db: Database) -> list[Self]:
        return await cls.query(db).all()

    @classmethod
    async def first(cls, db: Database) -> Self | None:
        """The row with the lowest primary key, or None."""
        return await cls.query(db).order_by(cls.primary_key).first()

    @classmethod
    async def count(cls, db: Database, **filters: Any) -> int:
        if not filters:  # the common case (foo counts users on every request): no query to build
            return int(await db.fetchval(f"SELECT COUNT(*) FROM {_quote(cls.table)}"))
        return await cls.where(db, **filters).count()

    @classmethod
    async def get_or_none(cls, db: Database, pk: Any) -> Self | None:
        """The row with this primary key, or None."""
        if isinstance(pk, int) and not isinstance(pk, bool) and not INT64_MIN <= pk <= INT64_MAX:
            return None  # no row can have it
        row = await db.fetchone(cls._find_sql, (sql_value(pk),))
        return None if row is None else cls._from_row(db, row)

    @classmethod
    async def find(cls, db: Database, pk: Any) -> Self:
        """The row with this primary key; raises ModelNotFound (404)."""
        found = await cls.get_or_none(db, pk)
        if found is None:
            raise ModelNotFound(f"no {cls.__name__.lower()} with {cls.primary_key} {_shown(pk)}")
        return found

    # -- writing --------------------------------------------------------------------------------

    @classmethod
    async def create(cls, db: Database, **values: Any) -> Self:
        """Insert a row (None values take the column's default); raises InvalidQuery, Conflict."""
        obj = cls(**values)
        await obj.save(db)
        return obj

    @classmethod
    async def destroy(cls, db: Database, *pks: Any) -> int:
        """Delete the rows with these primary keys, in one transaction; how many there were."""
        params = [sql_value(pk) for pk in pks]
        deleted = 0
        async with db.transaction() as tx:
            for param in params:
                cursor = await tx.execute(cls._delete_sql, (param,))
                deleted += cursor.rowcount
        return deleted

    def _bind(self, db: Database | None) -> Database:
        db = db or self._db
        if db is None:
            raise RuntimeError(f"{self!r} has no database: pass one to save()/delete() or use create()")
        self._db = db
        return db

    def changes(self) -> dict[str, Any]:
        """The columns whose values differ from what was last read or written."""
        return {c: getattr(self, c) for c in self.columns if c not in self._saved or getattr(self, c) != self._saved[c]}

    async def save(self, db: Database | None = None) -> None:
        """Insert the row when new, else write what changed; raises InvalidQuery, Conflict, ModelNotFound."""
        db = self._bind(db)
        if self._saved:
            await self._update(db, self.changes())
        else:
            await self._insert(db)

    async def update(self, **values: Any) -> None:
        """Set these columns and save; raises InvalidQuery, Conflict, ModelNotFound."""
        self._check_columns(values)
        for column, value in values.items():
            setattr(self, column, value)
        await self.save()

    async def delete(self, db: Database | None = None) -> None:
        """Delete the row; raises ModelNotFound when it is already gone."""
        db = self._bind(db)
        pk = self._saved.get(self.primary_key, getattr(self, self.primary_key))
        async with db.transaction() as tx:
            cursor = await tx.execute(self._delete_sql, (sql_value(pk),))
        if cursor.rowcount == 0:
            raise ModelNotFound(f"no {type(self).__name__.lower()} with {self.primary_key} {_shown(pk)}")
        self._saved = {}

    async def _insert(self, db: Database) -> None:
        values = {c: sql_value(getattr(self, c)) for c in self.columns}
        try:
            async with db.transaction() as tx:
                now = utc_timestamp()
                for stamp in (self.created_column, self.updated_column):
                    if stamp is not None and values[stamp] is None:
                        values[stamp] = now
                given = {c: v for c, v in values.items() if v is not None}
                if given:
                    names = ", ".join(map(_quote, given))
                    sql = f"INSERT INTO {_quote(self.table)} ({names}) VALUES ({', '.join('?' * len(given))})"
                else:
                    sql = f"INSERT INTO {_quote(self.table)} DEFAULT VALUES"
                cursor = await tx.execute(sql, tuple(given.values()))
                pk = given.get(self.primary_key, cursor.lastrowid)
                row: Iterable[Any] | None = None
                if len(given) < len(self.columns):  # read back the defaults SQLite filled in
                    row = await tx.fetchone(self._find_sql, (pk,))
        except sqlite3.IntegrityError as exc:
            raise self._constraint_error(exc) from None
        saved = dict(zip(self.columns, row, strict=True)) if row is not None else given
        for column, value in saved.items():
            setattr(self, column, value)
        self._saved = saved

    async def _update(self, db: Database, changes: dict[str, Any]) -> None:
        if not changes:
            return
        values = {c: sql_value(v) for c, v in changes.items()}
        pk = self._saved[self.primary_key]
        try:
            async with db.transaction() as tx:
                if self.updated_column is not None and self.updated_column not in values:
                    values[self.updated_column] = utc_timestamp()
                assignments = ", ".join(f"{_quote(c)} = ?" for c in values)
                sql = f"UPDATE {_quote(self.table)} SET {assignments} WHERE {_quote(self.primary_key)} = ?"
                cursor = await tx.execute(sql, (*values.values(), pk))
        except sqlite3.IntegrityError as exc:
            raise self._constraint_error(exc) from None
        if cursor.rowcount == 0:
            raise ModelNotFound(f"no {type(self).__name__.lower()} with {self.primary_key} {_shown(pk)}")
        for column, value in values.items():
            setattr(self, column, value)
        self._saved.update(values)

    def _constraint_error(self, exc: sqlite3.IntegrityError) -> InvalidInput | Conflict:
        message = str(exc)
        if message.startswith("UNIQUE constraint failed"):
            return Conflict(f"{self.table}: {message}")
        return InvalidQuery(f"{self.table}: {message}")

    # -- presenting -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in self.columns}

    def __repr__(self) -> str:
        shown = self.repr_columns or self.columns
        fields = " ".join(f"{c}={getattr(self, c, None)!r}" for c in shown)
        return f"<{type(self).__name__} {fields}>"
