"""Pairwise masks: agreed secrets, zero sum mod M, fresh per round."""

import numpy as np
import pytest

from smpc_synth.errors import PeerError
from smpc_synth.he.masking import MaskKey, zero_sum_mask
from smpc_synth.he.packing import centered_mod

NAMES = ["alice", "bob", "carol", "dave"]


def _secrets(session="s1"):
    keys = {n: MaskKey() for n in NAMES}
    public = {n: k.public_bytes() for n, k in keys.items()}
    return {n: keys[n].pair_secrets(n, public, session) for n in NAMES}


def test_pairs_agree_and_sessions_differ():
    secrets = _secrets()
    assert secrets["alice"]["bob"] == secrets["bob"]["alice"]
    assert secrets["alice"]["bob"] != secrets["alice"]["carol"]
    assert set(secrets["alice"]) == {"bob", "carol", "dave"}


@pytest.mark.parametrize("ring_bits", [20, 40])
def test_masks_sum_to_zero_mod_m_and_look_uniform(ring_bits):
    secrets = _secrets()
    masks = [zero_sum_mask(n, secrets[n], 3, 10_000, ring_bits) for n in NAMES]
    assert not centered_mod(np.sum(masks, axis=0), ring_bits).any()
    one = masks[0].astype(float) / 2**ring_bits  # uniform on [-1/2, 1/2)
    assert abs(one.mean()) < 0.02 and abs(one.std() - 12**-0.5) < 0.01


def test_rounds_give_fresh_masks():
    secrets = _secrets()
    a = zero_sum_mask("bob", secrets["bob"], 1, 100, 40)
    b = zero_sum_mask("bob", secrets["bob"], 2, 100, 40)
    assert not np.array_equal(a, b)


def test_bad_public_key_names_the_peer():
    with pytest.raises(PeerError, match="mallory") as info:
        MaskKey().pair_secrets("alice", {"mallory": b"short"}, "s1")
    assert info.value.peer == "mallory"
