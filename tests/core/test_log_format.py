"""IMAGINE_LOG_FORMAT=json: one JSON object per line, with the job's context and no secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bot.commands import Generate
from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.log_format import JsonFormatter
from bot.models import Requester

# A configured key no token pattern knows: only the exact-value redaction can hide it.
SECRET = "plain-configured-secret-4242"
SLACK = "xoxb-1111-2222-abcdefabcdefabcdef"

_ROOT = Path(__file__).resolve().parents[2]

# What the command line sets up, then what a running bot logs (a job line, a failure).
_SCRIPT = textwrap.dedent(
    f"""
    import logging
    from bot.cli import _setup_logging
    from bot.config import load_settings

    _setup_logging(load_settings(), quiet=False)
    log = logging.getLogger("bot.service")
    log.info(
        "job %s finished for key %s",
        "job-1",
        {SECRET!r},
        extra={{"job_id": "job-1", "platform": "slack", "team": "T1", "channel": "C1"}},
    )
    try:
        raise RuntimeError("refused header: Bearer " + {SECRET!r})
    except RuntimeError:
        log.exception("job %s failed unexpectedly", "job-2", extra={{"job_id": "job-2"}})
    logging.getLogger("slack_bolt").warning("token %s", {SLACK!r})
    """
)


def _run_logging(tmp_path: Path, log_format: str) -> str:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("IMAGINE_", "OPENAI_", "DISCORD_", "SLACK_"))
    }
    env.update(
        OPENAI_API_KEY=SECRET,
        SLACK_BOT_TOKEN=SLACK,
        IMAGINE_DATA_DIR=str(tmp_path / "data"),
        IMAGINE_LOG_FORMAT=log_format,
        PYTHONPATH=str(_ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


def test_json_lines_parse_carry_the_job_and_hide_configured_secrets(tmp_path: Path) -> None:
    err = _run_logging(tmp_path, "json")

    lines = [json.loads(line) for line in err.splitlines()]
    assert len(lines) == 3
    job, failed, library = lines
    assert job["message"] == "job job-1 finished for key [redacted]"
    assert (job["level"], job["logger"]) == ("INFO", "bot.service")
    assert {name: job[name] for name in ("job_id", "platform", "team", "channel")} == {
        "job_id": "job-1",
        "platform": "slack",
        "team": "T1",
        "channel": "C1",
    }
    assert job["time"].endswith("+00:00")
    assert failed["job_id"] == "job-2"
    assert failed["level"] == "ERROR"
    assert "RuntimeError: refused header: Bearer [redacted]" in failed["exc_info"]
    assert "platform" not in failed
    assert library["logger"] == "slack_bolt"
    assert SECRET not in err
    assert SLACK not in err and "abcdefabcdef" not in err


def test_text_stays_the_default_format(tmp_path: Path) -> None:
    err = _run_logging(tmp_path, "text")

    first = err.splitlines()[0]
    assert " INFO bot.service: job job-1 finished for key [redacted]" in first
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)
    assert SECRET not in err


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bot.presenting", logging.WARNING, __file__, 1, "shown", (), None)
    record.__dict__.update(extra)
    return record


def test_image_bytes_never_reach_a_line_and_long_fields_are_cut() -> None:
    formatter = JsonFormatter(SECRET)
    line = formatter.format(_record(job_id=b"\x89PNG" * 1000, channel="c" * 5000, team=SECRET))

    entry = json.loads(line)
    assert "job_id" not in entry
    assert "PNG" not in line
    assert len(entry["channel"]) == 200
    assert entry["team"] == "[redacted]"
    assert "\n" not in line


def test_log_format_and_metrics_port_settings(tmp_path: Path) -> None:
    def settings(**values: object) -> Settings:
        return load_settings(_env_file=None, imagine_data_dir=tmp_path, **values)

    assert settings().imagine_log_format == "text"
    assert settings(imagine_log_format=" JSON ").imagine_log_format == "json"
    assert settings().imagine_metrics_port is None
    assert settings(imagine_metrics_port="").imagine_metrics_port is None
    assert settings(imagine_metrics_port="9108").imagine_metrics_port == 9108
    with pytest.raises(ConfigError, match="IMAGINE_LOG_FORMAT"):
        settings(imagine_log_format="xml")
    with pytest.raises(ConfigError, match="IMAGINE_METRICS_PORT"):
        settings(imagine_metrics_port="0")


async def test_a_finished_jobs_audit_line_carries_its_context_as_fields(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app()
    who = Requester("discord", "111", "g1", "c1")
    with caplog.at_level(logging.INFO, logger="bot.service"):
        request = await app.service.prepare(Generate(who, "a red fox"))
        result = await app.service.run(request)
    [record] = [r for r in caplog.records if r.getMessage().startswith("job finished")]
    line = json.loads(JsonFormatter().format(record))
    assert line["job_id"] == result.job_id
    assert (line["platform"], line["team"], line["channel"]) == ("discord", "g1", "c1")
