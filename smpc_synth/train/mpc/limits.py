"""What MPC training can carry, checked on the public schema before any network traffic.

MPC training runs in CrypTen's fixed point (16 fractional bits in a 64-bit ring) and asks
the dealer for correlated randomness in requests of bounded size. Both set limits that a
schema can exceed; :func:`check_mpc_inputs` refuses such a schema (an
:class:`~smpc_synth.errors.InputError`, exit code 2) naming the column and the limit, so
that nothing a user gives fails once the session has started:

- a categorical column may have at most :data:`MAX_CATEGORIES` categories: a uniform
  probability over its categories must stay :data:`MIN_PROBABILITY_UNITS` units of fixed
  point (and the span softmax's range reduction covers ``2^(MAX_POWERS + 1)``);
- the encoded width of the table, at most one unit per category, two per boolean and
  ``1 + MAX_MODES`` per numeric column, must keep every dealer request of a training step
  within the dealer's bound (:data:`~smpc_synth.mpc.dealer.protocol.MAX_TUPLE_ELEMENTS` elements, a
  comparison an eighth of that): the twin of each generator says what its largest request is;
- the VAE's ``logvar_bound`` must keep ``exp(logvar)`` where fixed point's products do not
  wrap around (:data:`MAX_LOGVAR_BOUND`).
"""

from __future__ import annotations

import math
from typing import Any

from smpc_synth.data.defaults import MAX_MODES
from smpc_synth.data.schema import Schema
from smpc_synth.errors import InputError
from smpc_synth.mpc.primitives.functions import MAX_POWERS

FRACTION_BITS = 16  # CrypTen's default fixed point
MIN_PROBABILITY_UNITS = 16  # 1 / categories must be this many units of 2^-16 at least
MAX_CATEGORIES = min(2**FRACTION_BITS // MIN_PROBABILITY_UNITS, 2 ** (MAX_POWERS + 1))
# exp(logvar) up to e^8 ~ 3,000: a product of that size wraps around in two-party truncation
# with probability ~1e-6 per element (value / 2^32), which the guard's rollbacks absorb
MAX_LOGVAR_BOUND = 8.0


def encoded_width_bound(schema: Schema, numeric: str) -> int:
    """The largest encoded width ``schema`` can have with the numeric encoding ``numeric``
    (the exact width depends on the modes the encoder fits to the data)."""
    width = 0
    for column in schema.columns:
        if column.kind == "categorical":
            width += len(column.categories or ())
        elif column.kind == "boolean":
            width += 2
        else:
            width += 1 + MAX_MODES if numeric == "mode" else 1
    return width


def check_mpc_inputs(schema: Schema, generator: str, params: dict[str, Any], source: str) -> None:
    """Refuse (InputError) a schema or generator setting MPC training cannot carry;
    ``source`` names the schema in messages."""
    from smpc_synth.models import get_generator
    from smpc_synth.models.base import parse_hparams
    from smpc_synth.mpc.dealer.protocol import MAX_TUPLE_ELEMENTS
    from smpc_synth.train.mpc.twins import TWINS

    for column in schema.columns:
        count = len(column.categories or ())
        if count > MAX_CATEGORIES:
            raise InputError(
                f"{source}: column '{column.name}' has {count} categories; MPC training "
                f"takes at most {MAX_CATEGORIES} per column (fixed point's resolution of "
                "their probabilities): merge rare categories"
            )
    twin = TWINS.get(generator)
    if twin is None:  # not trained on shares (the gaussian: secure sums only)
        return
    gen_cls = get_generator(generator)
    hparams = parse_hparams(gen_cls.Params, params, f"generator '{generator}'")
    width = encoded_width_bound(schema, gen_cls.numeric_encoding)
    largest, comparisons = twin.largest_requests(width, hparams)
    over = [
        f"{what} of {count:,} elements (its limit: {limit:,})"
        for what, count, limit in (
            ("a tuple", largest, MAX_TUPLE_ELEMENTS),
            ("a comparison", comparisons, MAX_TUPLE_ELEMENTS // 8),
        )
        if count > limit
    ]
    if over:
        widest = sorted(schema.columns, key=lambda c: -len(c.categories or ()))[:3]
        names = ", ".join(f"'{c.name}' ({len(c.categories or ())})" for c in widest)
        raise InputError(
            f"{source}: the table encodes to up to {width:,} units (widest columns: {names}); "
            f"MPC training with generator '{generator}' and batch size {hparams.batch_size} "
            f"would ask the dealer for {' and '.join(over)}: drop or merge categories, or "
            + (
                "lower the batch size"
                if getattr(hparams, "schedule", "default") == "default"
                else "use the default schedule (generator_params.schedule)"
            )
        )
    bound = getattr(hparams, "logvar_bound", None)
    if bound is not None and not 0 < bound <= MAX_LOGVAR_BOUND:
        raise InputError(
            f"generator '{generator}': logvar_bound {bound} is outside (0, {MAX_LOGVAR_BOUND}] "
            f"in MPC mode (exp(logvar) up to e^{MAX_LOGVAR_BOUND:g} = "
            f"{math.exp(MAX_LOGVAR_BOUND):,.0f} in fixed point)"
        )
