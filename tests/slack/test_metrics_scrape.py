"""A real ``imagine-bot run slack`` with IMAGINE_METRICS_PORT: readiness and scraped counters."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, TEAM_ID, FakeSlack
from tests.fakes.slack_steps import text_of


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _first_answer(http: httpx.AsyncClient, path: str) -> httpx.Response:
    for _ in range(600):
        try:
            return await http.get(path)
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered")


async def test_run_slack_is_ready_once_connected_and_counts_its_jobs(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    port = _free_port()
    slack_fake.socket_gate = asyncio.Event()
    process = await start_cli(
        "run",
        "slack",
        cwd=tmp_path,
        IMAGINE_PARTIAL_IMAGES="0",
        IMAGINE_METRICS_PORT=str(port),
        IMAGINE_USER_LIMIT="2/hour",
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack_fake.api_url,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            held = await _first_answer(http, "/readyz")
            assert held.status_code == 503 and "slack" in held.json()["failing"]
            slack_fake.socket_gate.set()
            await slack_fake.wait_connected(timeout=60)
            ready = await http.get("/readyz")
            for _ in range(300):
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
                ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["slack"] is True

            for prompt in ("a moon over the sea", "a second moon"):
                await slack_fake.send_command(slack_fake.command_payload(prompt))
                await slack_fake.wait_for(
                    "chat.update",
                    lambda c, p=prompt: p in text_of(c) and "done in" in text_of(c),
                    timeout=60,
                )
            await slack_fake.send_command(slack_fake.command_payload("a third, over the limit"))
            samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
            for _ in range(300):
                answer = await http.get("/metrics")
                samples = {
                    (s.name, frozenset(s.labels.items())): s.value
                    for family in text_string_to_metric_families(answer.text)
                    for s in family.samples
                }
                refused = {"platform": "slack", "kind": "generate", "outcome": "refused"}
                if samples.get(("imagine_jobs_finished_total", frozenset(refused.items()))):
                    break
                await asyncio.sleep(0.1)
        generate = {"platform": "slack", "kind": "generate"}

        def get(name: str, **labels: str) -> float:
            return samples.get((name, frozenset(labels.items())), 0.0)

        assert get("imagine_jobs_started_total", **generate) == 2
        assert get("imagine_jobs_finished_total", **generate, outcome="succeeded") == 2
        assert get("imagine_jobs_finished_total", **generate, outcome="refused") == 1
        assert get("imagine_jobs_finished_total", **generate, outcome="failed") == 0
        assert get("imagine_spent_dollars_total", platform="slack", team=TEAM_ID) > 0
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
