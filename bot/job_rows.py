"""The jobs table as models: the columns a new job fills, and rows read back as records."""

from __future__ import annotations

import dataclasses
import functools
import json

from bot.db import Row
from bot.models import ImageOptions, ImageRequest, JobRecord, Requester, Usage

JOB_COLUMNS = (
    "id, user_key, platform, user_id, team_id, channel_id, display_name, prompt, options, "
    "is_edit, parent_job_id, source_count, status, created_at, charged_images, charged_cost, "
    "owner_id"
)
JOB_VALUES = ", ".join("?" * len(JOB_COLUMNS.split(",")))
# The same values typed, for INSERT ... SELECT: PostgreSQL can't tell a bare ``?``'s type there.
_JOB_TYPES = (
    *("TEXT",) * 9,
    *("INTEGER", "TEXT", "INTEGER", "TEXT", "DOUBLE PRECISION", "INTEGER", "DOUBLE PRECISION"),
    "TEXT",
)
JOB_CASTS = ", ".join(f"CAST(? AS {name})" for name in _JOB_TYPES)
INSERT_JOB = f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({JOB_VALUES})"
INSERT_IMAGE = (
    "INSERT INTO job_images (job_id, kind, idx, path, mime, filename, width, height) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(ImageOptions))
_USAGE_NAMES = frozenset(f.name for f in dataclasses.fields(Usage))


@functools.lru_cache(maxsize=256)
def _options_json(options: ImageOptions) -> str:
    # asdict() costs about as much as the rest of an admission; a bot sees few distinct options.
    return json.dumps(dataclasses.asdict(options))


def job_row(
    job_id: str, request: ImageRequest, now: float, cost: float, owner_id: str | None = None
) -> tuple[object, ...]:
    """The values of a new queued job, in ``INSERT_JOB``'s column order."""
    r = request.requester
    options = _options_json(request.options)
    return (
        *(job_id, r.key, r.platform, r.user_id, r.team_id, r.channel_id, r.display_name),
        *(request.prompt, options, int(request.is_edit), request.parent_job_id),
        *(len(request.sources), "queued", now, request.options.n, cost, owner_id),
    )


def job_from_row(row: Row) -> JobRecord:
    """A JobRecord from a ``SELECT * FROM jobs`` row (unknown JSON keys are ignored)."""
    requester = Requester(
        row["platform"], row["user_id"], row["team_id"], row["channel_id"], row["display_name"]
    )
    options = {k: v for k, v in json.loads(row["options"]).items() if k in _OPTION_NAMES}
    usage = None
    if row["usage"]:
        counts = json.loads(row["usage"]).items()
        usage = Usage(**{k: int(v) for k, v in counts if k in _USAGE_NAMES})
    return JobRecord(
        id=row["id"],
        requester=requester,
        prompt=row["prompt"],
        options=ImageOptions(**options),
        status=row["status"],
        created_at=row["created_at"],
        is_edit=bool(row["is_edit"]),
        parent_job_id=row["parent_job_id"],
        source_count=row["source_count"],
        error=row["error"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        usage=usage,
        cost_usd=row["cost_usd"],
        charged_images=row["charged_images"],
        platform_ref=json.loads(row["platform_ref"] or "{}"),
        charged_cost=row["charged_cost"],
        cancelled_by=row["cancelled_by"],
    )


def queued_record(job_id: str, request: ImageRequest, now: float) -> JobRecord:
    """The record of a job ``admit`` has just inserted."""
    return JobRecord(
        id=job_id,
        requester=request.requester,
        prompt=request.prompt,
        options=request.options,
        status="queued",
        created_at=now,
        is_edit=request.is_edit,
        parent_job_id=request.parent_job_id,
        source_count=len(request.sources),
        charged_images=request.options.n,
    )
