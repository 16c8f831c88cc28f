"""smpc-synth: jointly train synthetic-data generators without sharing rows.

The notebook API (the CLI is a thin layer over it)::

    import smpc_synth
    model = smpc_synth.train(df, generator="vae")
    synthetic = smpc_synth.sample(model, 1000)
    report = smpc_synth.evaluate(df, synthetic, target="label")

``smpc_synth.simulate(parties=3, mode="mpc", dataset="breast_cancer")`` runs a whole
multi-party session on this machine.
"""

from __future__ import annotations

from smpc_synth.api import evaluate, sample, simulate, train
from smpc_synth.version import __version__

__all__ = ["__version__", "evaluate", "sample", "simulate", "train"]
