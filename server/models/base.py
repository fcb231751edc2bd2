"""The model base: sqlalchemy-mixins' everyday API (find, where, order_by, save, ...), async, over raw SQL.

Column names that come from callers (filters, ordering, values) are checked against the model's
declared columns before any SQL is built; values are always parameters. A bad name, operator or
value raises InvalidQuery, a DomainError the API answers with 400. The same model runs on either
backend: what differs is asked of the database's dialect.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from server.models.database import Database, Row
from server.models.errors import InvalidQuery, ModelNotFound
from server.models.query import Query
from server.models.table import IDENTIFIER_RE, Table
from server.models.values import INT64_MAX, INT64_MIN, shown, utc_timestamp

__all__ = ["InvalidQuery", "Model", "ModelNotFound", "utc_timestamp"]


class Model:
    """Base of the table models. A subclass declares its table and columns:

        class User(Model):
            table = "users"
            columns = ("id", "name", "created_at", "updated_at")
            created_column, updated_column = "created_at", "updated_at"
            not_null = ("name", "created_at", "updated_at")
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
    # Columns the schema declares NOT NULL (ordering by them can use an index on PostgreSQL).
    not_null: ClassVar[tuple[str, ...]] = ()

    __table__: ClassVar[Table]

    _db: Database | None
    # The values as last read from or written to the database; empty for a row not yet inserted.
    _saved: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "table" not in cls.__dict__:
            return  # an intermediate base without a table
        for name in (cls.table, *cls.columns):
            if not IDENTIFIER_RE.match(name) or "__" in name:
                raise TypeError(f"{cls.__name__}: {name!r} is not a lowercase identifier without '__'")
            if name in cls.columns and (name in dir(Model) or name in Model.__annotations__):
                raise TypeError(f"{cls.__name__}: column {name!r} would hide Model.{name}")
        named = (cls.primary_key, cls.created_column, cls.updated_column, *cls.repr_columns, *cls.not_null)
        extras = {name for name in named if name is not None}
        if not extras <= set(cls.columns):
            raise TypeError(f"{cls.__name__}: {sorted(extras - set(cls.columns))} are not declared columns")
        cls.__table__ = Table(cls.table, cls.columns, cls.primary_key, frozenset(cls.not_null))

    def __init__(self, **values: Any) -> None:
        self.__table__.check_columns(values)
        for column in self.columns:
            setattr(self, column, values.get(column))
        self._db = None
        self._saved = {}

    # -- reading --------------------------------------------------------------------------------

    @classmethod
    def _from_row(cls, db: Database, row: Row) -> Self:
        # Every row of a page goes through here: filling __dict__ at once, not attribute by
        # attribute, halves its cost. The row is one of our SELECTs: the columns in order.
        obj = cls.__new__(cls)
        saved = dict(zip(cls.columns, row, strict=True))
        attributes = obj.__dict__
        attributes.update(saved)
        attributes["_db"] = db
        attributes["_saved"] = saved
        return obj

    @classmethod
    def query(cls, db: Database) -> Query[Self]:
        """Every row, to narrow with `where`, `order_by`, `limit`, `offset`."""
        return Query(cls.__table__, cls._from_row, db)

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
            return int(await db.fetchval(cls.__table__.count_sql))
        return await cls.where(db, **filters).count()

    @classmethod
    async def get_or_none(cls, db: Database, pk: Any) -> Self | None:
        """The row with this primary key, or None."""
        if isinstance(pk, int) and not isinstance(pk, bool) and not INT64_MIN <= pk <= INT64_MAX:
            return None  # no row can have it
        row = await db.fetchone(cls.__table__.find_sql, (db.dialect.value(pk),))
        return None if row is None else cls._from_row(db, row)

    @classmethod
    async def find(cls, db: Database, pk: Any) -> Self:
        """The row with this primary key; raises ModelNotFound (404)."""
        found = await cls.get_or_none(db, pk)
        if found is None:
            raise ModelNotFound(f"no {cls.__name__.lower()} with {cls.primary_key} {shown(pk)}")
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
        params = [db.dialect.value(pk) for pk in pks]
        deleted = 0
        async with db.transaction() as tx:
            for param in params:
                deleted += await tx.execute(cls.__table__.delete_sql, (param,))
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
        self.__table__.check_columns(values)
        for column, value in values.items():
            setattr(self, column, value)
        await self.save()

    async def delete(self, db: Database | None = None) -> None:
        """Delete the row; raises ModelNotFound when it is already gone."""
        db = self._bind(db)
        pk = self._saved.get(self.primary_key, getattr(self, self.primary_key))
        if await db.execute(self.__table__.delete_sql, (db.dialect.value(pk),)) == 0:
            raise ModelNotFound(f"no {type(self).__name__.lower()} with {self.primary_key} {shown(pk)}")
        self._saved = {}

    async def _insert(self, db: Database) -> None:
        values = {c: db.dialect.value(getattr(self, c)) for c in self.columns}
        now = utc_timestamp()
        for stamp in (self.created_column, self.updated_column):
            if stamp is not None and values[stamp] is None:
                values[stamp] = now
        given = {c: v for c, v in values.items() if v is not None}
        sql = self.__table__.insert_sql(given)
        after = None
        if self.primary_key in given:
            after = db.dialect.after_explicit_id_sql(self.__table__.quoted, self.primary_key)
        if after is None:
            rows = await db.execute_returning(sql, tuple(given.values()))
        else:
            async with db.transaction() as tx:
                rows = await tx.execute_returning(sql, tuple(given.values()))
                await tx.execute(after, (given[self.primary_key],))
        saved = dict(zip(self.columns, rows[0], strict=True))
        for column, value in saved.items():
            setattr(self, column, value)
        self._saved = saved

    async def _update(self, db: Database, changes: dict[str, Any]) -> None:
        if not changes:
            return
        values = {c: db.dialect.value(v) for c, v in changes.items()}
        pk = self._saved[self.primary_key]
        stamp = self.updated_column if self.updated_column not in values else None
        if stamp is not None:
            values[stamp] = utc_timestamp()
        sql = self.__table__.update_sql(values, never_back=stamp)
        params = [p for c, v in values.items() for p in ((v, v) if c == stamp else (v,))]
        rows = await db.execute_returning(sql, (*params, pk))
        if not rows:
            raise ModelNotFound(f"no {type(self).__name__.lower()} with {self.primary_key} {shown(pk)}")
        saved = dict(zip(self.columns, rows[0], strict=True))
        for column, value in saved.items():
            setattr(self, column, value)
        self._saved = saved

    # -- presenting -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        attributes = self.__dict__
        return {c: attributes[c] for c in self.columns}

    def __repr__(self) -> str:
        shown_columns = self.repr_columns or self.columns
        fields = " ".join(f"{c}={getattr(self, c, None)!r}" for c in shown_columns)
        return f"<{type(self).__name__} {fields}>"
