"""A team's admins see and change their own team's rules and jobs only."""

from __future__ import annotations

from pathlib import Path

from bot.config import load_settings
from bot.models import JobRecord, Requester
from bot.service import ImageService
from bot.spend_commands import AdminArgs, Asker, SpendCommands
from bot.store import Store
from tests.core.presenter_kit import PlainMarkup
from tests.core.store_kit import OpenStore, request


class Directory:
    """Every user, channel and tier named by a bare number exists, in the asker's team."""

    def __init__(self, team: str) -> None:
        self.team = team

    async def find_user(self, text: str) -> Requester | None:
        ident = text.strip("<@!>")
        return Requester("discord", ident, self.team, "c1") if ident.isdigit() else None

    async def find_channel(self, text: str) -> str | None:
        return text.strip("<#>") if text.strip("<#>").startswith(self.team) else None

    async def find_tier(self, text: str) -> str | None:
        return None

    def tier_name(self, tier_id: str) -> str:
        return tier_id

    def message_link(self, job: JobRecord, message_key: str) -> str | None:
        return None


def commands(service: ImageService, team: str) -> SpendCommands:
    return SpendCommands(service, PlainMarkup(), Directory(team))


async def test_another_teams_admin_neither_sees_nor_reaches_this_teams_rules_and_jobs(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store: Store = await open_store(tmp_path / "imagine.sqlite3")
    settings = load_settings(imagine_data_dir=tmp_path)
    service = ImageService(settings, store, provider=None)  # type: ignore[arg-type]
    g1_admin = Asker(Requester("discord", "1", "g1", "c1"), admin=True)
    g2_admin = Asker(Requester("discord", "2", "g2", "c2"), admin=True)

    done = await commands(service, "g1").admin(
        g1_admin, AdminArgs("set", "user", "<@5>", "blocked", "yes")
    )
    assert not done.refused, done.text
    # The block holds in g1 only.
    assert (await service.policy.standing(Requester("discord", "5", "g1", "c1"))).blocked
    assert not (await service.policy.standing(Requester("discord", "5", "g2", "c2"))).blocked

    theirs = await commands(service, "g2").admin(g2_admin, AdminArgs("log"))
    assert "blocked" not in theirs.text
    shown = await commands(service, "g2").admin(g2_admin, AdminArgs("show"))
    assert "blocked" not in shown.text
    mine = await commands(service, "g1").admin(g1_admin, AdminArgs("log"))
    assert "blocked" in mine.text

    job = await store.admit(request("5"), estimated_cost=0.04)  # a job of guild1
    other = await commands(service, "g2").history(g2_admin, job.id)
    assert other.refused and "someone else" in other.text
