"""What the ledger says: what is left under each rule, a team's spend, a user's history."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.admission import scope_charges, scope_sums, windows_of
from bot.config import WindowRule
from bot.job_rows import job_from_row
from bot.models import JobRecord
from bot.policy import Counted
from bot.policy_store import PolicyStore


@dataclass(frozen=True)
class RuleUse:
    """One rule of a scope: how much of it is used, what is left, when room next frees up."""

    counted: Counted
    rule: WindowRule
    dollars: bool
    used: float
    frees_at: float | None  # when the oldest charge in the window leaves it (None: nothing used)

    @property
    def left(self) -> float:
        """What can still be asked for in this window (never below zero)."""
        return max(0.0, self.rule.amount - self.used)


@dataclass(frozen=True)
class Spend:
    """Images and dollars charged to someone or something over a period."""

    key: str  # a user key, a channel id, a team id ("" for everything)
    images: int
    cost: float
    jobs: int = 0
    name: str = ""


@dataclass(frozen=True)
class TeamReport:
    """A team's spend over a period: the top users, each channel, the team and the whole bot."""

    since: float
    until: float
    users: tuple[Spend, ...]
    channels: tuple[Spend, ...]
    team: Spend
    everything: Spend


@dataclass(frozen=True)
class HistoryItem:
    """A job and the message that shows it (a platform message key), if one is linked."""

    job: JobRecord
    message_key: str | None


def month_start(now: float) -> float:
    """The start of the UTC month ``now`` falls in."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def day_start(now: float) -> float:
    """The start of the UTC day ``now`` falls in."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


class ReportStore(PolicyStore):
    """Reads for usage, reports and history; none of them writes."""

    async def rule_uses(self, scopes: Sequence[Counted], now: float | None = None) -> list[RuleUse]:
        """Every rule of ``scopes`` with what is used of it now."""
        now = time.time() if now is None else now
        uses: list[RuleUse] = []
        async with self._database.read() as db:
            for counted in scopes:
                if not counted.rules:
                    continue
                images, cost = await scope_sums(db, counted, now)
                charges = await scope_charges(db, counted, now - windows_of(counted)[-1])
                for rule in counted.rules.limits:
                    uses.append(_use(counted, rule, False, images[rule.seconds], charges, now))
                for rule in counted.rules.budgets:
                    uses.append(_use(counted, rule, True, cost[rule.seconds], charges, now))
        return uses

    async def spend(
        self,
        since: float,
        until: float,
        *,
        user_key: str | None = None,
        platform: str | None = None,
        team_id: str | None = None,
    ) -> Spend:
        """Charged images and dollars in [since, until) for a user, a team, or everything."""
        where, params = _where(since, until, user_key=user_key, platform=platform, team=team_id)
        rows = await self._fetch(
            "SELECT COALESCE(SUM(charged_images), 0), COALESCE(SUM(charged_cost), 0), "
            f"COUNT(*) FROM jobs WHERE {where}",
            params,
        )
        key = user_key or team_id or ""
        return Spend(key, int(rows[0][0]), float(rows[0][1]), int(rows[0][2]))

    async def team_report(
        self,
        since: float,
        until: float,
        *,
        platform: str | None = None,
        team_id: str | None = None,
        top: int = 10,
    ) -> TeamReport:
        """Spend in [since, until): top users and every channel of a team (or of everything)."""
        where, params = _where(since, until, platform=platform, team=team_id)
        users = await self._fetch(
            "SELECT user_key, MAX(display_name), SUM(charged_images) AS images, "
            f"SUM(charged_cost) AS cost, COUNT(*) FROM jobs WHERE {where} GROUP BY user_key "
            "HAVING SUM(charged_images) > 0 OR SUM(charged_cost) > 0 "
            "ORDER BY cost DESC, images DESC, user_key LIMIT ?",
            [*params, top],
        )
        channels = await self._fetch(
            "SELECT platform || ':' || channel_id, SUM(charged_images) AS images, "
            f"SUM(charged_cost) AS cost, COUNT(*) FROM jobs WHERE {where} AND channel_id <> '' "
            "GROUP BY platform, channel_id HAVING SUM(charged_images) > 0 OR SUM(charged_cost) > 0 "
            "ORDER BY cost DESC, images DESC",
            params,
        )
        team = await self.spend(since, until, platform=platform, team_id=team_id)
        everything = await self.spend(since, until)
        return TeamReport(
            since=since,
            until=until,
            users=tuple(Spend(r[0], int(r[2]), float(r[3]), int(r[4]), r[1] or "") for r in users),
            channels=tuple(Spend(r[0], int(r[1]), float(r[2]), int(r[3])) for r in channels),
            team=team,
            everything=everything,
        )

    async def history(self, user_key: str, limit: int = 10) -> list[HistoryItem]:
        """A user's newest jobs first, each with the first message linked to it."""
        rows = await self._fetch(
            "SELECT jobs.*, (SELECT message_id FROM message_links "
            "WHERE message_links.job_id = jobs.id LIMIT 1) AS message_key "
            "FROM jobs WHERE user_key = ? ORDER BY created_at DESC LIMIT ?",
            (user_key, limit),
        )
        return [HistoryItem(job_from_row(row), row["message_key"]) for row in rows]

    async def message_of(self, job_id: str) -> str | None:
        """The first message linked to a job, if any."""
        rows = await self._fetch(
            "SELECT message_id FROM message_links WHERE job_id = ? LIMIT 1", (job_id,)
        )
        return str(rows[0][0]) if rows else None

    async def jobs_between(
        self,
        since: float,
        until: float,
        *,
        user_key: str | None = None,
        platform: str | None = None,
        team_id: str | None = None,
    ) -> list[JobRecord]:
        """Every job created in [since, until), oldest first (for an export)."""
        where, params = _where(since, until, user_key=user_key, platform=platform, team=team_id)
        rows = await self._fetch(f"SELECT * FROM jobs WHERE {where} ORDER BY created_at", params)
        return [job_from_row(row) for row in rows]


def _use(
    counted: Counted,
    rule: WindowRule,
    dollars: bool,
    used: float,
    charges: Sequence[tuple[float, float, float]],
    now: float,
) -> RuleUse:
    start = now - rule.seconds
    inside = [t for t, images, cost in charges if t > start and (cost if dollars else images) > 0]
    frees_at = inside[0] + rule.seconds if inside and used > 0 else None
    return RuleUse(counted, rule, dollars, used, frees_at)


def _where(
    since: float,
    until: float,
    *,
    user_key: str | None = None,
    platform: str | None = None,
    team: str | None = None,
) -> tuple[str, list[object]]:
    where = "created_at >= ? AND created_at < ?"
    params: list[object] = [since, until]
    if user_key is not None:
        where += " AND user_key = ?"
        params.append(user_key)
    if platform is not None:
        where += " AND platform = ?"
        params.append(platform)
    if team is not None:
        where += " AND team_id = ?"
        params.append(team)
    return where, params
