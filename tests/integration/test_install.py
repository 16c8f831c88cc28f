"""`make install` from nothing: no red resolver errors, a consistent environment."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSIONS = "import importlib.metadata as m; print(m.version('torch'), m.version('crypten'))"


def _script():
    spec = importlib.util.spec_from_file_location(
        "crypten_wheel", REPO / "scripts/crypten_wheel.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PUBLISHED_METADATA = """Metadata-Version: 2.1
Name: crypten
Version: 0.4.1
Requires-Dist: torch (>=1.7.0)
Requires-Dist: torchvision (>=0.9.1)
Requires-Dist: omegaconf (>=2.0.6)
Requires-Dist: onnx (>=1.7.0)
Requires-Dist: pandas (>=1.2.2)
Requires-Dist: pyyaml (>=5.3.1)
Requires-Dist: tensorboard
Requires-Dist: future
Requires-Dist: scipy (>=1.6.0)
Requires-Dist: sklearn

CrypTen is a framework for Privacy Preserving Machine Learning; future work: sklearn.
"""


def _requirements(text: str) -> list[str]:
    return [line.split(":", 1)[1].split()[0] for line in text.splitlines() if "Requires" in line]


def test_the_unneeded_requirements_are_dropped_and_the_rest_kept():
    cleaned = _script().clean_metadata(PUBLISHED_METADATA)
    assert _requirements(cleaned) == ["torch", "omegaconf", "onnx", "pandas", "pyyaml", "scipy"]
    assert cleaned.endswith("future work: sklearn.\n")  # the description is untouched


def test_the_rewritten_wheel_records_the_new_metadata_and_keeps_every_file(tmp_path):
    source = tmp_path / "crypten-0.4.1-py3-none-any.whl"
    files = {
        "crypten/__init__.py": b"x = 1\n",
        "crypten-0.4.1.dist-info/METADATA": PUBLISHED_METADATA.encode(),
    }
    record = "".join(f"{name},sha256=old,{len(data)}\n" for name, data in files.items())
    with zipfile.ZipFile(source, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(
            "crypten-0.4.1.dist-info/RECORD", record + "crypten-0.4.1.dist-info/RECORD,,\n"
        )
    target = tmp_path / "out.whl"
    _script().rewrite(source, target)
    with zipfile.ZipFile(target) as wheel:
        metadata = wheel.read("crypten-0.4.1.dist-info/METADATA")
        assert wheel.read("crypten/__init__.py") == b"x = 1\n"
        rows = dict(
            line.split(",", 1)
            for line in wheel.read("crypten-0.4.1.dist-info/RECORD").decode().split()
        )
    digest = base64.urlsafe_b64encode(hashlib.sha256(metadata).digest()).rstrip(b"=").decode()
    assert rows["crypten-0.4.1.dist-info/METADATA"] == f"sha256={digest},{len(metadata)}"
    assert "sklearn" not in _requirements(metadata.decode())


@pytest.mark.slow  # a few minutes: a whole environment from the package index
def test_make_install_in_a_fresh_venv_prints_no_resolver_errors(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["make", "install", f"VENV={venv}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        env=dict(os.environ, PIP_NO_COLOR="1"),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "ERROR" not in output and "dependency conflicts" not in output, output[-3000:]
    python = venv / "bin" / "python"
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    versions = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m; print(m.version('torch'), m.version('crypten'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    torch_version, crypten_version = versions.stdout.split()
    assert torch_version.split("+")[0] == "2.13.0" and crypten_version == "0.4.1"
    assert sys.version_info >= (3, 11)


PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]


def test_the_wheel_carries_no_benchmark_tooling(tmp_path):
    """`pip wheel .` packs smpc_synth alone: the benchmark suites, next to it in the tree,
    are a package of their own."""
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "results", "*.egg-info")
    for folder in ("smpc_synth", "benchmarks"):
        shutil.copytree(REPO / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    proc = subprocess.run(
        [*PIP_WHEEL, "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("smpc_synth-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "smpc_synth/cli.py" in names and "smpc_synth/mpc/session.py" in names
    assert not [n for n in names if "bench" in n.split("/")[0] or "/bench/" in n]


def test_bench_without_the_benchmark_package_says_how_to_install_it(monkeypatch, capsys):
    from smpc_synth.cli import main

    monkeypatch.setitem(sys.modules, "smpc_synth_bench", None)  # as if not installed
    assert main(["bench", "quick", "--out", "unused"]) == 2
    error = capsys.readouterr().err
    assert "bench quick" in error and "make install" in error
    assert "pip install -e benchmarks" in error


def test_bench_help_without_the_benchmark_package_says_how_to_install_it(monkeypatch):
    from smpc_synth.cli import build_parser

    monkeypatch.setitem(sys.modules, "smpc_synth_bench", None)  # as if not installed
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    text = " ".join(bench.format_help().split())
    assert "{}" not in text and "none installed" in text and "pip install -e benchmarks" in text


def test_bench_help_lists_every_suite():
    from smpc_synth.cli import build_parser
    from smpc_synth_bench import SUITES

    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    text = " ".join(bench.format_help().split())
    assert all(name in text for name in SUITES)
