"""One round of encrypted aggregation: parties encrypt, the aggregator adds, parties decrypt.

Party side: :func:`encrypt_update` (flatten, range-check, quantise, pack lanes, add the
pairwise mask, encrypt) and :func:`decrypt_sum` (decrypt, check integrality, remove the masks
mod M, split lanes, unflatten). Aggregator side: :func:`aggregate`, which needs only the public
context. Contexts are those of :data:`smpc_synth.he.params.OURS` (see :mod:`smpc_synth.he.keys`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tenseal as ts
import torch

from smpc_synth.errors import PeerError, SmpcSynthError
from smpc_synth.he.cipher import (
    BadCiphertext,
    CipherPool,
    decrypt_batch,
    encrypt_batch,
    run_batch,
    sum_batch,
)
from smpc_synth.he.masking import zero_sum_mask
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
from smpc_synth.he.params import MAX_ROUNDING_GAP, OURS, FixedPointLayout

Update = Mapping[str, torch.Tensor | np.ndarray]


def encrypt_update(
    ctx: ts.Context,
    update: Update,
    layout: FixedPointLayout,
    *,
    me: str = "",
    pair_secrets: Mapping[str, bytes] | None = None,
    round_index: int = 0,
    pool: CipherPool | None = None,
) -> list[bytes]:
    """Encrypt one party's update as few ciphertexts; masked when ``layout.masked``.

    ``pair_secrets`` come from :meth:`smpc_synth.he.masking.MaskKey.pair_secrets`; every party
    must use the same ``round_index`` and a fresh one each round. Raises InputError naming the
    tensor when a value is outside ``layout.max_abs``.
    """
    values, spec = flatten(update)
    check_range(values, layout, spec)
    packed = pack(values, layout, OURS.slots)
    if layout.masked:
        if pair_secrets is None:
            raise ValueError("a masked layout needs pair_secrets")
        mask = zero_sum_mask(me, pair_secrets, round_index, packed.size, layout.ring_bits)
        packed = centered_mod(packed + mask, layout.ring_bits)
    rows = packed.astype(np.float64).reshape(-1, OURS.slots)
    return run_batch(encrypt_batch, ctx, rows, pool)


def aggregate(
    ctx: ts.Context,
    submissions: Mapping[str, Sequence[bytes] | None],
    expected: Sequence[str],
    pool: CipherPool | None = None,
) -> list[bytes]:
    """The aggregator's sum of every expected party's ciphertexts, serialised.

    A party that is missing (absent or None: late, as the caller's deadline decided), sends a
    different number of ciphertexts, or sends bytes that are not ciphertexts raises PeerError
    naming it. Parties not in ``expected`` are refused too.
    """
    missing = [p for p in expected if submissions.get(p) is None]
    if missing:
        raise PeerError(f"no submission from {', '.join(missing)} this round", peer=missing[0])
    extra = sorted(set(submissions) - set(expected))
    if extra:
        raise PeerError(f"unexpected submission from {', '.join(extra)}", peer=extra[0])
    count = len(submissions[expected[0]])
    for party in expected:
        if len(submissions[party]) != count:
            raise PeerError(
                f"{party} sent {len(submissions[party])} ciphertexts, {expected[0]} sent {count}",
                peer=party,
            )
    columns = [[submissions[p][i] for p in expected] for i in range(count)]
    try:
        return run_batch(sum_batch, ctx, columns, pool)
    except BadCiphertext as exc:
        party = expected[exc.position]
        raise PeerError(f"{party} sent an invalid ciphertext ({exc.reason})", peer=party) from None


def decrypt_sum(
    ctx: ts.Context,
    blobs: Sequence[bytes],
    layout: FixedPointLayout,
    spec: UpdateSpec,
    pool: CipherPool | None = None,
) -> dict[str, torch.Tensor]:
    """Decrypt the aggregated ciphertexts into the summed update, shaped like ``spec``."""
    expected = slots_needed(spec.size, layout, OURS.slots)
    if len(blobs) * OURS.slots != expected:
        raise PeerError(
            f"the aggregated sum has {len(blobs)} ciphertexts, expected {expected // OURS.slots}"
        )
    try:
        parts = run_batch(decrypt_batch, ctx, blobs, pool)
    except ValueError as exc:
        raise PeerError(f"the aggregated sum is not a valid ciphertext list ({exc})") from None
    slots = np.concatenate(parts) if parts else np.zeros(0)
    rounded = np.rint(slots)
    if slots.size != expected or np.abs(slots - rounded).max(initial=0.0) > MAX_ROUNDING_GAP:
        raise SmpcSynthError(
            "the decrypted sum is not integral: ciphertexts were corrupted or made with "
            "other parameters"
        )
    packed = rounded.astype(np.int64)
    if layout.masked:
        packed = centered_mod(packed, layout.ring_bits)
    return unflatten(unpack(packed, layout, spec.size), spec)
