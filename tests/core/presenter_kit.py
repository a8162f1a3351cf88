"""A small Presenter that records what ``run_job`` asked it to show, for the core tests."""

from __future__ import annotations

import asyncio

from bot import texts
from bot.commands import MessageRef
from bot.models import JobResult
from bot.presenting import Failure, JobView, Links


class PlainMarkup:
    """Markup that leaves marks a test can see."""

    invite_hint = "Invite me back, then try again."

    def code(self, text: str) -> str:
        return f"`{text}`"

    def relative(self, epoch: float) -> str:
        return f"<in {epoch:.0f}>"

    def clock(self, epoch: float) -> str:
        return f"<at {epoch:.0f}>"

    def mention(self, user_id: str) -> str:
        return f"@{user_id}"

    def channel(self, channel_id: str) -> str:
        return f"#{channel_id}"

    def bold(self, text: str) -> str:
        return f"*{text}*"

    def link(self, url: str, label: str) -> str:
        return f"[{label}]({url})"

    def escape(self, text: str) -> str:
        return text


class Recording:
    """Opens, shows and fails by recording; ``open_error`` / ``result_error`` are raised."""

    platform = "Testchat"

    def __init__(self) -> None:
        self.markup: texts.Markup = PlainMarkup()
        self.calls: list[str] = []
        self.views: list[JobView] = []
        self.failures: list[Failure] = []
        self.results: list[JobResult] = []
        self.open_error: Exception | None = None
        self.result_error: Exception | None = None
        self.opened = asyncio.Event()

    @staticmethod
    def progress_ref(job_id: str) -> MessageRef:
        return MessageRef("test", f"progress:{job_id}")

    @staticmethod
    def result_ref(job_id: str) -> MessageRef:
        return MessageRef("test", f"result:{job_id}")

    async def open(self, view: JobView, links: Links) -> None:
        self.calls.append("open")
        self.views.append(view)
        self.opened.set()
        if self.open_error is not None:
            raise self.open_error
        assert view.job_id is not None
        await links.link(self.progress_ref(view.job_id))
        await links.record({"channel": "C1", "message": f"progress:{view.job_id}"})

    async def show(self, view: JobView) -> bool:
        self.calls.append("show")
        self.views.append(view)
        return True

    async def show_result(self, result: JobResult, links: Links) -> None:
        self.calls.append("result")
        self.results.append(result)
        if self.result_error is not None:
            raise self.result_error
        await links.link(self.result_ref(result.job_id))

    async def show_failure(self, failure: Failure, view: JobView) -> None:
        self.calls.append("failure")
        self.failures.append(failure)
        self.views.append(view)
