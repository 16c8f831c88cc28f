"""The CKKS parameters hold what params.py claims: exact integers up to EXACT_INT_BITS."""

import numpy as np
import pytest
import tenseal as ts

from smpc_synth.errors import InputError
from smpc_synth.he.keys import create_context
from smpc_synth.he.params import EXACT_INT_BITS, MAX_ROUNDING_GAP, OURS, choose_layout


@pytest.mark.parametrize("sign", [1, -1])
def test_worst_case_slot_sum_decrypts_exactly(sign):
    ctx = create_context()
    parties = 8
    # a constant vector is the worst case for coefficient size; the sum reaches 2**EXACT_INT_BITS
    value = sign * 2.0 ** (EXACT_INT_BITS - 3)
    total = None
    for _ in range(parties):
        vec = ts.ckks_vector(ctx, [value] * OURS.slots)
        total = vec if total is None else total + vec
    decrypted = np.asarray(total.decrypt())
    assert np.abs(decrypted - parties * value).max() < MAX_ROUNDING_GAP


def test_random_slot_sums_round_to_the_exact_integers():
    ctx = create_context()
    rng = np.random.default_rng(0)
    bound = 2**EXACT_INT_BITS // 8
    values = [rng.integers(-bound, bound, OURS.slots) for _ in range(8)]
    total = None
    for v in values:
        vec = ts.ckks_vector(ctx, v.astype(float).tolist())
        total = vec if total is None else total + vec
    decrypted = np.asarray(total.decrypt())
    assert np.abs(decrypted - np.sum(values, axis=0)).max() < MAX_ROUNDING_GAP


@pytest.mark.parametrize("parties", [2, 3, 5, 8])
@pytest.mark.parametrize("masked", [True, False])
def test_layout_meets_error_and_fits_a_slot(parties, masked):
    layout = choose_layout(1 / 16, parties, masked=masked)
    assert layout.max_error <= 1e-6
    headroom = int(np.ceil(np.log2(parties))) if masked else 0
    assert layout.ring_bits - 1 + headroom <= EXACT_INT_BITS
    assert parties * layout.max_quantum < 2 ** (layout.lane_bits - 1)


def test_update_sized_range_packs_two_values_per_slot_and_looser_error_more():
    tight = choose_layout(1 / 16, 3)
    assert tight.lanes >= 2
    assert choose_layout(1 / 16, 3, max_error=1e-3).lanes > tight.lanes


def test_impossible_layout_is_refused():
    with pytest.raises(InputError, match="max_error"):
        choose_layout(1e6, 8, max_error=1e-12)
