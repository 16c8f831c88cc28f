"""The committed gRPC stubs match a fresh generation from protos/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gen_protos.py"
STUBS = ROOT / "smpc_synth" / "net" / "v1"


def _check(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_committed_stubs_are_fresh():
    result = _check(STUBS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_names_a_stale_stub(tmp_path):
    copy = tmp_path / "v1"
    shutil.copytree(STUBS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "control_pb2.py").open("a") as handle:
        handle.write("# edited by hand\n")
    (copy / "session_pb2.pyi").unlink()
    result = _check(copy)
    assert result.returncode == 1
    assert "control_pb2.py" in result.stdout
    assert "session_pb2.pyi" in result.stdout
    assert "data_pb2.py" not in result.stdout


def test_stubs_import_from_the_package():
    from smpc_synth.net.v1 import data_pb2_grpc

    modules = vars(data_pb2_grpc).values()
    imported = {m.__name__ for m in modules if hasattr(m, "DESCRIPTOR")}
    assert imported == {"smpc_synth.net.v1.data_pb2", "smpc_synth.net.v1.tensor_pb2"}
