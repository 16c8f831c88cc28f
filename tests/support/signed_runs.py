"""A finished run folder, released and signed the way a session does, for the manifest tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from smpc_synth.config import RunConfig
from smpc_synth.net.certs import write_certificates
from smpc_synth.release import GateDecision, certificates_in, release_run

MEMBERS = ["alice", "bob", "dealer"]
SIGNERS = ["alice", "bob"]


def release_signed_run(run: Path, synthetic: pd.DataFrame, config_text: str) -> GateDecision:
    """Write a run's files into ``run`` (real certificates from net/certs), release
    ``synthetic`` with the gate off and sign the manifest by :data:`SIGNERS`."""
    cfg = replace(RunConfig(), gate=replace(RunConfig().gate, enabled=False))
    (run / "config.toml").write_text(config_text)
    (run / "schema.toml").write_text('[[columns]]\nname = "x"\nkind = "numeric"\n')
    torch.save({"w": torch.arange(6.0)}, run / "generator.pt")
    pending = run / "synthetic.pending.csv"
    synthetic.to_csv(pending, index=False)
    certs = run / "certs"
    write_certificates(MEMBERS, certs)
    return release_run(
        run,
        candidate=pending,
        report={},
        policy=cfg.gate,
        config=cfg.to_dict(),
        metrics={"evaluation": {"fidelity": {"quality_score": 0.9}}},
        certificates=certificates_in(certs, MEMBERS),
        ca_path=certs / "ca.pem",
        keys={name: certs / f"{name}.key" for name in SIGNERS},
    )
