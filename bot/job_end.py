"""How a job that raised ends in the store: failed, refunded, with what the provider billed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.data_dir import DataDirFull
from bot.db import ERRORS as DB_ERRORS
from bot.errors import UserFacingError
from bot.models import ImageRequest
from bot.openai_errors import UnreadableAnswer
from bot.pricing import estimate_cost

if TYPE_CHECKING:
    from bot.store import Store

_END_ERRORS: tuple[type[Exception], ...] = (*DB_ERRORS, DataDirFull)
logger = logging.getLogger("bot.service")


def billed_cost(exc: UserFacingError, request: ImageRequest) -> float:
    """What the provider may have billed for a job that failed with ``exc`` (0 if nothing)."""
    if isinstance(exc, UnreadableAnswer):
        # A 200 whose body broke off was most likely made and billed; usage never arrived.
        return estimate_cost(request.options, len(request.sources), len(request.prompt))
    return float(getattr(exc, "cost_usd", 0.0))


async def record_failure(
    store: Store,
    job_id: str,
    error: str,
    *,
    cost_usd: float | None = None,
    cancelled_by: str | None = None,
) -> None:
    """End the job failed and refunded; a store that can't write it now retries it later."""
    try:
        await store.fail(job_id, error, cost_usd=cost_usd, cancelled_by=cancelled_by)
    except _END_ERRORS as exc:
        # The user still hears why; the store writes the ending again until it lands.
        logger.warning("could not record job %s as failed: %s", job_id, exc)
