"""One call that checks the inputs, runs every metric family and returns a JSON-ready report."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from smpc_synth.errors import InputError
from smpc_synth.eval.collapse import collapse_metrics
from smpc_synth.eval.columns import canonical, check_same_columns, column_kinds
from smpc_synth.eval.defaults import HOLDOUT_FRACTION
from smpc_synth.eval.fidelity import fidelity_metrics
from smpc_synth.eval.privacy import privacy_metrics
from smpc_synth.eval.space import encode
from smpc_synth.eval.utility import classification_problem, empty_utility, utility_metrics

if TYPE_CHECKING:
    from smpc_synth.data.schema import Schema


def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    target: str | None = None,
    schema: Schema | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fidelity, utility, privacy and collapse of ``synthetic`` against ``real``.

    ``real`` is the table the generator was trained on; ``holdout`` real rows it never saw
    (when None, a seeded split of ``real``, stratified on ``target``, stands in). Returns
    nested dicts of plain JSON types (NaN becomes None) under ``fidelity``, ``utility``,
    ``privacy``, ``collapse`` and ``meta``.
    """
    # One thread: gradient boosting otherwise spawns a thread per core and, with parties or
    # other work sharing the cores, runs 40x slower (measured on 2 cores).
    with threadpool_limits(limits=1):
        return _evaluate(real, synthetic, holdout, target, schema, seed)


def _evaluate(real, synthetic, holdout, target, schema, seed) -> dict[str, Any]:
    started = time.perf_counter()
    check_same_columns(real, synthetic, "synthetic")
    if holdout is not None:
        check_same_columns(real, holdout, "holdout")
    if target is not None and target not in real.columns:
        raise InputError(f"target column {target!r} is not in the real table")
    kinds = column_kinds(real, schema)
    real_c = canonical(real, kinds, "real")
    syn_c = canonical(synthetic, kinds, "synthetic")
    if holdout is None:
        train_c, hold_c = _split(real_c, target, kinds, seed)
        holdout_source = f"split from real ({HOLDOUT_FRACTION:.0%}, seed {seed})"
    else:
        train_c, hold_c = real_c, canonical(holdout, kinds, "holdout")
        holdout_source = "given"

    seconds: dict[str, float] = {}

    def timed(name: str, fn, *args) -> dict[str, Any]:
        t0 = time.perf_counter()
        result = fn(*args)
        seconds[name] = time.perf_counter() - t0
        return result

    train_x, syn_x, hold_x = encode(train_c, kinds, syn_c, hold_c)
    report = {
        "fidelity": timed("fidelity", fidelity_metrics, train_c, syn_c, kinds),
        "utility": (
            timed("utility", utility_metrics, train_c, syn_c, hold_c, target, kinds, seed)
            if target is not None
            else empty_utility("no target column given: pass target (--target) for TSTR")
        ),
        "privacy": timed("privacy", privacy_metrics, train_x, syn_x, hold_x, seed),
        "collapse": timed(
            "collapse", collapse_metrics, train_c, syn_c, kinds, train_x, syn_x, seed
        ),
        "meta": {
            "rows": {"real": len(train_c), "synthetic": len(syn_c), "holdout": len(hold_c)},
            "columns": len(kinds),
            "column_kinds": dict(kinds),
            "target": target,
            "holdout": holdout_source,
            "seed": seed,
            "seconds_by_section": seconds,
        },
    }
    report["meta"]["seconds"] = time.perf_counter() - started
    return to_json_types(report)


def _split(
    real: pd.DataFrame, target: str | None, kinds: dict, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/holdout split, stratified on the target when every class allows it."""
    stratify = None
    if target is not None and classification_problem(real, target, kinds[target]) is None:
        classes = real[target].astype(str)  # missing values become a class of their own
        if classes.value_counts().min() >= 2:
            stratify = classes
    try:
        train, hold = train_test_split(
            real, test_size=HOLDOUT_FRACTION, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise InputError(f"real table is too small to split off a holdout: {exc}") from exc
    return train, hold


def to_json_types(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, tuples as lists and NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): to_json_types(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_types(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value
