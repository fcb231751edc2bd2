"""FastAPI on uvicorn (uvloop, httptools) as a peer, doing foo's and bar's work.

    BENCH_DB=bench.db bench/.peers-venv/bin/uvicorn --app-dir bench/peers fastapi_app:app

Runs from bench/.peers-venv only. The way FastAPI is written: bar's schema as Pydantic models
(strict, so "1.5" is no number, as in the JSON Schema), answers with declared return types (FastAPI
then serializes through Pydantic, its fast path), foo's count on one aiosqlite connection.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import aiosqlite
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"
state: dict[str, aiosqlite.Connection] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state["db"] = await aiosqlite.connect(os.environ["BENCH_DB"])
    yield
    await state["db"].close()


app = FastAPI(lifespan=lifespan)


class Health(BaseModel):
    status: str


class Foo(BaseModel):
    hello: str
    count: int
    version: int


class Item(BaseModel):
    model_config = ConfigDict(strict=True)
    color: str
    size: float | None = None


class Bar(BaseModel):
    model_config = ConfigDict(strict=True)
    hello: str
    world: Annotated[list[Item], Field(min_length=1)]


class BarResult(BaseModel):
    hello: str
    count: int
    data: list[str]


@app.get("/healthz")
async def get_healthz() -> Health:
    return Health(status="ok")


@app.get("/api/v1/foo")
async def get_foo() -> Foo:
    async with state["db"].execute(COUNT_USERS_SQL) as cursor:
        (count,) = await cursor.fetchone()
    return Foo(hello="world", count=count, version=1)


@app.post("/api/v1/bar")
async def post_bar(body: Bar) -> BarResult:
    colors = [item.color for item in body.world]
    return BarResult(hello="world", count=len(colors), data=colors)
