"""``imagine-bot usage`` (periods, one team, the team report, CSV) and ``imagine-bot policy``."""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import cli
from bot.commands import Generate
from bot.errors import LimitExceeded
from bot.models import ImageOptions, ImageRequest, Requester
from bot.redact import LOG_FILTER
from bot.store import Store
from tests.core.store_kit import png, raw_rows, result
from tests.core.test_cli import imagine_bot
from tests.fakes.app_fixtures import AppFactory

ALICE = Requester("discord", "111", "1", "c1", "Alice")
ANNA = Requester("discord", "112", "1", "c2", "Anna")
FAR = Requester("discord", "113", "2", "c9", "Far away")
BOB = Requester("slack", "U222", "T1", "C1", "Bob")
AWKWARD = 'a fox, "red" and sly,\nthen a hen; 50% off\r\nend'


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@dataclass
class Seed:
    who: Requester
    when: float
    cost: float
    images: int = 1
    prompt: str = "a lighthouse in fog"


async def seed(data: Path, *jobs: Seed) -> list[str]:
    """Jobs that succeeded at the given times and costs; their ids."""
    store = await Store.open(data / "imagine.sqlite3")
    ids = []
    try:
        for job in jobs:
            options = ImageOptions(n=job.images, size="1024x1024", quality="low")
            admitted = await store.admit(
                ImageRequest(job.who, job.prompt, options), estimated_cost=job.cost, now=job.when
            )
            made = result(*(png(bytes([65 + i])) for i in range(job.images)))
            await store.finish(admitted.id, made, job.cost, now=job.when + 5)
            ids.append(admitted.id)
    finally:
        await store.close()
    return ids


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A data dir for in-process runs, with no settings from the developer's shell or .env."""
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGINE_", "DISCORD_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data"
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(folder))
    yield folder
    for handler in logging.getLogger().handlers:
        handler.removeFilter(LOG_FILTER)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def policy_rows(data: Path) -> list[tuple[object, ...]]:
    db = data / "imagine.sqlite3"
    return raw_rows(db, "SELECT * FROM policy ORDER BY scope, target, name") + raw_rows(
        db, "SELECT * FROM policy_audit ORDER BY id"
    )


# --- usage ------------------------------------------------------------------------------------


def test_csv_has_one_row_per_job_and_an_awkward_prompt_stays_one_field(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = asyncio.run(
        seed(
            data,
            Seed(ALICE, at("2026-10-05T09:30:00"), 0.25, images=2, prompt=AWKWARD),
            Seed(BOB, at("2026-10-06T12:00:00"), 0.5),
        )
    )
    code, out, err = run(capsys, "usage", "--csv", "--since", "2026-10-01", "--until", "2026-11-01")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == [
        *("id", "created_at", "platform", "team", "channel", "user", "status", "images"),
        *("charged_cost", "cost_usd", "size", "quality", "model", "prompt"),
    ]
    assert len(rows) == 3
    first, second = (dict(zip(rows[0], row, strict=True)) for row in rows[1:])
    assert first["id"] == ids[0]
    assert first["prompt"] == AWKWARD
    assert datetime.fromisoformat(first["created_at"]) == datetime(2026, 10, 5, 9, 30, tzinfo=UTC)
    assert (first["platform"], first["team"], first["channel"]) == ("discord", "1", "c1")
    assert (first["user"], first["status"], first["images"]) == ("discord:111", "succeeded", "2")
    assert float(first["charged_cost"]) == 0.25 and float(first["cost_usd"]) == 0.25
    assert (first["size"], first["quality"], first["model"]) == ("1024x1024", "low", "gpt-image-2")
    assert (second["id"], second["user"], second["team"]) == (ids[1], "slack:U222", "T1")


def test_csv_columns_are_explained_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["usage", "--help"])
    out = capsys.readouterr().out
    for column in ("charged_cost", "cost_usd", "created_at", "prompt", "channel"):
        assert f"\n  {column} " in out


def test_since_and_until_pick_the_period_and_team_picks_the_team(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(
        seed(
            data,
            Seed(ALICE, at("2026-09-30T23:59:59"), 1.0),  # before
            Seed(ALICE, at("2026-10-01T00:00:00"), 0.25),  # the first second is in
            Seed(ANNA, at("2026-10-15T10:00:00"), 0.5, images=2),
            Seed(FAR, at("2026-10-20T10:00:00"), 2.0),  # another server
            Seed(ALICE, at("2026-11-01T00:00:00"), 4.0),  # until is not included
        )
    )
    code, out, err = run(capsys, "usage", "--since", "2026-10-01", "--until", "2026-11-01")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Images and dollars from 2026-10-01 00:00 UTC until 2026-11-01")
    table = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert table == {
        "discord:113": ["1", "2.0000"],
        "discord:112": ["2", "0.5000"],
        "discord:111": ["1", "0.2500"],
    }

    code, out, _ = run(
        capsys, *("usage", "--since", "2026-10-01", "--until", "2026-11-01", "--team", "discord:1")
    )
    assert code == 0
    assert "discord:113" not in out
    assert {line.split()[0] for line in out.splitlines()[2:]} == {"discord:111", "discord:112"}

    code, out, _ = run(
        capsys, *("usage", "--csv", "--since", "2026-10-01T00:00:01", "--until", "2026-10-20")
    )
    users = [row[5] for row in csv.reader(io.StringIO(out))][1:]
    assert users == ["discord:112"]

    code, out, _ = run(capsys, "usage", "--user", "discord:111", "--until", "2026-10-02")
    assert code == 0
    assert out.splitlines()[0].startswith("Images and dollars from the start until 2026-10-02")
    assert out.splitlines()[2].split() == ["discord:111", "2", "1.2500"]


def test_report_lists_top_users_channels_and_totals_against_the_budgets(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_TEAM_BUDGET", "5/month")
    now = time.time() - 60
    asyncio.run(
        seed(
            data,
            Seed(ALICE, now, 0.25),
            Seed(ANNA, now, 0.5, images=2),
            Seed(ANNA, now, 0.25),
            Seed(FAR, now, 2.0),
        )
    )
    assert run(capsys, "policy", "set", "total", "limit", "100/month")[0] == 0
    code, out, err = run(capsys, "usage", "--report", "--team", "discord:1", "--since", "2026-01")
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    top = lines.index(["Top", "users:"])
    assert lines[top + 1] == ["1.", "discord:112", "(Anna)", "3", "images", "$0.75"]
    assert lines[top + 2] == ["2.", "discord:111", "(Alice)", "1", "image", "$0.25"]
    channels = lines.index(["Channels:"])
    assert lines[channels + 1] == ["discord:c2", "3", "images", "$0.75"]
    assert lines[channels + 2] == ["discord:c1", "1", "image", "$0.25"]
    assert "discord:113" not in out and "discord:c9" not in out
    assert "Team discord:1: 4 images, $1.00 (3 jobs)." in out
    assert "The whole bot: 5 images, $3.00 (4 jobs)." in out
    rules = [" ".join(line) for line in lines if line[:1] in (["team"], ["total"])]
    assert rules == [
        "team discord:1 budget $5/month $1.00 used, $4.00 left (IMAGINE_TEAM_BUDGET)",
        "total limit 100/month 5 used, 95 left (set at run time)",
    ]


async def test_a_bad_date_is_one_line_with_an_example_and_exit_2(tmp_path: Path) -> None:
    ran = await imagine_bot("usage", "--since", "2026-13-01", cwd=tmp_path)
    assert ran.code == 2
    said = ran.err.strip().splitlines()[-1]
    assert "--since: can't read '2026-13-01' as a date; write it like 2026-11-01" in said
    assert "Traceback" not in ran.err
    ran = await imagine_bot("usage", "--since", "2026-11-02", "--until", "2026-11-01", cwd=tmp_path)
    assert ran.code == 2
    assert ran.err.strip() == (
        "imagine-bot: --since (2026-11-02 00:00 UTC) must be before --until (2026-11-01 00:00 UTC)."
    )
    ran = await imagine_bot("usage", "--team", "discord", cwd=tmp_path)
    assert ran.code == 2
    assert "Write the team as discord:<server id> or slack:<workspace id>" in ran.err


# --- policy -----------------------------------------------------------------------------------


def test_policy_set_show_unset_and_log_round_trip_with_the_audit(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGINE_USER_LIMIT", "20/day")
    me = f"cli:{getpass.getuser()}"
    code, out, err = run(capsys, "policy", "set", "team", "slack:t1", "budget", "$5/day")
    assert code == 0, err
    assert out.startswith("Set team slack:T1 budget to $5/day (was the default).")
    assert run(capsys, "policy", "set", "total", "-", "budget", "100/month")[0] == 0
    assert run(capsys, "policy", "set", "channel", "discord:55", "quality", "LOW")[0] == 0
    code, out, _ = run(capsys, "policy", "set", "team", "slack:T1", "budget", "7/day")
    assert "(was $5/day)" in out

    code, out, _ = run(capsys, "policy", "show")
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert ["user", "limit", "20/day", "budget", "unlimited"] in lines
    assert ["total", "limit", "unlimited", "budget", "unlimited"] in lines
    header = lines.index(["scope", "target", "rule", "value", "set", "by", "when"])
    rows = lines[header + 1 :]
    assert [row[:5] for row in rows] == [
        ["channel", "discord:55", "quality", "low", me],
        ["team", "slack:T1", "budget", "$7/day", me],
        ["total", "-", "budget", "$100/month", me],
    ]
    assert all(row[-1] == "UTC" for row in rows)

    code, out, _ = run(capsys, "policy", "unset", "team", "slack:T1", "budgets")
    assert out.startswith("Removed team slack:T1 budget (was $7/day)")
    code, out, _ = run(capsys, "policy", "unset", "total", "budget")
    assert code == 0 and out.startswith("Removed the total budget")
    code, out, _ = run(capsys, "policy", "unset", "total", "budget")
    assert code == 0 and out.startswith("Nothing to remove")

    code, out, _ = run(capsys, "policy", "show")
    assert "slack:T1" not in out and "$100/month" not in out
    assert "discord:55" in out

    code, out, _ = run(capsys, "policy", "log")
    assert code == 0
    log = [line.split()[3:] for line in out.splitlines()[1:]]
    assert log == [
        [me, "total", "-", "budget", "$100/month", "default"],
        [me, "team", "slack:T1", "budget", "$7/day", "default"],
        [me, "team", "slack:T1", "budget", "$5/day", "$7/day"],
        [me, "channel", "discord:55", "quality", "default", "low"],
        [me, "total", "-", "budget", "default", "$100/month"],
        [me, "team", "slack:T1", "budget", "default", "$5/day"],
    ]
    code, out, _ = run(capsys, "policy", "log", "--limit", "2")
    assert len(out.splitlines()) == 3


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("set", "galaxy", "discord:1", "limit", "5/day"), "There is no scope called 'galaxy'"),
        (("set", "user", "discord:1", "limit", "5/fortnight"), "Can't use that limit: unknown"),
        (("set", "team", "discord:1", "budget", "-5/day"), "A budget can't be negative"),
        (("set", "user", "alice", "limit", "5/day"), "Write the user as discord:<user id>"),
        (("set", "channel", "cli:alice", "size", "auto"), "Write the channel as discord:"),
        (("set", "team", "discord:1", "size", "1024x1024"), "A team can't have a size rule"),
        (("set", "user", "discord:abc", "limit", "5/day"), "Discord ids are numbers"),
        (("set", "total", "discord:1", "budget", "5/day"), "The total has no target"),
        (("set", "user", "discord:1", "limit"), "Write it as imagine-bot policy set SCOPE"),
        (("set", "user"), "Write it as imagine-bot policy set SCOPE"),
        (("unset", "team", "discord:1", "colour"), "There is no rule called 'colour'"),
    ],
)
def test_bad_policy_input_is_one_line_and_changes_nothing(
    data: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], said: str
) -> None:
    assert run(capsys, "policy", "set", "team", "discord:1", "budget", "5/day")[0] == 0
    before = policy_rows(data)
    code, out, err = run(capsys, "policy", *argv)
    assert code == 1
    assert out == ""
    assert err.startswith(f"imagine-bot: {said}")
    assert len(err.strip().splitlines()) == 1
    assert policy_rows(data) == before


async def test_a_rule_set_from_the_shell_applies_to_a_running_services_next_admission(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app()
    first = await app.service.run(await app.service.prepare(Generate(ALICE, "one fox")))
    assert first.images
    ran = await imagine_bot("policy", "set", "user", "discord:111", "limit", "1/day", cwd=tmp_path)
    assert ran.code == 0, ran.err
    with pytest.raises(LimitExceeded):
        await app.service.run(await app.service.prepare(Generate(ALICE, "two foxes")))
    # Someone else in the same server still has room: the rule is Alice's alone.
    assert (await app.service.run(await app.service.prepare(Generate(ANNA, "a hen")))).images
    ran = await imagine_bot("policy", "log", cwd=tmp_path)
    assert f"cli:{getpass.getuser()}" in ran.out
