"""The Python API: DataFrames in, DataFrames and plain dicts out. The CLI calls these."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

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
    progress: bool | Callable[[dict[str, Any]], None] | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    dp: Any = None,
) -> Synthesizer:
    """Fit a generator on one table in the clear (plaintext mode) and return it.

    ``progress``: None (default) shows a bar with ETA when stderr is a terminal and stays
    quiet otherwise; True also prints a plain line now and then when it is not; False is
    quiet; a callable receives each epoch event instead.

    ``epsilon`` (and ``delta``, default 1e-6) is the privacy budget: every generator then
    trains with differential privacy and the budget bounds everything the synthesizer
    holds (``Synthesizer.privacy`` holds the ledger); ``aim`` and ``mst`` need it. ``dp``
    (a :class:`~smpc_synth.config.DpConfig` or a dict of its keys) gives the other
    ``[run.dp]`` settings.
    """
    import torch

    from smpc_synth.data import infer_schema, validate
    from smpc_synth.models import Synthesizer, check_epochs_apply, planned_epochs
    from smpc_synth.runtime.progress import ProgressView, RunProgress, epoch_reporter

    check_epochs_apply(generator, epochs, "train(): epochs")
    total = planned_epochs(generator, epochs, params)
    torch.set_num_threads(1)
    dp = _dp_config(generator, epsilon, delta, dp)
    schema = schema or infer_schema(data)
    frame = validate(data, schema, source=source)
    if callable(progress):
        view: Any = nullcontext(progress)
    else:
        mode = {True: "auto", None: "bar" if _stderr_is_terminal() else "off", False: "off"}
        view = ProgressView(RunProgress(f"plaintext · {generator}", total), mode[progress])
    with view as report:
        return Synthesizer.fit(
            frame,
            schema,
            generator=generator,
            epochs=epochs,
            seed=seed,
            params=params,
            on_epoch=epoch_reporter(report, total),
            dp=dp,
        )


def _dp_config(generator: str, epsilon: float | None, delta: float | None, dp: Any):
    """The run's ``[dp]`` settings from ``train()``'s arguments, checked as a run config's
    are (a bad value names the argument; a generator that needs a budget gets one)."""
    from dataclasses import asdict, is_dataclass

    from smpc_synth.config import DpConfig, RunConfig, drop_none
    from smpc_synth.dp.budget import check_budget
    from smpc_synth.errors import InputError

    table = dict(drop_none(asdict(dp)) if is_dataclass(dp) else dp or {})
    if epsilon is not None or delta is not None:
        if epsilon is None:
            raise InputError("train(): delta needs epsilon (the budget it belongs to)")
        table["epsilon"] = epsilon
        if delta is not None:
            table["delta"] = delta
    if table.get("epsilon") is not None:
        delta_value = table.get("delta", DpConfig().delta)
        check_budget(table["epsilon"], delta_value, epsilon_name="epsilon", delta_name="delta")
    config = RunConfig.from_dict({"generator": generator, "dp": table}, source="train()")
    return config.dp


def _stderr_is_terminal() -> bool:
    import sys

    from smpc_synth.runtime.progress import is_terminal

    return is_terminal(sys.stderr)


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
    ``epsilon`` / ``delta``: the run's privacy budget (the run config's ``dp``), any generator."""
    from smpc_synth.runtime.simulate import simulate as _simulate

    if epsilon is not None or delta is not None:
        given = {k: v for k, v in (("epsilon", epsilon), ("delta", delta)) if v is not None}
        options["dp"] = {**dict(options.get("dp") or {}), **given}
    return _simulate(parties, **options)
