"""Shared fixtures: every test fails on an ERROR log from the platform libraries."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

# Each plugin after the ones it imports, so pytest can rewrite its asserts.
pytest_plugins = [
    "tests.fakes.openai_server",
    "tests.fakes.app_fixtures",
    "tests.fakes.discord_server",
    "tests.fakes.slack_server",
    "tests.fakes.postgres",
]

_WATCHED = ("discord", "slack_bolt", "slack_sdk", "bot", "adapters")


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in _WATCHED:
            self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_library_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Both platform libraries swallow handler exceptions and only log them: make that loud.

    A test that expects an ERROR from the bot's own code marks itself
    ``@pytest.mark.allow_error_logs``.
    """
    collector = _ErrorCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
    if request.node.get_closest_marker("allow_error_logs"):
        return
    if collector.records:
        lines = "\n".join(f"{r.name}: {r.getMessage()}" for r in collector.records[:5])
        pytest.fail(f"ERROR logged during the test:\n{lines}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a store test of the SQLite file itself (not run on PostgreSQL)"
    )
    config.addinivalue_line(
        "markers", "allow_error_logs: the test expects ERROR records from the bot's own code"
    )
