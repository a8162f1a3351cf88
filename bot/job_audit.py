"""The audit trail: one greppable INFO line per finished job (no prompt, no secret)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.models import ImageRequest, JobResult

logger = logging.getLogger("bot.service")


class JobAudit:
    """The one INFO line an operator greps for when a job ends: who, what, cost, outcome."""

    def __init__(
        self, job_id: str, request: ImageRequest, started: float, clock: Callable[[], float]
    ) -> None:
        self._job_id = job_id
        self._request = request
        self._started = started
        self._clock = clock

    def log(
        self, outcome: str, *, reason: str = "", cost: float = 0.0, result: JobResult | None = None
    ) -> None:
        who = self._request.requester
        options = self._request.options
        fields: dict[str, object] = {
            "job": self._job_id,
            "outcome": outcome,
            "platform": who.platform,
            "team": who.team_id or "-",
            "channel": who.channel_id or "-",
            "user": who.user_id,
            "kind": "edit" if self._request.is_edit else "generate",
            "size": (result.size if result else None) or options.size,
            "quality": (result.quality if result else None) or options.quality,
            "n": options.n,
            "images": len(result.images) if result else 0,
            "cost": f"{result.cost_usd if result else cost:.4f}",
            "duration": f"{self._clock() - self._started:.1f}s",
        }
        if reason:
            fields["reason"] = reason
        # The context fields also reach a JSON log line as fields of their own.
        context = {
            "job_id": self._job_id,
            "platform": who.platform,
            "team": who.team_id,
            "channel": who.channel_id,
        }
        logger.info(
            "job finished %s",
            " ".join(f"{k}={_value(v)}" for k, v in fields.items()),
            extra=context,
        )


def _value(value: object) -> str:
    # Platform ids and OS user names rarely hold spaces; quote any that do, so fields split.
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "='\"" for c in text) else text
