"""The PostgreSQL schema: the same numbered migrations as the SQLite file's, in PostgreSQL's words.

Entry N here makes the tables, columns and indexes that entry N of ``bot.migrations`` makes, so
one version number means one schema on either engine. The version lives in ``imagine_schema``;
tables in the schema without it belong to another application and are left alone.
"""

from __future__ import annotations

from bot.db import LOCK_NAMESPACE, MIGRATE_LOCK, WRITE_LOCK, PgConnection
from bot.errors import ConfigError
from bot.job_rows import JOB_COLUMNS
from bot.migrations import BUCKET_SPANS, SCHEMA_VERSION, ForeignDatabase

_SPANS = ", ".join(f"({span})" for span in BUCKET_SPANS)

# The running totals of migration 3, kept by one trigger function instead of three triggers.
_BUCKET_ADD = f"""
CREATE FUNCTION imagine_bucket_add(
    p_platform TEXT, p_user TEXT, p_team TEXT, p_channel TEXT, p_created DOUBLE PRECISION,
    p_images INTEGER, p_cost DOUBLE PRECISION
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_buckets (scope, span, bucket, images, cost)
    SELECT keys.scope, spans.span, floor(p_created / spans.span)::INTEGER, p_images, p_cost
    FROM (VALUES
            ('*'),
            ('u:' || p_user),
            (CASE WHEN p_team <> '' THEN 't:' || p_platform || ':' || p_team END),
            (CASE WHEN p_channel <> '' THEN 'c:' || p_platform || ':' || p_channel END)
         ) AS keys (scope)
    CROSS JOIN (VALUES {_SPANS}) AS spans (span)
    WHERE keys.scope IS NOT NULL
    ON CONFLICT (scope, span, bucket) DO UPDATE SET
        images = usage_buckets.images + excluded.images,
        cost = usage_buckets.cost + excluded.cost;
END
$$
"""
_JOBS_CHARGE = """
CREATE FUNCTION imagine_jobs_charge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.charged_images <> 0 OR OLD.charged_cost <> 0 THEN
            PERFORM imagine_bucket_add(OLD.platform, OLD.user_key, OLD.team_id, OLD.channel_id,
                OLD.created_at, -OLD.charged_images, -OLD.charged_cost);
        END IF;
        RETURN OLD;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.charged_images <> OLD.charged_images OR NEW.charged_cost <> OLD.charged_cost THEN
            PERFORM imagine_bucket_add(NEW.platform, NEW.user_key, NEW.team_id, NEW.channel_id,
                NEW.created_at, NEW.charged_images - OLD.charged_images,
                NEW.charged_cost - OLD.charged_cost);
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.charged_images <> 0 OR NEW.charged_cost <> 0 THEN
        PERFORM imagine_bucket_add(NEW.platform, NEW.user_key, NEW.team_id, NEW.channel_id,
            NEW.created_at, NEW.charged_images, NEW.charged_cost);
    END IF;
    RETURN NEW;
END
$$
"""
_CHARGES = " UNION ALL ".join(
    f"SELECT {key} AS scope, created_at, charged_images AS images, charged_cost AS cost "
    f"FROM jobs WHERE (charged_images <> 0 OR charged_cost <> 0){where}"
    for key, where in (
        ("'*'", ""),
        ("'u:' || user_key", ""),
        ("'t:' || platform || ':' || team_id", " AND team_id <> ''"),
        ("'c:' || platform || ':' || channel_id", " AND channel_id <> ''"),
    )
)

# Admission in one call: take the writers' lock, sum every checked scope and window from the
# running totals (whole days, the hours of the day a window starts in, the jobs of the hour it
# starts in), and add the job only if nothing would break. Each statement of a VOLATILE
# function reads a fresh snapshot, so the sums see every admission committed before the lock
# was granted; the lock is held only while the server works, never across a round trip.
# One row per (scope, window) check: ``max_images`` / ``max_cost`` NULL where not limited.
_EDGE = " UNION ALL ".join(
    "SELECT charged_images AS images, charged_cost AS cost FROM jobs "
    f"WHERE c.kind = '{kind}'{where} AND created_at > c.start_at AND created_at < c.hour_end"
    for kind, where in (
        ("user", " AND user_key = c.a"),
        ("channel", " AND platform = c.a AND channel_id = c.b"),
        ("team", " AND platform = c.a AND team_id = c.b"),
        ("total", ""),
    )
)
_ADMIT = f"""
CREATE FUNCTION imagine_admit(
    j_id TEXT, j_user_key TEXT, j_platform TEXT, j_user_id TEXT, j_team_id TEXT,
    j_channel_id TEXT, j_display_name TEXT, j_prompt TEXT, j_options TEXT, j_is_edit INTEGER,
    j_parent_job_id TEXT, j_source_count INTEGER, j_status TEXT, j_created_at DOUBLE PRECISION,
    j_charged_images INTEGER, j_charged_cost DOUBLE PRECISION, j_owner_id TEXT,
    c_key TEXT[], c_kind TEXT[], c_a TEXT[], c_b TEXT[], c_first_day INTEGER[],
    c_first_hour INTEGER[], c_day_end_hour INTEGER[], c_start_at DOUBLE PRECISION[],
    c_hour_end DOUBLE PRECISION[], c_max_images DOUBLE PRECISION[],
    c_max_cost DOUBLE PRECISION[]
) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({LOCK_NAMESPACE}, {WRITE_LOCK});
    IF EXISTS (
        SELECT 1
        FROM unnest(c_key, c_kind, c_a, c_b, c_first_day, c_first_hour, c_day_end_hour,
                    c_start_at, c_hour_end, c_max_images, c_max_cost)
             AS c (key, kind, a, b, first_day, first_hour, day_end_hour, start_at, hour_end,
                   max_images, max_cost)
        CROSS JOIN LATERAL (
            SELECT COALESCE(SUM(u.images), 0) AS images, COALESCE(SUM(u.cost), 0) AS cost
            FROM usage_buckets AS u
            WHERE u.scope = c.key AND (
                (u.span = {BUCKET_SPANS[0]} AND u.bucket > c.first_day)
                OR (u.span = {BUCKET_SPANS[1]} AND u.bucket > c.first_hour
                    AND u.bucket < c.day_end_hour))
        ) AS totals
        CROSS JOIN LATERAL (
            SELECT COALESCE(SUM(e.images), 0) AS images, COALESCE(SUM(e.cost), 0) AS cost
            FROM ({_EDGE}) AS e
        ) AS edge
        WHERE (c.max_images IS NOT NULL
               AND totals.images + edge.images + j_charged_images > c.max_images)
           OR (c.max_cost IS NOT NULL
               AND totals.cost + edge.cost + j_charged_cost > c.max_cost)
    ) THEN
        RETURN FALSE;
    END IF;
    INSERT INTO jobs ({JOB_COLUMNS}) VALUES (
        j_id, j_user_key, j_platform, j_user_id, j_team_id, j_channel_id, j_display_name,
        j_prompt, j_options, j_is_edit, j_parent_job_id, j_source_count, j_status,
        j_created_at, j_charged_images, j_charged_cost, j_owner_id);
    RETURN TRUE;
END
$$
"""


def _bucket_upsert(row: str, images: str, cost: str) -> str:
    """One statement adding a charge to each of a row's scopes, per day and hour (plpgsql)."""
    return f"""
        INSERT INTO usage_buckets (scope, span, bucket, images, cost)
        SELECT keys.scope, spans.span, floor({row}.created_at / spans.span)::INTEGER,
               {images}, {cost}
        FROM (VALUES
                ('*'),
                ('u:' || {row}.user_key),
                (CASE WHEN {row}.team_id <> '' THEN 't:' || {row}.platform || ':' || {row}.team_id
                 END),
                (CASE WHEN {row}.channel_id <> ''
                      THEN 'c:' || {row}.platform || ':' || {row}.channel_id END)
             ) AS keys (scope)
        CROSS JOIN (VALUES {_SPANS}) AS spans (span)
        WHERE keys.scope IS NOT NULL
        ON CONFLICT (scope, span, bucket) DO UPDATE SET
            images = usage_buckets.images + excluded.images,
            cost = usage_buckets.cost + excluded.cost;"""


# Migration 7: the trigger adds the charge itself. A call of imagine_bucket_add from it cost
# a third of a millisecond per admission, inside the writers' lock.
_CHANGED_UPSERT = _bucket_upsert(
    "NEW", "NEW.charged_images - OLD.charged_images", "NEW.charged_cost - OLD.charged_cost"
)
_JOBS_CHARGE_INLINE = f"""
CREATE OR REPLACE FUNCTION imagine_jobs_charge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.charged_images <> 0 OR OLD.charged_cost <> 0 THEN
            {_bucket_upsert("OLD", "-OLD.charged_images", "-OLD.charged_cost")}
        END IF;
        RETURN OLD;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.charged_images <> OLD.charged_images OR NEW.charged_cost <> OLD.charged_cost THEN
            {_CHANGED_UPSERT}
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.charged_images <> 0 OR NEW.charged_cost <> 0 THEN
        {_bucket_upsert("NEW", "NEW.charged_images", "NEW.charged_cost")}
    END IF;
    RETURN NEW;
END
$$
"""
# And the day and hour totals of a scope are read as two index ranges, not one bitmap scan.
_DAY_HOUR_OR = f"""            FROM usage_buckets AS u
            WHERE u.scope = c.key AND (
                (u.span = {BUCKET_SPANS[0]} AND u.bucket > c.first_day)
                OR (u.span = {BUCKET_SPANS[1]} AND u.bucket > c.first_hour
                    AND u.bucket < c.day_end_hour))"""
_DAY_HOUR_RANGES = f"""            FROM (
                SELECT images, cost FROM usage_buckets
                WHERE scope = c.key AND span = {BUCKET_SPANS[0]} AND bucket > c.first_day
                UNION ALL
                SELECT images, cost FROM usage_buckets
                WHERE scope = c.key AND span = {BUCKET_SPANS[1]} AND bucket > c.first_hour
                      AND bucket < c.day_end_hour
            ) AS u"""
assert _DAY_HOUR_OR in _ADMIT
# Its statements get one generic plan each, made once per connection: a custom plan, made
# again on every call for the values of the day, cost half a millisecond inside the lock.
_ADMIT_RANGES = (
    _ADMIT.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    .replace(_DAY_HOUR_OR, _DAY_HOUR_RANGES)
    .replace("VOLATILE AS $$", "VOLATILE SET plan_cache_mode = force_generic_plan AS $$", 1)
)
assert "force_generic_plan" in _ADMIT_RANGES


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
            created_at      DOUBLE PRECISION NOT NULL,
            started_at      DOUBLE PRECISION,
            finished_at     DOUBLE PRECISION,
            usage           TEXT,
            cost_usd        DOUBLE PRECISION NOT NULL DEFAULT 0,
            charged_images  INTEGER NOT NULL DEFAULT 0,
            charged_cost    DOUBLE PRECISION NOT NULL DEFAULT 0,
            platform_ref    TEXT NOT NULL DEFAULT '{}',
            request_id      TEXT
        )
        """,
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
        )
        """,
        """
        CREATE TABLE message_links (
            platform    TEXT NOT NULL,
            message_id  TEXT NOT NULL,
            job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            PRIMARY KEY (platform, message_id)
        )
        """,
        "CREATE INDEX message_links_job ON message_links (job_id)",
        "CREATE TABLE events (key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX events_seen ON events (seen_at)",
    ),
    (
        """
        CREATE TABLE owners (
            id          TEXT PRIMARY KEY,
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL,
            pid_start   TEXT NOT NULL DEFAULT '',
            started_at  DOUBLE PRECISION NOT NULL,
            seen_at     DOUBLE PRECISION NOT NULL,
            released    INTEGER NOT NULL DEFAULT 0,
            locked      INTEGER NOT NULL DEFAULT 0
        )
        """,
        "ALTER TABLE jobs ADD COLUMN owner_id TEXT",
        "ALTER TABLE jobs ADD COLUMN announced INTEGER NOT NULL DEFAULT 0",
        "UPDATE jobs SET announced = 1 WHERE status = 'interrupted'",
        "CREATE INDEX jobs_unfinished ON jobs (owner_id) WHERE status IN ('queued', 'running')",
        """
        CREATE INDEX jobs_unannounced ON jobs (created_at)
            WHERE status = 'interrupted' AND announced = 0
        """,
    ),
    (
        """
        CREATE TABLE policy (
            scope   TEXT NOT NULL CHECK (scope IN ('user', 'tier', 'channel', 'team', 'total')),
            target  TEXT NOT NULL,
            name    TEXT NOT NULL,
            value   TEXT NOT NULL,
            set_by  TEXT NOT NULL,
            set_at  DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (scope, target, name)
        )
        """,
        """
        CREATE TABLE policy_audit (
            id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at         DOUBLE PRECISION NOT NULL,
            actor      TEXT NOT NULL,
            scope      TEXT NOT NULL,
            target     TEXT NOT NULL,
            name       TEXT NOT NULL,
            old_value  TEXT,
            new_value  TEXT
        )
        """,
        "CREATE INDEX jobs_created ON jobs (created_at, charged_images, charged_cost)",
        """
        CREATE TABLE usage_buckets (
            scope   TEXT NOT NULL,
            span    INTEGER NOT NULL,
            bucket  INTEGER NOT NULL,
            images  INTEGER NOT NULL DEFAULT 0,
            cost    DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, span, bucket)
        )
        """,
        _BUCKET_ADD,
        _JOBS_CHARGE,
        """
        CREATE TRIGGER jobs_charge
            AFTER INSERT OR DELETE OR UPDATE OF charged_images, charged_cost ON jobs
            FOR EACH ROW EXECUTE FUNCTION imagine_jobs_charge()
        """,
        f"""
        INSERT INTO usage_buckets (scope, span, bucket, images, cost)
        SELECT charges.scope, spans.span, floor(charges.created_at / spans.span)::INTEGER
               AS bucket, SUM(charges.images), SUM(charges.cost)
        FROM ({_CHARGES}) AS charges CROSS JOIN (VALUES {_SPANS}) AS spans (span)
        GROUP BY charges.scope, spans.span, bucket
        """,
    ),
    ("ALTER TABLE jobs ADD COLUMN cancelled_by TEXT",),
    (
        "ALTER TABLE jobs ADD COLUMN images_pruned_at DOUBLE PRECISION",
        "ALTER TABLE jobs ADD COLUMN images_kept_days DOUBLE PRECISION",
    ),
    (
        """
        CREATE TABLE slot_leases (
            job_id      TEXT PRIMARY KEY,
            owner_id    TEXT NOT NULL,
            expires_at  DOUBLE PRECISION NOT NULL
        )
        """,
        # imagine_admit's plans are generic (made once per connection, for any window), so
        # each scope's jobs of a window's first hour need an index of their own to be found
        # without reading the whole table.
        "CREATE INDEX jobs_channel_created ON jobs (platform, channel_id, created_at)",
        "CREATE INDEX jobs_team_created ON jobs (platform, team_id, created_at)",
        # Each admission rewrites the same few running-total rows (today's, this hour's for
        # the total, the team, the channel). Room on each page keeps those updates on the
        # page (HOT: no new index entries, old versions pruned as the page is read), and
        # vacuum comes often instead of after a fifth of the table changed.
        """
        ALTER TABLE usage_buckets SET (
            fillfactor = 50,
            autovacuum_vacuum_scale_factor = 0,
            autovacuum_vacuum_threshold = 2000,
            autovacuum_analyze_scale_factor = 0.05
        )
        """,
        _ADMIT,
    ),
    (_JOBS_CHARGE_INLINE, "DROP FUNCTION imagine_bucket_add", _ADMIT_RANGES),
)

assert len(MIGRATIONS) == SCHEMA_VERSION, "every schema version needs its PostgreSQL entry"


async def migrate(conn: PgConnection) -> int:
    """Apply the migrations the database lacks, in one transaction; return the schema version.

    Instances starting at once take turns on an advisory lock, so only one applies each step.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, MIGRATE_LOCK)
        if await conn.fetchval("SELECT current_schema()") is None:
            path = await conn.fetchval("SHOW search_path")
            raise ConfigError(
                "IMAGINE_DATABASE_URL",
                f"no schema of its search_path ({path}) exists in that database; create it "
                "(CREATE SCHEMA ...) or leave search_path out",
            )
        tables = {
            str(row[0])
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema()"
            )
        }
        if tables and "imagine_schema" not in tables:
            raise ForeignDatabase(sorted(tables))
        if "imagine_schema" not in tables:
            await conn.execute("CREATE TABLE imagine_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO imagine_schema (version) VALUES (0)")
        current = int(await conn.fetchval("SELECT version FROM imagine_schema"))
        if current > SCHEMA_VERSION:
            raise ConfigError(
                "IMAGINE_DATABASE_URL",
                f"the database was written by a newer imagine-bot (schema {current}, "
                f"this version knows {SCHEMA_VERSION}); upgrade imagine-bot",
            )
        for statements in MIGRATIONS[current:]:
            for statement in statements:
                await conn.execute(statement)
        if current != SCHEMA_VERSION:
            await conn.execute("UPDATE imagine_schema SET version = $1", SCHEMA_VERSION)
    return SCHEMA_VERSION
