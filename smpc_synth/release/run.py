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
from smpc_synth.release.gate import GateDecision, check_private_release, check_release
from smpc_synth.release.manifest import MANIFEST_NAME, build_manifest, sign_manifest, write_manifest
from smpc_synth.version import __version__

log = logging.getLogger(__name__)

SYNTHETIC_NAME = "synthetic.csv"
PENDING_NAME = "synthetic.pending.csv"  # the table before the gate has ruled on it
# A DP run's quality report, for the operator: it reads real rows, so it is not released
EVALUATION_NAME = "evaluation.private.json"
# What a DP run's metrics.json keeps: nothing that reads real rows outside the ledger
DP_RELEASED_METRICS = ("run", "mode", "generator", "source", "exit_codes", "rows_released")
DP_GATE_REASON = (
    "release gate not applied: under DP the release may depend on real rows only through the "
    f"accounted mechanisms, and the gate reads them (its verdict is in {EVALUATION_NAME}, for the "
    "operator)"
)
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
    privacy: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Gate, publish or withhold, write ``metrics.json`` (with ``gate``) and ``manifest.json``.

    ``certificates`` maps every member to its certificate (recorded in the manifest);
    ``keys`` maps each signer to its private key (a simulated launcher holds all of them; a
    party on its own machine passes only its own). ``metrics`` gains the ``gate`` entry.

    ``privacy`` (the DP ledger of a run with ``dp.epsilon``) makes the release depend on real
    rows only through its mechanisms: ``metrics.json`` keeps :data:`DP_RELEASED_METRICS` and
    the ledger (``metrics`` itself, the caller's, keeps everything), the report and the gate's
    verdict go to :data:`EVALUATION_NAME` (not in the manifest), and the table is published
    whatever that verdict; only ``gate.max_epsilon``, which reads the ledger alone, decides.
    """
    run_dir = Path(run_dir)
    decision = check_release(dict(report), policy, override=override)
    written = metrics
    if privacy is not None:
        write_private_evaluation(run_dir, report, decision)
        decision = check_private_release(
            dict(privacy), policy, override=override, reason=DP_GATE_REASON
        )
        written = released_metrics(metrics, privacy)
    publish(Path(candidate), run_dir, decision)
    metrics["gate"] = written["gate"] = decision.to_dict()
    (run_dir / "metrics.json").write_text(json.dumps(written, indent=2, default=str) + "\n")
    keys = dict(keys or {})
    manifest = build_manifest(
        run_dir,
        config=config,
        schema_path=run_dir / SCHEMA_NAME if (run_dir / SCHEMA_NAME).is_file() else None,
        version=version,
        artifacts={n: run_dir / n for n in RUN_FILES if (run_dir / n).is_file()},
        certificates=certificates or {},
        metrics=written,
        gate=decision.to_dict(),
        ca_path=ca_path,
        signers=list(keys),
        privacy=privacy,
    )
    for signer, key_path in sorted(keys.items()):
        sign_manifest(manifest, signer, key_path)
    write_manifest(manifest, run_dir / MANIFEST_NAME)
    (log.info if decision.passed else log.warning)("%s", decision.describe())
    return decision


def certificates_in(certs_dir: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """``NAME.pem`` in ``certs_dir`` for each name (the layout of ``smpc-synth certs``)."""
    return {name: Path(certs_dir) / f"{name}.pem" for name in names}


def released_metrics(metrics: Mapping[str, Any], privacy: Mapping[str, Any]) -> dict[str, Any]:
    """What a DP run's ``metrics.json`` may hold: :data:`DP_RELEASED_METRICS` and the ledger
    (timings, traffic, losses, row counts and the evaluation all read real rows)."""
    kept = {k: metrics[k] for k in DP_RELEASED_METRICS if k in metrics}
    return {**kept, "privacy": dict(privacy)}


def write_private_evaluation(run_dir: Path, report: Mapping[str, Any], decision) -> Path:
    """The operator's copy of a DP run's quality report and the gate's verdict on it."""
    path = Path(run_dir) / EVALUATION_NAME
    payload = {
        "note": "computed on real rows: NOT covered by the run's epsilon; do not publish",
        "evaluation": dict(report),
        "gate_verdict": decision.to_dict(),
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
