"""Two real ``imagine-bot run slack`` processes on one database, behind a test load balancer.

Both serve Slack's HTTP mode on their own port; the test decides which instance gets each
signed request, as an HTTP load balancer in front of them would. They share the data folder
(images, and on SQLite the database file) and, for PostgreSQL, one fresh schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.store import Store
from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.postgres import postgres_schema
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackCall
from tests.fakes.slack_steps import text_of

# A process needs a few seconds to import and start on a busy 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
READY_LINE = "Slack: listening for events on port"


@dataclass(frozen=True)
class SharedDb:
    """Where both instances keep their data: ``sqlite`` (one file) or ``postgresql`` (a schema)."""

    kind: str
    data_dir: Path
    database_url: str | None = None

    def settings(self) -> dict[str, str]:
        """The settings that point an instance at this database (images live in files)."""
        found = {"IMAGINE_DATA_DIR": str(self.data_dir)}
        if self.database_url is not None:
            found["IMAGINE_DATABASE_URL"] = self.database_url
        return found


SHARED_DB_PARAMS = ["sqlite", "postgresql"]


@pytest.fixture(params=SHARED_DB_PARAMS)
async def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SharedDb]:
    """One database for every instance of a test: a SQLite file, or a fresh PostgreSQL schema."""
    data_dir = tmp_path / "shared-data"
    if request.param == "sqlite":
        yield SharedDb("sqlite", data_dir)
        return
    async for url in postgres_schema():  # skips, with the reason, when no server answers
        yield SharedDb("postgresql", data_dir, url)


def free_port() -> int:
    """A TCP port nothing listens on now (IMAGINE_HTTP_PORT can't be 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Instance:
    """One running ``imagine-bot run slack`` and everything it wrote to stderr."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = asyncio.Event()
        self._readers = [
            asyncio.create_task(self._read(self.process.stderr, keep=True)),
            asyncio.create_task(self._read(self.process.stdout, keep=False)),
        ]

    @property
    def url(self) -> str:
        """Its Slack events URL: where the load balancer sends this instance's share."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def stderr(self) -> str:
        """Everything it logged so far."""
        return "".join(self.lines)

    async def _read(self, stream: asyncio.StreamReader | None, *, keep: bool) -> None:
        if stream is None:
            return
        while line := await stream.readline():
            if keep:
                self.lines.append(line.decode(errors="replace"))
            self._changed.set()
        self._changed.set()

    async def wait_log(self, text: str, timeout: float = START_TIMEOUT) -> None:  # noqa: ASYNC109
        """Wait until its stderr shows ``text``; fail with what it logged if it exits first."""

        async def seen() -> None:
            while text not in self.stderr:
                if self.process.returncode is not None or all(r.done() for r in self._readers):
                    raise AssertionError(
                        f"instance {self.name} ended before logging {text!r}:\n{self.stderr}"
                    )
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"instance {self.name} did not log {text!r} in {timeout}s:\n{self.stderr}"
            ) from None

    async def stop(self) -> int:
        """SIGTERM, as an orchestrator stops it; its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait()

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        if self.process.returncode is None:
            self.process.kill()

    async def wait(self) -> int:
        """Wait for it to exit and for its output to be read; its exit code."""
        code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        await asyncio.wait_for(asyncio.gather(*self._readers), STOP_TIMEOUT)
        return code


class Cluster:
    """Instances of the bot on one fake Slack, one fake OpenAI and one shared database."""

    def __init__(self, tmp_path: Path, slack: FakeSlack, openai: FakeOpenAI, db: SharedDb) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.openai = openai
        self.db = db
        self.instances: list[Instance] = []
        slack.mode = "http"

    def base_settings(self) -> dict[str, str]:
        """What every instance is given (each adds its own port)."""
        return {
            "OPENAI_API_KEY": self.openai.api_key,
            "OPENAI_BASE_URL": self.openai.base_url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "IMAGINE_PARTIAL_IMAGES": "0",
            **self.db.settings(),
        }

    async def start(self, *names: str, **settings: str) -> list[Instance]:
        """Start one instance per name (in parallel) and wait until each serves Slack."""
        started = await asyncio.gather(*(self._start(name, settings) for name in names))
        await asyncio.gather(*(instance.wait_log(READY_LINE) for instance in started))
        return list(started)

    async def _start(self, name: str, settings: dict[str, str]) -> Instance:
        cwd = self.tmp_path / f"instance-{name}"
        cwd.mkdir(exist_ok=True)
        port = free_port()
        process = await start_cli(
            "run",
            "slack",
            cwd=cwd,
            **{**self.base_settings(), "IMAGINE_HTTP_PORT": str(port), **settings},
        )
        instance = Instance(name, process, port)
        self.instances.append(instance)
        return instance

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every instance still running; exit codes by name (a killed one: -9)."""
        codes = await asyncio.gather(*(i.stop() for i in self.instances))
        return {i.name: code for i, code in zip(self.instances, codes, strict=True)}

    def assert_clean(self, codes: dict[str, int], *, killed: tuple[str, ...] = ()) -> None:
        """Each instance not killed exited 0, and none logged a Traceback."""
        for instance in self.instances:
            assert_clean_exit(instance, codes[instance.name], killed=instance.name in killed)

    async def aclose(self) -> None:
        """Kill whatever a failed test left running."""
        await kill_all(self.instances)


def assert_clean_exit(instance: Instance, code: int, *, killed: bool = False) -> None:
    """It exited 0 (unless it was killed) and never logged a Traceback."""
    if not killed:
        assert code == 0, f"{instance.name} exited {code}:\n{instance.stderr}"
    assert "Traceback" not in instance.stderr, f"{instance.name}:\n{instance.stderr}"


async def kill_all(instances: list[Instance]) -> None:
    """kill -9 whatever a failed test left running, and wait for each to go."""
    for instance in instances:
        instance.kill()
        with contextlib.suppress(Exception):
            await instance.wait()


async def assert_refunded_interruption(
    data_dir: Path, database_url: str | None, job_id: str
) -> None:
    """The shared database holds ``job_id`` as interrupted, with nothing charged."""
    store = await Store.open(data_dir / "imagine.sqlite3", database_url=database_url)
    try:
        job = await store.get_job(job_id)
        assert job is not None and job.status == "interrupted"
        assert job.charged_images == 0 and not job.charged_cost
    finally:
        await store.close()


@pytest.fixture
async def cluster(
    tmp_path: Path, slack_fake: FakeSlack, openai_fake: FakeOpenAI, shared_db: SharedDb
) -> AsyncIterator[Cluster]:
    """A cluster with no instance started yet (``await cluster.start("a", "b")``)."""
    # Two processes and their jobs in one minute: Slack's real limits would only slow it.
    slack_fake.rate_limits = False
    made = Cluster(tmp_path, slack_fake, openai_fake, shared_db)
    try:
        yield made
    finally:
        await made.aclose()


async def first_result(slack: FakeSlack, url: str, prompt: str) -> tuple[str, str]:
    """Send /imagine ``prompt`` to the instance at ``url``; its result's message ts and job id."""
    await slack.send_command(slack.command_payload(prompt), url=url)
    await slack.wait_until(lambda: bool(done_updates(slack, prompt)), timeout=START_TIMEOUT)
    done = done_updates(slack, prompt)[-1]
    return str(done.args["ts"]), button_job(done)


def finished_job(instance: Instance, job_id: str) -> bool:
    """True if ``instance`` logged the audit line of ``job_id``'s end (it ran that job)."""
    return f"job finished job={job_id} " in instance.stderr


def done_updates(slack: FakeSlack, prompt: str) -> list[SlackCall]:
    """The chat.update calls that showed a finished result of ``prompt``."""
    return [
        c for c in slack.calls_to("chat.update") if "done in" in text_of(c) and prompt in text_of(c)
    ]


def placeholders(slack: FakeSlack, prompt: str) -> list[SlackCall]:
    """The placeholders (chat.postMessage) posted for ``prompt``."""
    return [c for c in slack.calls_to("chat.postMessage") if prompt in text_of(c)]


def button_job(call: SlackCall) -> str:
    """The job id on a result's buttons."""
    actions = next(b for b in call.args["blocks"] if b["type"] == "actions")
    return str(actions["elements"][0]["value"])


def prompts(openai: FakeOpenAI) -> list[Any]:
    """The prompt of every image request the provider fake got, in order."""
    return [(r.json or {}).get("prompt") or (r.form or {}).get("prompt") for r in openai.requests]
