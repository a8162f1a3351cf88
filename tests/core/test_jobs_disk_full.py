"""A data folder that fills up while a job's images are saved: a real full filesystem (tmpfs)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fakes.cli_process import COMMAND, tmpfs_unavailable
from tests.fakes.openai_server import FakeOpenAI

# Inside the namespace: a small tmpfs becomes IMAGINE_DATA_DIR, the command runs on it, then
# what it left there is read before the namespace (and the tmpfs) goes away.
_SCRIPT = """
mount -t tmpfs -o "size=$TMPFS_SIZE" tmpfs "$IMAGINE_DATA_DIR" || exit 97
{command} >"$OUT/stdout" 2>"$OUT/stderr"
echo $? >"$OUT/rc"
{usage} >"$OUT/usage" 2>>"$OUT/usage.err"
exec "$PYTHON" -c "$INSPECT" >"$OUT/state.json"
"""

_INSPECT = """
import json, os, sqlite3
root = os.environ["IMAGINE_DATA_DIR"]
db = sqlite3.connect(os.path.join(root, "imagine.sqlite3"))
rows = db.execute("SELECT status, error, charged_images, charged_cost, cost_usd FROM jobs")
files = [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]
print(json.dumps({"jobs": [list(r) for r in rows], "files": sorted(files)}))
"""


async def run_on_tmpfs(
    tmp_path: Path, size: str, *args: str, **settings: str
) -> tuple[int, str, str, str, dict[str, Any]]:
    """Run ``imagine-bot ARGS`` with a tmpfs of ``size`` as its data folder."""
    reason = tmpfs_unavailable(tmp_path / "probe")
    if reason:
        pytest.skip(reason)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGINE_"))}
    env.update(
        IMAGINE_DATA_DIR=str(data),
        TMPFS_SIZE=size,
        OUT=str(out),
        PYTHON=sys.executable,
        INSPECT=_INSPECT,
        **settings,
    )
    script = _SCRIPT.format(
        command=shlex.join([*COMMAND, *args]),
        usage=shlex.join([*COMMAND, "usage", "--user", "ann"]),
    )
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "-Urm",
        "sh",
        "-c",
        script,
        cwd=tmp_path,
        env=env,
    )
    assert await asyncio.wait_for(process.wait(), 120) == 0
    return (
        int((out / "rc").read_text()),
        (out / "stdout").read_text(),
        (out / "stderr").read_text(),
        (out / "usage").read_text(),
        json.loads((out / "state.json").read_text()),
    )


# Noise doesn't compress: a 1024x1024 PNG of it is about 3 MB, the database a few dozen KB.
# In 1 MB the first image doesn't fit; in 5 MB the first does and the second doesn't.
@pytest.mark.parametrize("size", ["1m", "5m"])
async def test_a_disk_full_while_saving_ends_the_job_refunded_and_leaves_no_partial_file(
    openai_fake: FakeOpenAI, tmp_path: Path, size: str
) -> None:
    openai_fake.noise = True
    code, out, err, usage, state = await run_on_tmpfs(
        tmp_path,
        size,
        *("imagine", "a kite", "-n", "2", "--size", "1024x1024", "--user", "ann"),
        *("--out", str(tmp_path / "pictures")),
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
    )

    assert code == 1
    assert out == ""
    data = tmp_path / "data"
    *progress, last = err.strip().splitlines()
    assert all(line.startswith("[") for line in progress), err
    assert [last] == [
        f"imagine-bot: The image was made but couldn't be saved: no space left in "
        f"IMAGINE_DATA_DIR ({data}), so it was not delivered and doesn't count against your "
        "limits. Please tell the bot's operator to free some space, then try again."
    ]
    assert "Traceback" not in err
    [(status, error, charged_images, charged_cost, cost_usd)] = state["jobs"]
    assert (status, charged_images, charged_cost) == ("failed", 0, 0)
    assert "no space left" in error
    assert cost_usd > 0  # the provider did bill: the operator's record keeps it
    assert [f for f in state["files"] if f.startswith("images/")] == []
    [row] = [line for line in usage.splitlines() if line.startswith("cli:ann")]
    assert row.split()[1] == "0"
    assert len(openai_fake.requests) == 1


async def test_a_disk_too_full_for_an_edits_inputs_refuses_it_before_the_call(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    noise = Image.frombytes("RGB", (1024, 1024), os.urandom(1024 * 1024 * 3))
    noise.save(tmp_path / "photo.png")
    code, out, err, _, state = await run_on_tmpfs(
        tmp_path,
        "1m",
        *("edit", "make it night", str(tmp_path / "photo.png"), "--user", "ann"),
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
    )

    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "imagine-bot: Can't make images right now: no space left in IMAGINE_DATA_DIR "
        f"({tmp_path / 'data'}). Nothing was charged; please tell the bot's operator to free "
        "some space, then try again."
    ]
    assert state["jobs"] == []
    assert [f for f in state["files"] if f.startswith("images/")] == []
    assert openai_fake.requests == []
