"""An audit tap: record every data-plane frame a member receives, after TLS, to files.

Set ``SMPC_SYNTH_WIRE_TAP=DIR`` and each member appends the serialised frames it receives
from PEER to ``DIR/ME-from-PEER.bin``. Tests use it to prove what never crosses the wire
(e.g. another party's plaintext rows); operators can use it to audit a session. The frames
include secret material (the CKKS secret context, PRG keys, shares), so the files are
written 0600 in a 0700 directory and the log names each one as it is opened.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from smpc_synth.private import open_private_append

ENV = "SMPC_SYNTH_WIRE_TAP"

log = logging.getLogger(__name__)


class WireTap:
    """Appends received frames per peer; a no-op unless the environment variable is set."""

    def __init__(self, me: str, directory: str | None = None):
        directory = directory if directory is not None else os.environ.get(ENV)
        self.directory = Path(directory) if directory else None
        self.me = me
        self._files: dict[str, BinaryIO] = {}
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def record(self, peer: str, frame_bytes: bytes) -> None:
        if self.directory is None:
            return
        with self._lock:
            sink = self._files.get(peer)
            if sink is None:
                path = self.directory / f"{self.me}-from-{peer}.bin"
                sink = self._files[peer] = open_private_append(path)
                log.warning(
                    "%s: WIRE TAP (%s) is recording every frame from %s, secret keys and "
                    "shares included, to %s",
                    self.me,
                    ENV,
                    peer,
                    path,
                )
            sink.write(frame_bytes)
            sink.flush()

    def close(self) -> None:
        with self._lock:
            for sink in self._files.values():
                sink.close()
            self._files.clear()
