"""Per-party checkpoints on local disk, so a stopped run can ``--resume`` (and in memory,
for runs that never resume).

A checkpoint holds this party's training state (its shares in MPC mode, the whole model in
federated mode), so it is written 0600 in a 0700 directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from smpc_synth.private import private_writer


class DirectoryCheckpoints:
    """Keeps each key's latest state as ``DIR/KEY.pt`` (tensors and plain types only)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key.replace('/', '_')}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with private_writer(self._path(key)) as handle:  # never torn, never world-readable
            torch.save(state, handle)

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return torch.load(path, weights_only=True)

    def discard(self, key: str) -> None:
        """Remove ``key``'s checkpoint (one this run wrote), if there is one."""
        self._path(key).unlink(missing_ok=True)


class MemoryCheckpoints:
    """Keeps each key's latest state in memory: for runs that cannot resume (benchmarks,
    tests), where writing shares to disk would only cost time."""

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.saved[key] = state

    def load(self, key: str) -> dict[str, Any] | None:
        return self.saved.get(key)

    def discard(self, key: str) -> None:
        self.saved.pop(key, None)
