"""What the store tests share: a clock, requests, results and raw reads of the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bot.config import WindowRule, parse_rules
from bot.models import (
    GeneratedImage,
    ImageOptions,
    ImageRequest,
    JobRecord,
    ProviderResult,
    Requester,
    SourceImage,
    Usage,
)
from bot.store import Store

T0 = 1_750_000_000.0
HOUR = 3600.0
DAY = 86_400.0

OpenStore = Callable[[Path], Awaitable[Store]]


def request(
    user: str = "1",
    *,
    n: int = 1,
    prompt: str = "a lighthouse in fog",
    sources: tuple[SourceImage, ...] = (),
    mask: SourceImage | None = None,
    parent: str | None = None,
) -> ImageRequest:
    requester = Requester("discord", user, "guild1", "chan1", f"User {user}")
    return ImageRequest(requester, prompt, ImageOptions(n=n), sources, mask, parent)


def limits(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=True)


def budgets(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=False)


async def admit(
    store: Store,
    req: ImageRequest,
    now: float,
    *,
    limit: Sequence[WindowRule] = (),
    budget: Sequence[WindowRule] = (),
    cost: float = 0.04,
    exempt: bool = False,
) -> JobRecord:
    return await store.admit(
        req, limits=limit, budgets=budget, estimated_cost=cost, exempt=exempt, now=now
    )


def result(*datas: bytes, output_format: str = "png") -> ProviderResult:
    images = tuple(GeneratedImage(data, output_format) for data in datas)
    return ProviderResult(images, Usage(50, 4000, 4050), request_id="req_123")


def png(tag: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + tag * 100


def source(tag: bytes, name: str = "photo.png") -> SourceImage:
    return SourceImage(png(tag), name, "image/png", 640, 480)


def raw_rows(path: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()


async def query(store: Store, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    """Rows of ``sql`` (``?`` placeholders) read from the store's own database, either engine."""
    return [tuple(row) for row in await store.database.fetch(sql, params)]


async def table_names(store: Store) -> set[str]:
    """The names of the tables in the store's database (its schema, on PostgreSQL)."""
    if store.database.kind == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    return {str(row[0]) for row in await query(store, sql)}


async def schema_version(store: Store) -> int:
    """The schema version the store's database records (user_version, or imagine_schema)."""
    sql = (
        "PRAGMA user_version"
        if store.database.kind == "sqlite"
        else ("SELECT version FROM imagine_schema")
    )
    [(version,)] = await query(store, sql)
    assert isinstance(version, int)
    return version
