"""The users table."""

from __future__ import annotations

from typing import ClassVar

from server.models.base import Model


class User(Model):
    table: ClassVar[str] = "users"
    columns: ClassVar[tuple[str, ...]] = ("id", "name", "created_at", "updated_at")
    created_column: ClassVar[str | None] = "created_at"
    updated_column: ClassVar[str | None] = "updated_at"
    repr_columns: ClassVar[tuple[str, ...]] = ("id", "name")
    not_null: ClassVar[tuple[str, ...]] = ("name", "created_at", "updated_at")

    id: int | None
    name: str
    created_at: str | None
    updated_at: str | None
