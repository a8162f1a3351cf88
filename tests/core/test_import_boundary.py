"""The core stays platform-free: import-linter's contracts (pyproject.toml) hold, and bite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("bot", "adapters"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_project_keeps_its_import_boundaries(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_that_imports_a_platform_breaks_the_check(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    texts = tree / "bot" / "texts.py"
    texts.write_text(texts.read_text() + "\nimport discord  # noqa: E402\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "bot.texts -> discord" in result.stdout


def test_a_core_module_that_imports_an_adapter_breaks_the_check(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    service = tree / "bot" / "service.py"
    service.write_text(service.read_text() + "\nimport adapters.slack.bot  # noqa: E402\n")
    result = _lint(tree)
    assert result.returncode != 0
    assert "bot.service -> adapters.slack.bot" in result.stdout
