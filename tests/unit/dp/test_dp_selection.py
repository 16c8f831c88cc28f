"""The fixed-point exponential mechanism: packed scores fit a 64-bit comparison and rank as
the exact scores do."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.dp.marginals import (
    SCORE_BITS,
    VALUE_BITS,
    packed_scores,
    plan_selection,
    unpack_index,
)
from smpc_synth.dp.sampling import GUMBEL_VALUE_ERROR
from smpc_synth.models.aim import SHIFT_ROOM


@settings(max_examples=60, deadline=None)
@given(
    candidates=st.integers(1, 700),
    max_weight=st.integers(1, 400),
    epsilon=st.floats(1e-3, 50),
    bound=st.floats(1, 1e8),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_scores_fit_and_rank_like_the_exact_scores(
    candidates, max_weight, epsilon, bound, seed
):
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, max_weight + 1, candidates)
    offsets = rng.random(candidates) * bound
    errors = rng.integers(0, int(bound * 2**SCORE_BITS * 1.5) + 1, candidates)
    plan = plan_selection(candidates, weights, offsets, epsilon, bound)
    packed = packed_scores(errors, weights, offsets, plan)
    worst_noise = 100 * plan.scale * 2**plan.bits * 2**plan.index_bits
    assert np.abs(packed).max() + worst_noise < 2 ** (VALUE_BITS + 1)
    exact = weights * np.minimum(errors, plan.clip) / 2**SCORE_BITS - offsets
    best = unpack_index(int(packed.max()), plan)
    # the winner's exact score is the best up to the public rounding of the offsets
    assert exact[best] >= exact.max() - 2.0**-plan.bits
    assert (
        plan.shift
        <= 2 * (2.0**-plan.bits / 2 + plan.scale * GUMBEL_VALUE_ERROR) / plan.scale + 1e-15
    )
    assert 4 * plan.shift <= SHIFT_ROOM * epsilon  # what AIM and MST leave room for


def test_ties_go_to_the_lowest_index():
    weights = np.ones(4, dtype=np.int64)
    plan = plan_selection(4, weights, np.zeros(4), 1.0, 100)
    packed = packed_scores(np.array([5, 9, 9, 2]), weights, np.zeros(4), plan)
    assert unpack_index(int(packed.max()), plan) == 1
