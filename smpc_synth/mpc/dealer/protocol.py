"""What a data party's provider and the dealer agree on: requests, limits and frames.

Party 0 sends each tuple request as a dict ``{"f": kind, "args": [...], "kwargs": {...}}``
(by the CrypTen object codec); the dealer answers with party 0's share framed by
:data:`FRAME_WORDS` words. Both sides size products the same way (:func:`product_size`),
and both hold requests to :data:`MAX_TUPLE_ELEMENTS`, read from this module when used
(tests lower it to exercise the split of large requests at a small scale).
"""

from __future__ import annotations

import functools

import torch

from smpc_synth.mpc.primitives import prg

PRODUCT_OPS = frozenset(
    {"mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"}
)
PRODUCT_KWARGS = frozenset({"stride", "padding", "dilation", "groups", "output_padding"})
MAX_TUPLE_ELEMENTS = 1 << 26  # one request may not make the dealer allocate more (512 MiB)
# A comparison's material is ~11 words an element (compare.Layout): one request compares
# at most MAX_TUPLE_ELEMENTS / COMPARISON_FRACTION elements. Larger tuples and comparisons
# are split by the parties (DealerProvider, beaver.py, compare.sign_bits).
COMPARISON_FRACTION = 8
DONE = "done"  # a party needs no more tuples
CPU = "cpu"  # a benchmark asks how much CPU time the dealer has used
REKEY = "rekey"  # debug-seeded runs only: restart every stream from keys for these labels
FRAME_WORDS = 3  # int64 words before each share the dealer sends: generation, number, tag
CPU_NUMBER = -1  # the request number that frames the dealer's CPU clock


@functools.lru_cache(maxsize=4096)
def broadcast(size0: torch.Size, size1: torch.Size) -> torch.Size:
    # torch.broadcast_shapes runs ~40 lines of Python (torch._refs); a step asks ~100 times
    return torch.Size(torch.broadcast_shapes(size0, size1))


def product_size(size0: torch.Size, size1: torch.Size, op: str, kwargs: dict) -> torch.Size:
    """The size of ``op(a, b)``, without arithmetic."""
    if op == "mul":
        return broadcast(torch.Size(size0), torch.Size(size1))
    if op == "matmul" and len(size0) >= 1 and len(size1) >= 1:
        return matmul_size(torch.Size(size0), torch.Size(size1))
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    return _meta_product_size(torch.Size(size0), torch.Size(size1), op, frozen)


def matmul_size(size0: torch.Size, size1: torch.Size) -> torch.Size:
    """torch.matmul's rule: 1-D operands gain a dimension that the result drops again;
    batch dimensions broadcast."""
    left = size0 if len(size0) > 1 else torch.Size((1, *size0))
    right = size1 if len(size1) > 1 else torch.Size((*size1, 1))
    if left[-1] != right[-2]:
        raise ValueError(f"matmul of {tuple(size0)} and {tuple(size1)}: inner sizes differ")
    batch = broadcast(left[:-2], right[:-2])
    rows = (left[-2],) if len(size0) > 1 else ()
    cols = (right[-1],) if len(size1) > 1 else ()
    return torch.Size((*batch, *rows, *cols))


@functools.lru_cache(maxsize=1024)
def _meta_product_size(size0: torch.Size, size1: torch.Size, op: str, kwargs: tuple):
    # on meta tensors (no arithmetic); the first call of each op costs ~0.5-1 s of imports
    a = torch.empty(size0, device="meta")
    b = torch.empty(size1, device="meta")
    return getattr(torch, op)(a, b, **dict(kwargs)).size()


def dealer_key(debug_seed: int, party: str, *labels: int) -> bytes:
    """The key ``party`` shares with the dealer in a debug-seeded run (tests only)."""
    return prg.debug_key(debug_seed, "dealer", party, *labels)
