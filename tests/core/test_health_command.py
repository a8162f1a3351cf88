"""``imagine-bot health`` (the image's HEALTHCHECK) against a running bot; the Docker files."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
from pathlib import Path

import yaml

from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI

_ROOT = Path(__file__).resolve().parents[2]
_DOCKERFILE = (_ROOT / "docker" / "Dockerfile").read_text()
_COMPOSE = yaml.safe_load((_ROOT / "docker" / "compose.yaml").read_text())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthcheck_command() -> list[str]:
    """The exec-form CMD of the Dockerfile's HEALTHCHECK, with its continuation lines."""
    text = _DOCKERFILE.replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert match, "the image has no HEALTHCHECK in exec form"
    command = json.loads(match.group(1))
    assert isinstance(command, list)
    return [str(part) for part in command]


async def _check(args: list[str], cwd: Path, port: int) -> tuple[int, str]:
    assert args[0] == "imagine-bot"
    process = await start_cli(*args[1:], cwd=cwd, IMAGINE_METRICS_PORT=str(port))
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


async def test_the_image_healthcheck_fails_until_the_bot_runs_and_passes_while_it_does(
    openai_fake: FakeOpenAI, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    command = _healthcheck_command()
    assert command == ["imagine-bot", "health"]
    assert re.search(r"^\s*IMAGINE_METRICS_PORT=\d+", _DOCKERFILE, re.MULTILINE), (
        "the image must set the port its health check asks"
    )
    port = _free_port()
    code, said = await _check(command, tmp_path, port)
    assert code == 1
    assert f"no answer from http://127.0.0.1:{port}/healthz" in said
    assert "Traceback" not in said

    process = await start_cli(
        "run",
        "discord",
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_METRICS_PORT=str(port),
        DISCORD_TOKEN=discord_fake.token,
        DISCORD_API_BASE_URL=discord_fake.api_url,
        DISCORD_GATEWAY_URL=discord_fake.gateway_url,
    )
    try:
        for _ in range(300):
            code, said = await _check(command, tmp_path, port)
            if code == 0:
                break
            await asyncio.sleep(0.1)
        assert code == 0, said
        assert said.startswith("/healthz: ok")
        await discord_fake.wait_until(lambda: discord_fake.connected, timeout=30)
        for _ in range(300):
            code, said = await _check([*command, "--ready"], tmp_path, port)
            if code == 0:
                break
            await asyncio.sleep(0.1)
        assert code == 0, said
        assert '"ready": true' in said
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    code, said = await _check(command, tmp_path, port)
    assert code == 1, "a stopped bot must fail the health check"


async def test_health_without_a_port_names_the_setting(tmp_path: Path) -> None:
    process = await start_cli("health", cwd=tmp_path)
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert err.decode().startswith("imagine-bot: IMAGINE_METRICS_PORT: not set")


def test_the_scale_profile_runs_postgresql_and_two_instances_sharing_it_and_the_images() -> None:
    services = _COMPOSE["services"]
    scale = {name for name, service in services.items() if "scale" in service.get("profiles", [])}
    assert scale == {"postgres", "imagine-bot-1", "imagine-bot-2"}
    assert "profiles" not in services["imagine-bot"], "plain `up` still runs the one bot"
    assert "IMAGINE_DATABASE_URL" not in services["imagine-bot"]["environment"]
    instances = [services["imagine-bot-1"], services["imagine-bot-2"]]
    shards = set()
    for instance in instances:
        env = instance["environment"]
        assert env["IMAGINE_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["IMAGINE_DATABASE_URL"]
        assert instance["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert instance["volumes"] == services["imagine-bot"]["volumes"]  # one image folder
        assert instance["healthcheck"]["test"] == ["CMD", "imagine-bot", "health", "--ready"]
        assert env["IMAGINE_METRICS_PORT"] == "9108"
        count = int(env["DISCORD_SHARD_COUNT"])
        shards |= {int(i) for i in env["DISCORD_SHARD_IDS"].split(",")}
    assert shards == set(range(count)), "together the instances run every shard"
    ports = [p for instance in instances for p in instance["ports"]]
    assert len(ports) == len(set(ports))
