"""The SQLite schema: numbered migrations (in ``user_version``), applied on open."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import aiosqlite

from bot.errors import ConfigError

# Written into the file header by migration 2, so another program's SQLite file is told apart.
APPLICATION_ID = 0x494D4742  # "IMGB"
CACHE_KIB = 65_536
CHECKPOINT_PAGES = 10_000


class ForeignDatabase(Exception):
    """The SQLite file holds another application's tables."""

    def __init__(self, tables: list[str]) -> None:
        super().__init__(", ".join(tables))
        self.tables = tables


# The bucket keys of a jobs row's scopes: "*" (everything), "u:<user key>",
# "t:<platform>:<team id>", "c:<platform>:<channel id>" (bot.admission.bucket_key writes the same).
BUCKET_SPANS = (86_400, 3_600)
_SPANS = " UNION ALL ".join(f"SELECT {span} AS span" for span in BUCKET_SPANS)


def _bucket_upsert(row: str, images: str, cost: str) -> str:
    """The trigger statements adding a charge to each of a row's scopes, per day and hour."""
    keys = (
        ("'*'", ""),
        (f"'u:' || {row}.user_key", ""),
        (f"'t:' || {row}.platform || ':' || {row}.team_id", f" AND {row}.team_id <> ''"),
        (f"'c:' || {row}.platform || ':' || {row}.channel_id", f" AND {row}.channel_id <> ''"),
    )
    # One statement per bucket: cheaper for SQLite than one INSERT ... SELECT over a join.
    # "WHERE true" tells its parser the ON CONFLICT belongs to the INSERT, not a join.
    return "\n".join(
        "INSERT INTO usage_buckets (scope, span, bucket, images, cost) "
        f"SELECT {key}, {span}, CAST({row}.created_at / {span} AS INTEGER), {images}, {cost} "
        f"WHERE true{where} ON CONFLICT (scope, span, bucket) DO UPDATE SET "
        "images = images + excluded.images, cost = cost + excluded.cost;"
        for key, where in keys
        for span in BUCKET_SPANS
    )


_CHARGED = "(charged_images <> 0 OR charged_cost <> 0)"
_CHARGES = " UNION ALL ".join(
    f"SELECT {key} AS scope, created_at, charged_images AS images, charged_cost AS cost "
    f"FROM jobs WHERE {_CHARGED}{where}"
    for key, where in (
        ("'*'", ""),
        ("'u:' || user_key", ""),
        ("'t:' || platform || ':' || team_id", " AND team_id <> ''"),
        ("'c:' || platform || ':' || channel_id", " AND channel_id <> ''"),
    )
)


# Each entry is one schema version; never edit a released entry, append a new one instead.
# Statements are listed one by one because sqlite3's executescript() commits any open
# transaction first, and the version check must share a transaction with the changes.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE jobs (
            id              TEXT PRIMARY KEY,
            user_key        TEXT NOT NULL,
            platform        TEXT NOT NULL,
            user_id         TEXT NOT NULL,
            team_id         TEXT NOT NULL DEFAULT '',
            channel_id      TEXT NOT NULL DEFAULT '',
            display_name    TEXT NOT NULL DEFAULT '',
            prompt          TEXT NOT NULL,
            options         TEXT NOT NULL,
            is_edit         INTEGER NOT NULL DEFAULT 0,
            parent_job_id   TEXT,
            source_count    INTEGER NOT NULL DEFAULT 0,
            status          TEXT NOT NULL CHECK (
                status IN ('queued', 'running', 'succeeded', 'failed', 'interrupted')),
            error           TEXT,
            created_at      REAL NOT NULL,
            started_at      REAL,
            finished_at     REAL,
            usage           TEXT,
            cost_usd        REAL NOT NULL DEFAULT 0,
            charged_images  INTEGER NOT NULL DEFAULT 0,
            charged_cost    REAL NOT NULL DEFAULT 0,
            platform_ref    TEXT NOT NULL DEFAULT '{}',
            request_id      TEXT
        )
        """,
        # Covering index: admission sums a user's charges without touching the table.
        """
        CREATE INDEX jobs_user_created
            ON jobs (user_key, created_at, charged_images, charged_cost)
        """,
        """
        CREATE TABLE job_images (
            job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            kind        TEXT NOT NULL CHECK (kind IN ('output', 'source', 'mask')),
            idx         INTEGER NOT NULL,
            path        TEXT NOT NULL,
            mime        TEXT NOT NULL,
            filename    TEXT NOT NULL DEFAULT '',
            width       INTEGER NOT NULL DEFAULT 0,
            height      INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (job_id, kind, idx)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE message_links (
            platform    TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            PRIMARY KEY (platform, message_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX message_links_job ON message_links (job_id)",
        """
        CREATE TABLE events (
            key      TEXT PRIMARY KEY,
            seen_at  REAL NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX events_seen ON events (seen_at)",
    ),
    (
        # Every open store is an owner; a job names the owner that runs it, so start-up
        # recovery can tell a live job of another process from one whose process is gone.
        """
        CREATE TABLE owners (
            id          TEXT PRIMARY KEY,
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL,
            pid_start   TEXT NOT NULL DEFAULT '',
            started_at  REAL NOT NULL,
            seen_at     REAL NOT NULL,
            released    INTEGER NOT NULL DEFAULT 0,
            locked      INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID
        """,
        "ALTER TABLE jobs ADD COLUMN owner_id TEXT",
        # 1 once the user was told the job was interrupted (or there is nobody to tell).
        "ALTER TABLE jobs ADD COLUMN announced INTEGER NOT NULL DEFAULT 0",
        # Interrupted before this version: the run that marked them already told their users.
        "UPDATE jobs SET announced = 1 WHERE status = 'interrupted'",
        "CREATE INDEX jobs_unfinished ON jobs (owner_id) WHERE status IN ('queued', 'running')",
        """
        CREATE INDEX jobs_unannounced ON jobs (created_at)
            WHERE status = 'interrupted' AND announced = 0
        """,
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (
        # Rules and channel defaults set at run time, on top of the settings' defaults.
        """
        CREATE TABLE policy (
            scope   TEXT NOT NULL CHECK (scope IN ('user', 'tier', 'channel', 'team', 'total')),
            target  TEXT NOT NULL,
            name    TEXT NOT NULL,
            value   TEXT NOT NULL,
            set_by  TEXT NOT NULL,
            set_at  REAL NOT NULL,
            PRIMARY KEY (scope, target, name)
        ) WITHOUT ROWID
        """,
        # Every change, never deleted; its largest id is the policy's version, so a process
        # sees another's change at its next admission.
        """
        CREATE TABLE policy_audit (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            at         REAL NOT NULL,
            actor      TEXT NOT NULL,
            scope      TEXT NOT NULL,
            target     TEXT NOT NULL,
            name       TEXT NOT NULL,
            old_value  TEXT,
            new_value  TEXT
        )
        """,
        # The jobs of an hour (where a window starts), the team report and exports read jobs by
        # time; a channel's or a team's are picked out of those.
        "CREATE INDEX jobs_created ON jobs (created_at, charged_images, charged_cost)",
        # Running totals of the jobs table's charges per scope (a user, a channel, a team,
        # everything) per day and per hour, kept by the triggers below inside each statement
        # that changes a charge, in every process. Admission adds up whole days and hours
        # instead of every job of a month; only the jobs of the hour a window starts in are
        # read one by one.
        """
        CREATE TABLE usage_buckets (
            scope   TEXT NOT NULL,
            span    INTEGER NOT NULL,
            bucket  INTEGER NOT NULL,
            images  INTEGER NOT NULL DEFAULT 0,
            cost    REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, span, bucket)
        ) WITHOUT ROWID
        """,
        f"""
        CREATE TRIGGER jobs_charge_added AFTER INSERT ON jobs
        WHEN NEW.charged_images <> 0 OR NEW.charged_cost <> 0
        BEGIN
            {_bucket_upsert("NEW", "NEW.charged_images", "NEW.charged_cost")}
        END
        """,
        f"""
        CREATE TRIGGER jobs_charge_changed AFTER UPDATE OF charged_images, charged_cost ON jobs
        WHEN NEW.charged_images <> OLD.charged_images OR NEW.charged_cost <> OLD.charged_cost
        BEGIN
            {
            _bucket_upsert(
                "NEW",
                "NEW.charged_images - OLD.charged_images",
                "NEW.charged_cost - OLD.charged_cost",
            )
        }
        END
        """,
        f"""
        CREATE TRIGGER jobs_charge_removed AFTER DELETE ON jobs
        WHEN OLD.charged_images <> 0 OR OLD.charged_cost <> 0
        BEGIN
            {_bucket_upsert("OLD", "-OLD.charged_images", "-OLD.charged_cost")}
        END
        """,
        # Jobs written before this version.
        f"""
        INSERT INTO usage_buckets (scope, span, bucket, images, cost)
        SELECT charges.scope, spans.span, CAST(charges.created_at / spans.span AS INTEGER)
               AS bucket, SUM(charges.images), SUM(charges.cost)
        FROM ({_CHARGES}) AS charges JOIN ({_SPANS}) AS spans
        GROUP BY charges.scope, spans.span, bucket
        """,
    ),
    (
        # A job its requester (or an admin) cancelled ends failed and refunded, naming them.
        "ALTER TABLE jobs ADD COLUMN cancelled_by TEXT",
    ),
    (
        # When the retention sweep removed the job's image folder; the row and charges stay.
        "ALTER TABLE jobs ADD COLUMN images_pruned_at REAL",
        # The IMAGINE_KEEP_IMAGES_DAYS that removed them; NULL: removed to fit IMAGINE_MAX_DATA_GB.
        "ALTER TABLE jobs ADD COLUMN images_kept_days REAL",
    ),
    (
        # Provider slots held across instances sharing one database (IMAGINE_MAX_CONCURRENCY
        # counted over all of them); a lease its instance stops renewing runs out.
        """
        CREATE TABLE slot_leases (
            job_id      TEXT PRIMARY KEY,
            owner_id    TEXT NOT NULL,
            expires_at  REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # 7: PostgreSQL's running totals and admission became faster (bot.pg_schema); the SQLite
    # file keeps its schema, so one version still means one schema on either engine.
    (),
)

SCHEMA_VERSION = len(MIGRATIONS)


async def configure(db: aiosqlite.Connection, busy_timeout_ms: int) -> None:
    """Set the connection up for several processes sharing the file (WAL, busy timeout)."""
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    # Turning a fresh file to WAL needs an exclusive lock, and SQLite answers "locked" at
    # once, without waiting, while another connection is opening the same new file.
    for attempt in range(1, 50):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            await asyncio.sleep(min(0.5, 0.01 * attempt))
    else:
        await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    # A month of a busy bot's jobs and their indexes fit: admission then never waits on reads.
    await db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    # Fewer, larger checkpoints: each admission's commit then only appends to the WAL (up to
    # about 40 MB of it between checkpoints).
    await db.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
    await db.execute("PRAGMA foreign_keys = ON")


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply the migrations the file lacks, all in one transaction; return the schema version."""
    try:
        # IMMEDIATE: two processes opening a fresh file at once must not both run migration 1.
        await db.execute("BEGIN IMMEDIATE")
        rows = list(await db.execute_fetchall("PRAGMA user_version"))
        current = int(rows[0][0])
        await _refuse_foreign(db, current)
        if current > SCHEMA_VERSION:
            raise ConfigError(
                "IMAGINE_DATA_DIR",
                f"the database was written by a newer imagine-bot (schema {current}, "
                f"this version knows {SCHEMA_VERSION}); upgrade imagine-bot",
            )
        for statements in MIGRATIONS[current:]:
            for statement in statements:
                await db.execute(statement)
        if current != SCHEMA_VERSION:
            # PRAGMA takes no bound parameters; the value is our own integer.
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


async def _refuse_foreign(db: aiosqlite.Connection, version: int) -> None:
    rows = list(await db.execute_fetchall("PRAGMA application_id"))
    application_id = int(rows[0][0])
    tables = [
        str(row[0])
        for row in await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    if application_id == APPLICATION_ID or not tables:
        return
    if application_id == 0 and version == 1 and "jobs" in tables:
        # Version 1 predates the application id: recognise it by its ledger columns.
        columns = {str(row[1]) for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
        if {"user_key", "charged_images", "charged_cost"} <= columns:
            return
    raise ForeignDatabase(tables)
