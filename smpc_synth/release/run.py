"""The end of a run: gate the synthetic table, publish or withhold it, write metrics and manifest.

One call for the launcher and for ``smpc-synth train``, so every run directory is finished
the same way (docs/design.md §3): the synthetic table is produced under :data:`PENDING_NAME`,
evaluated, and only renamed to ``synthetic.csv`` if the gate lets it through (or an explicit
override does). ``metrics.json`` gains the gate's decision; ``manifest.json`` hashes every
file of the run and is signed with each signer's certificate key. The caller raises the
refusal (:func:`~smpc_synth.release.gate.enforce`) after this, so a refused run still leaves
its report and manifest behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smpc_synth.config import GateConfig
from smpc_synth.release.gate import GateDecision, check_release
from smpc_synth.release.manifest import MANIFEST_NAME, build_manifest, sign_manifest, write_manifest
from smpc_synth.version import __version__

log = logging.getLogger(__name__)

SYNTHETIC_NAME = "synthetic.csv"
PENDING_NAME = "synthetic.pending.csv"  # the table before the gate has ruled on it
# Files of a run directory the manifest hashes when present (schema.toml is hashed as 'schema').
RUN_FILES = ("config.toml", "generator.pt", SYNTHETIC_NAME, "metrics.json")
SCHEMA_NAME = "schema.toml"


def publish(candidate: Path, run_dir: Path, decision: GateDecision) -> Path | None:
    """Rename ``candidate`` to ``run_dir/synthetic.csv`` if released, else delete it.

    A stale ``synthetic.csv`` from an earlier attempt is removed on refusal.
    """
    target = Path(run_dir) / SYNTHETIC_NAME
    candidate = Path(candidate)
    if decision.released:
        if candidate.resolve() != target.resolve():
            candidate.replace(target)
        return target
    candidate.unlink(missing_ok=True)
    target.unlink(missing_ok=True)
    return None


def release_run(
    run_dir: str | Path,
    *,
    candidate: str | Path,
    report: Mapping[str, Any],
    policy: GateConfig,
    config: Mapping[str, Any],
    metrics: dict[str, Any],
    override: bool = False,
    certificates: Mapping[str, str | Path] | None = None,
    ca_path: str | Path | None = None,
    keys: Mapping[str, str | Path] | None = None,
    version: str = __version__,
) -> GateDecision:
    """Gate, publish or withhold, write ``metrics.json`` (with ``gate``) and ``manifest.json``.

    ``certificates`` maps every member to its certificate (recorded in the manifest);
    ``keys`` maps each signer to its private key (a simulated launcher holds all of them; a
    party on its own machine passes only its own). ``metrics`` gains the ``gate`` entry.
    """
    run_dir = Path(run_dir)
    decision = check_release(dict(report), policy, override=override)
    publish(Path(candidate), run_dir, decision)
    metrics["gate"] = decision.to_dict()
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    keys = dict(keys or {})
    manifest = build_manifest(
        run_dir,
        config=config,
        schema_path=run_dir / SCHEMA_NAME if (run_dir / SCHEMA_NAME).is_file() else None,
        version=version,
        artifacts={n: run_dir / n for n in RUN_FILES if (run_dir / n).is_file()},
        certificates=certificates or {},
        metrics=metrics,
        gate=decision.to_dict(),
        ca_path=ca_path,
        signers=list(keys),
    )
    for signer, key_path in sorted(keys.items()):
        sign_manifest(manifest, signer, key_path)
    write_manifest(manifest, run_dir / MANIFEST_NAME)
    (log.info if decision.passed else log.warning)("%s", decision.describe())
    return decision


def certificates_in(certs_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """``NAME.pem`` in ``certs_dir`` for each name (the layout of ``smpc-synth certs``)."""
    return {name: Path(certs_dir) / f"{name}.pem" for name in names}
