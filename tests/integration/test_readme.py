"""The README's examples run verbatim, as a new user would type them.

Every ```sh block is run line by line in a fresh directory with the installed command on the
PATH (`make` and `source` lines are what put it there, so they are skipped); the ```python
block runs in a fresh interpreter. Each command must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SKIPPED = ("make ", "source ")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands() -> list[str]:
    lines = [line.split("  #")[0].strip() for block in _blocks("sh") for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(SKIPPED)]


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return dict(
        os.environ,
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        PYTHONPATH=str(REPO),  # this checkout, whatever the venv's editable install points at
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )


def test_readme_has_examples_to_run():
    commands = _commands()
    assert any(c.startswith("smpc-synth simulate") for c in commands)
    assert any(c.startswith("smpc-synth evaluate") for c in commands)
    assert len(_blocks("python")) == 1


def test_readme_shell_examples_run_verbatim(tmp_path):
    for command in _commands():
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, f"{command!r} exited {proc.returncode}:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("block", _blocks("python"))
def test_readme_python_example_runs_verbatim(tmp_path, block):
    proc = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
