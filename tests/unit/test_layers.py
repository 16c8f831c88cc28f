"""The layering contracts in pyproject.toml (run by `make lint`) hold, and they would catch an
import that points up a layer or a library module that reaches the benchmark suites."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_an_import_up_the_layers_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    lower = root / "smpc_synth" / "data" / "defaults.py"
    lower.write_text(lower.read_text() + "\nimport smpc_synth.runtime.simulate  # noqa\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "smpc_synth.data.defaults -> smpc_synth.runtime.simulate" in result.stdout, result.stdout


def test_a_library_module_importing_the_benchmarks_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    lower = root / "smpc_synth" / "train" / "base.py"
    lower.write_text(lower.read_text() + "\nimport smpc_synth_bench  # noqa\n")
    result = _lint(root)
    assert result.returncode != 0
    assert "smpc_synth.train is not allowed to import smpc_synth_bench" in result.stdout, (
        result.stdout
    )
