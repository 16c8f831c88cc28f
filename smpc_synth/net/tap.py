"""An audit tap: record every data-plane frame a member receives, after TLS, to files.

Set ``SMPC_SYNTH_WIRE_TAP=DIR`` and each member appends the serialised frames it receives
from PEER to ``DIR/ME-from-PEER.bin``. Tests use it to prove what never crosses the wire
(e.g. another party's plaintext rows); operators can use it to audit a session.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

ENV = "SMPC_SYNTH_WIRE_TAP"


class WireTap:
    """Appends received frames per peer; a no-op unless the environment variable is set."""

    def __init__(self, me: str, directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(ENV)
        self.directory = Path(directory) if directory else None
        self.me = me
        self._files: dict[str, object] = {}
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def record(self, peer: str, frame_bytes: bytes) -> None:
        if self.directory is None:
            return
        with self._lock:
            sink = self._files.get(peer)
            if sink is None:
                sink = open(self.directory / f"{self.me}-from-{peer}.bin", "ab")  # noqa: SIM115
                self._files[peer] = sink
            sink.write(frame_bytes)
            sink.flush()

    def close(self) -> None:
        with self._lock:
            for sink in self._files.values():
                sink.close()
            self._files.clear()
