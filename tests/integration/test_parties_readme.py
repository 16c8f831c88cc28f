"""parties/README.md runs as written: its `sh` blocks, in order, in a fresh copy of the
repository, with real party processes, gRPC and mutual TLS."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "parties" / "README.md"
MPC = "parties/local/mpc/"


def sh_blocks() -> list[str]:
    """The ```sh blocks of the README, in order (```text and ```toml blocks are shown, not
    run)."""
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def fresh_clone(target: Path) -> Path:
    """The repository's files as a clone has them: tracked and new, never generated ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (p.decode() for p in listed)):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


def run_block(block: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """One block in bash, as a user with the venv activated would (the clone's package)."""
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(cwd),
        OMP_NUM_THREADS="1",
    )
    return subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _check_member_outputs(clone: Path, setup: str, output: str) -> None:
    out = clone / "parties" / "local" / "out" / setup
    for party in ("alice", "bob"):
        for name in ("generator.pt", "synthetic.csv", "metrics.json", "manifest.json"):
            assert (out / party / name).is_file(), (party, name, output[-3000:])
    assert "@@progress" not in output  # party mode shows progress, never raw events
    assert re.search(r"alice: \w+ · vae +epoch 5/5", output), output[-3000:]


def test_every_sh_block_is_a_command_that_exists():
    blocks = sh_blocks()
    assert len(blocks) >= 4 and any(MPC in b for b in blocks)
    for block in blocks:
        for line in filter(None, block.splitlines()):
            assert line.startswith(("smpc-synth ", "wait")), line


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A fresh clone after the README's first block (data, schema, certificates)."""
    clone = fresh_clone(tmp_path_factory.mktemp("clone"))
    assert not (clone / "parties" / "local" / "data").exists()
    first = run_block(sh_blocks()[0], clone, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    return clone


def test_the_federated_walkthrough_runs_as_written(prepared):
    """Everything but the MPC block: the federated session, then verify, evaluate, sample."""
    outputs = []
    for block in sh_blocks()[1:]:
        if MPC in block:
            continue
        result = run_block(block, prepared, timeout=900)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, outputs[-1][-3000:]
    _check_member_outputs(prepared, "federated", outputs[0])
    assert "manifest verified" in outputs[1], outputs[1]
    assert "TSTR" in outputs[1] and "wrote 1000 rows" in outputs[1], outputs[1]


@pytest.mark.slow  # a few minutes: MPC training of a VAE among three processes
def test_the_mpc_walkthrough_runs_as_written(prepared):
    (block,) = [b for b in sh_blocks() if MPC in b]
    result = run_block(block, prepared, timeout=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    _check_member_outputs(prepared, "mpc", output)
