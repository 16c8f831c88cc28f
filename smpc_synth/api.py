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
    dp: Any = None,
) -> Synthesizer:
    """Fit a generator on one table in the clear (plaintext mode) and return it.

    ``progress``: None (default) shows a bar with ETA when stderr is a terminal and stays
    quiet otherwise; True also prints a plain line now and then when it is not; False is
    quiet; a callable receives each epoch event instead. ``dp``: a
    :class:`~smpc_synth.config.DpConfig` with ``epsilon`` set trains with differential
    privacy (``Synthesizer.privacy`` then holds the ledger).
    """
    import torch

    from smpc_synth.data import infer_schema, validate
    from smpc_synth.models import Synthesizer, check_epochs_apply, planned_epochs
    from smpc_synth.runtime.progress import ProgressView, RunProgress, epoch_reporter

    check_epochs_apply(generator, epochs, "train(): epochs")
    total = planned_epochs(generator, epochs, params)
    torch.set_num_threads(1)
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


def simulate(parties: int = 3, **options: Any) -> SimulationResult:
    """Run a whole multi-party session on this machine; see :mod:`smpc_synth.runtime.simulate`."""
    from smpc_synth.runtime.simulate import simulate as _simulate

    return _simulate(parties, **options)
