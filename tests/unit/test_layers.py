"""The layering contracts in pyproject.toml (run by `make lint`) hold, and they would catch an
import that points up a layer or a library module that reaches the benchmark suites."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "smpc_synth", tmp_path / "smpc_synth")
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    only_contract = {"tool": {"importlinter": settings["tool"]["importlinter"]}}
    (tmp_path / "pyproject.toml").write_text(tomli_w.dumps(only_contract))
    return tmp_path


def test_the_package_keeps_its_layers(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, statement, named",
    [
        # an import up the layers
        (
            "data/defaults.py",
            "import smpc_synth.runtime.simulate",
            "smpc_synth.data.defaults -> smpc_synth.runtime.simulate",
        ),
        # a library module reaching the benchmark suites
        (
            "train/base.py",
            "import smpc_synth_bench",
            "smpc_synth.train is not allowed to import smpc_synth_bench",
        ),
    ],
)
def test_an_import_against_a_contract_breaks_it(tmp_path, module, statement, named):
    root = _copy(tmp_path)
    lower = root / "smpc_synth" / module
    lower.write_text(lower.read_text() + f"\n{statement}  # noqa\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert named in result.stdout, result.stdout
