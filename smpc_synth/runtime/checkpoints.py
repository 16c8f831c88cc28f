"""Per-party checkpoints on local disk, so a stopped run can ``--resume``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class DirectoryCheckpoints:
    """Keeps each key's latest state as ``DIR/KEY.pt`` (tensors and plain types only)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key.replace('/', '_')}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        partial = path.with_suffix(".pt.partial")
        torch.save(state, partial)
        os.replace(partial, path)  # a crash mid-write never leaves a torn checkpoint

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return torch.load(path, weights_only=True)
