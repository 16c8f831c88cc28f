"""Files only their owner may read: private keys, secret contexts, checkpoints, wire taps.

Written with mode 0600 from the start (never readable by others, even briefly) and replaced
atomically; a private file that group or others can read or write is refused when read, as
ssh refuses such a key. On systems without POSIX modes the check does not apply.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from smpc_synth.errors import InputError

PRIVATE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def check_private(path: str | os.PathLike[str], what: str = "private key") -> None:
    """InputError naming ``path`` if group or others may read or write it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if os.name == "posix" and mode & _OTHERS:
        raise InputError(
            f"{path}: {what} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run 'chmod 600 {path}'"
        )


def read_private(path: str | os.PathLike[str], what: str = "private key") -> bytes:
    """The bytes of a private file, after :func:`check_private`."""
    check_private(path, what)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None


@contextmanager
def private_writer(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` (mode 0600) when the block ends without error;
    a crash mid-write never leaves a torn or world-readable file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.fchmod(fd, PRIVATE_MODE)
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    with private_writer(path) as handle:
        handle.write(data)
    return Path(path)


def open_private_append(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for appending, created 0600 (an existing file is made 0600 too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
    os.fchmod(fd, PRIVATE_MODE)
    return os.fdopen(fd, "ab")
