"""The Python API: DataFrames in, DataFrames and plain dicts out. The CLI calls these."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from smpc_synth.data import Schema
    from smpc_synth.models import Synthesizer
    from smpc_synth.runtime.simulate import SimulationResult


def train(
    data: pd.DataFrame,
    *,
    generator: str = "gaussian",
    schema: Schema | None = None,
    epochs: int | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    source: str = "data",
    epsilon: float | None = None,
    delta: float | None = None,
) -> Synthesizer:
    """Fit a generator on one table in the clear (plaintext mode) and return it.

    ``epsilon`` (and ``delta``, default 1e-9) is the privacy budget of a differentially
    private generator (``aim``, ``mst``); it bounds everything the synthesizer holds."""
    import torch

    from smpc_synth.config import DpConfig
    from smpc_synth.data import infer_schema, validate
    from smpc_synth.dp.zcdp import check_budget
    from smpc_synth.models import Privacy, Synthesizer

    torch.set_num_threads(1)
    budget = DpConfig(epsilon, delta)
    if epsilon is not None:
        check_budget(epsilon, budget.resolved_delta(), epsilon_name="epsilon", delta_name="delta")
    schema = schema or infer_schema(data)
    frame = validate(data, schema, source=source)
    return Synthesizer.fit(
        frame,
        schema,
        generator=generator,
        epochs=epochs,
        seed=seed,
        params=params,
        privacy=Privacy.from_run(budget),
    )


def sample(model: Synthesizer | str | Path, n: int, *, seed: int = 0) -> pd.DataFrame:
    """Draw ``n`` synthetic rows from a synthesizer or a ``generator.pt`` file."""
    from smpc_synth.models import Synthesizer

    if not isinstance(model, Synthesizer):
        model = Synthesizer.load(model)
    return model.sample(n, seed=seed)


def evaluate(real: pd.DataFrame, synthetic: pd.DataFrame, **options: Any) -> dict[str, Any]:
    """Fidelity, utility (TSTR), privacy (DCR) and collapse indicators as a nested dict.

    ``options``: ``holdout``, ``target``, ``schema``, ``seed`` (see
    :func:`smpc_synth.eval.evaluate`, imported lazily: SDMetrics is slow to import).
    """
    from smpc_synth.eval import evaluate as _evaluate

    return _evaluate(real, synthetic, **options)


def simulate(
    parties: int = 3, *, epsilon: float | None = None, delta: float | None = None, **options: Any
) -> SimulationResult:
    """Run a whole multi-party session on this machine; see :mod:`smpc_synth.runtime.simulate`.
    ``epsilon`` / ``delta``: the privacy budget of ``aim`` / ``mst`` (the run config's ``dp``)."""
    from smpc_synth.runtime.simulate import simulate as _simulate

    if epsilon is not None or delta is not None:
        options["dp"] = {k: v for k, v in (("epsilon", epsilon), ("delta", delta)) if v is not None}
    return _simulate(parties, **options)
