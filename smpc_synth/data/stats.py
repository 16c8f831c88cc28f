"""Helpers for additive statistics: sum over parties, and pack into one flat vector.

A statistics dict maps a key to a 1-D float array. Parties agree on key order and shapes by
building the same encoder from the same schema (see ``TableEncoder.stats_template``), so a
dict can cross the wire (or a CKKS ciphertext) as one flat vector.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

Stats = dict[str, np.ndarray]


def sum_stats(parts: Iterable[Stats]) -> Stats:
    """Elementwise sum of several parties' statistics; their keys and shapes must agree."""
    parts = list(parts)
    if not parts:
        raise ValueError("no statistics to sum")
    keys = list(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        if list(part) != keys:
            raise ValueError(f"statistics {i} have keys {list(part)}, expected {keys}")
    return {k: np.sum([np.asarray(p[k], dtype=float) for p in parts], axis=0) for k in keys}


def flatten_stats(stats: Stats) -> np.ndarray:
    """All values, in key order, as one float64 vector."""
    return np.concatenate([np.asarray(v, dtype=float).ravel() for v in stats.values()])


def unflatten_stats(vector: np.ndarray, template: Stats) -> Stats:
    """Split a flat vector back into a dict shaped like ``template``."""
    vector = np.asarray(vector, dtype=float)
    sizes = [np.asarray(v).size for v in template.values()]
    if vector.size != sum(sizes):
        raise ValueError(f"expected {sum(sizes)} values, got {vector.size}")
    pieces = np.split(vector, np.cumsum(sizes)[:-1])
    return {k: p.reshape(np.shape(v)) for (k, v), p in zip(template.items(), pieces, strict=True)}
