"""Training schedules of the neural generators: what ``generator_params.schedule`` sets.

``"default"`` trains with the generator's ``batch_size`` and ``lr`` as given. ``"latency"``
is for MPC training over links with a long round trip: an epoch's rounds grow with its
steps, not its rows, so it takes :data:`LATENCY_BATCH_FACTOR` times the generator's default
batch (5 times fewer steps an epoch, so fewer rounds and fewer optimizer openings) and
scales the default learning rate by :func:`latency_lr_factor` of that factor. Both follow
from the generator's defaults, so a schedule applied twice (a saved model's
hyperparameters read back) gives the same values; a ``batch_size`` or ``lr`` given beside
it that differs is refused.

This module is the one place for the rule; ``docs/scale.md`` has what it was chosen on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from smpc_synth.errors import InputError

DEFAULT = "default"
LATENCY = "latency"
SCHEDULES = (DEFAULT, LATENCY)
LATENCY_BATCH_FACTOR = 5
KEY = "generator_params.schedule"


def latency_lr_factor(k: float) -> float:
    """The learning rate's multiplier for batches ``k`` times the default: ``k`` (linear
    scaling; on ``fair`` it scored best of 1, sqrt(k) and k at equal epochs)."""
    return float(k)


def scheduled(params: Any, given: dict[str, Any], source: str) -> Any:
    """``params`` (a neural generator's hyperparameters) with its schedule applied.

    ``given`` is what the user set: a ``batch_size`` or ``lr`` beside a non-default
    schedule must equal what the schedule sets (InputError naming the key otherwise)."""
    if params.schedule not in SCHEDULES:
        raise InputError(
            f"{source}: parameter 'schedule' must be one of {', '.join(SCHEDULES)}, "
            f"got {params.schedule!r}"
        )
    if params.schedule == DEFAULT:
        return params
    defaults = type(params)()
    k = LATENCY_BATCH_FACTOR
    values = {"batch_size": defaults.batch_size * k, "lr": defaults.lr * latency_lr_factor(k)}
    for key, value in values.items():
        if key in given and not math.isclose(float(given[key]), value, rel_tol=1e-9):
            raise InputError(
                f"{source}: parameter '{key}' = {given[key]!r} conflicts with schedule "
                f"{params.schedule!r}, which sets it to {value!r}: give one or the other"
            )
    return dataclasses.replace(params, **values)


def check_batch_rows(params: Any, rows: int, source: str, what: str = "training rows") -> None:
    """Refuse (InputError naming the key) a non-default schedule whose batch is larger than
    the ``rows`` a batch is drawn from: the batch would be clipped to the rows and the
    learning rate, scaled for the larger batch, would no longer match it."""
    schedule = getattr(params, "schedule", DEFAULT)
    if schedule == DEFAULT or params.batch_size <= rows:
        return
    raise InputError(
        f"{source}: {KEY} = {schedule!r} takes batches of {params.batch_size:,} rows, "
        f"more than the {rows:,} {what}: use the default schedule"
    )
