"""Flattening and fixed-point lane packing (pure integer arithmetic, no TenSEAL)."""

import numpy as np
import pytest
import torch

from smpc_synth.errors import InputError
from smpc_synth.he.packing import (
    UpdateSpec,
    centered_mod,
    check_range,
    flatten,
    pack,
    slots_needed,
    unflatten,
    unpack,
)
from smpc_synth.he.params import choose_layout

SLOTS = 2048


def _update(rng, scale=0.05):
    return {
        "layer.weight": torch.tensor(rng.uniform(-scale, scale, (7, 5)), dtype=torch.float32),
        "layer.bias": torch.tensor(rng.uniform(-scale, scale, 5), dtype=torch.float64),
        "scalar": torch.tensor(rng.uniform(-scale, scale)),
    }


def test_flatten_round_trips_shapes_and_dtypes():
    update = _update(np.random.default_rng(0))
    vector, spec = flatten(update)
    assert vector.shape == (spec.size,) == (41,)
    back = unflatten(vector, spec)
    assert list(back) == list(update)
    for name, tensor in update.items():
        assert back[name].dtype == tensor.dtype
        assert back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)
    assert UpdateSpec.of(update) == spec
    assert spec.locate(36) == ("layer.bias", 1)


@pytest.mark.parametrize("parties", [2, 5, 8])
def test_packed_sums_unpack_to_the_sum_within_the_error_bound(parties):
    rng = np.random.default_rng(parties)
    layout = choose_layout(0.25, parties, masked=False)
    vectors = [rng.uniform(-0.25, 0.25, 5000) for _ in range(parties)]
    vectors[0][:3] = [0.25, -0.25, 0.0]  # the range's edges
    packed = sum(pack(v, layout, SLOTS) for v in vectors)
    assert packed.size == slots_needed(5000, layout, SLOTS)
    assert packed.size % SLOTS == 0
    total = unpack(packed, layout, 5000)
    error = np.abs(total - np.sum(vectors, axis=0)).max()
    assert error <= layout.max_error


def test_out_of_range_and_non_finite_values_raise_naming_the_tensor():
    layout = choose_layout(0.05, 3)
    update = _update(np.random.default_rng(1))
    update["layer.bias"][2] = 0.5
    vector, spec = flatten(update)
    with pytest.raises(InputError, match=r"'layer.bias' \[2\]"):
        check_range(vector, layout, spec)
    update["layer.bias"][2] = float("nan")
    vector, spec = flatten(update)
    with pytest.raises(InputError, match=r"layer.bias"):
        check_range(vector, layout, spec)


def test_overflowing_lanes_raise_instead_of_wrapping():
    layout = choose_layout(0.05, 2, masked=False)
    top = np.int64(2 ** (layout.ring_bits - 1) - 1)
    with pytest.raises(Exception, match="overflows"):
        unpack(np.array([top * 2] * SLOTS, dtype=np.int64), layout, 10)


def test_centered_mod_range_and_congruence():
    x = np.random.default_rng(2).integers(-(2**50), 2**50, 1000)
    r = centered_mod(x, 20)
    assert r.min() >= -(2**19) and r.max() < 2**19
    assert np.all((x - r) % 2**20 == 0)
