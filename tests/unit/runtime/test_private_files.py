"""Files holding secrets are private from the start: checkpoints and the wire tap."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch

from smpc_synth.net.tap import WireTap
from smpc_synth.private import check_private, write_private
from smpc_synth.runtime.checkpoints import DirectoryCheckpoints


@pytest.fixture
def open_umask():
    """A umask that lets everyone read new files: the modes below must not rely on it."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoints_are_written_0600_in_a_0700_folder(tmp_path, open_umask):
    """They were 0644: a federated checkpoint holds the whole model."""
    store = DirectoryCheckpoints(tmp_path / "checkpoints")
    store.save("federated", {"round": 3, "weights": torch.arange(4.0)})
    path = tmp_path / "checkpoints" / "federated.pt"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert store.load("federated")["round"] == 3
    store.save("federated", {"round": 4})  # replaced atomically, still private
    assert _mode(path) == 0o600 and store.load("federated")["round"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["federated.pt"]  # no partial left
    store.discard("federated")
    assert store.load("federated") is None


def test_wire_tap_files_are_0600_and_logged(tmp_path, open_umask, caplog):
    """The tap records secret contexts and PRG keys; it wrote them 0644, silently."""
    tap = WireTap("alice", str(tmp_path / "tap"))
    with caplog.at_level(logging.WARNING, logger="smpc_synth.net.tap"):
        tap.record("bob", b"secret frame")
        tap.record("bob", b" and another")
    tap.close()
    path = tmp_path / "tap" / "alice-from-bob.bin"
    assert path.read_bytes() == b"secret frame and another"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and str(path) in warnings[0] and "WIRE TAP" in warnings[0]


def test_private_files_check(tmp_path, open_umask):
    path = write_private(tmp_path / "k", b"x")
    assert _mode(path) == 0o600
    check_private(path)
    path.chmod(0o660)
    with pytest.raises(Exception, match="chmod 600"):
        check_private(path)


@pytest.mark.parametrize("kind", ["directory", "memory"])
def test_a_checkpoint_store_keeps_the_latest_state_until_discarded(tmp_path, kind):
    from smpc_synth.runtime.checkpoints import MemoryCheckpoints

    store = DirectoryCheckpoints(tmp_path / "c") if kind == "directory" else MemoryCheckpoints()
    assert store.load("mpc/alice") is None
    store.save("mpc/alice", {"epoch": 1, "w": torch.zeros(2)})
    store.save("mpc/alice", {"epoch": 2, "w": torch.ones(2)})
    state = store.load("mpc/alice")
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.ones(2))
    store.discard("mpc/alice")
    store.discard("mpc/alice")  # discarding nothing is fine
    assert store.load("mpc/alice") is None
