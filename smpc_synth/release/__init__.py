"""Release: the quality gate on synthetic data and the signed provenance manifest of a run."""

from __future__ import annotations

import sys
from pathlib import Path

from smpc_synth.errors import InputError
from smpc_synth.release.gate import GateDecision, GateFailure, check_release, enforce
from smpc_synth.release.manifest import (
    MANIFEST_NAME,
    VerifyResult,
    build_manifest,
    load_manifest,
    sign_manifest,
    verify_manifest,
    write_manifest,
)
from smpc_synth.release.run import PENDING_NAME, certificates_in, publish, release_run

__all__ = [
    "MANIFEST_NAME",
    "PENDING_NAME",
    "GateDecision",
    "GateFailure",
    "VerifyResult",
    "build_manifest",
    "certificates_in",
    "check_release",
    "enforce",
    "load_manifest",
    "publish",
    "release_run",
    "sign_manifest",
    "verify_main",
    "verify_manifest",
    "write_manifest",
]


def verify_main(
    path: str | Path, ca: str | Path | None = None, allow_unsigned: bool = False
) -> int:
    """``smpc-synth verify``: print every check; 0 verified, 1 a check failed, 2 unreadable
    or malformed (the message names the key).

    ``path`` may be the manifest or its run directory; ``ca`` pins the session CA;
    ``allow_unsigned`` accepts a manifest without signatures (hashes still checked).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        result = verify_manifest(path, ca_path=ca, allow_unsigned=allow_unsigned)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.describe())
    return 0 if result.ok else 1
