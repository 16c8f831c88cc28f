"""TenSEAL ciphertext work in bulk: encrypt rows, sum submissions, decrypt, optionally in processes.

TenSEAL holds the GIL, so threads do not help; a :class:`CipherPool` runs the same batch
functions in worker processes that each load the context once. Workers are spawned (not
forked) so that a parent with gRPC threads stays safe. Below ``PARALLEL_MIN_CIPHERTEXTS`` the
pool's start-up and copying cost more than they save (measured in ``smpc_synth_bench.he_agg``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import tenseal as ts

PARALLEL_MIN_CIPHERTEXTS = 256
_BATCH = 32  # ciphertexts per task: big enough to amortise IPC, small enough to balance

_worker_ctx: ts.Context | None = None


class BadCiphertext(ValueError):
    """Submission number ``position`` (in the order given) is not a valid ciphertext."""

    def __init__(self, position: int, reason: str):
        super().__init__(position, reason)
        self.position = position
        self.reason = reason


def encrypt_batch(ctx: ts.Context, rows: Sequence[np.ndarray]) -> list[bytes]:
    return [ts.ckks_vector(ctx, np.asarray(r, dtype=np.float64).tolist()).serialize() for r in rows]


def decrypt_batch(ctx: ts.Context, blobs: Sequence[bytes]) -> list[np.ndarray]:
    return [np.asarray(ts.ckks_vector_from(ctx, b).decrypt()) for b in blobs]


def sum_batch(ctx: ts.Context, columns: Sequence[Sequence[bytes]]) -> list[bytes]:
    """For each ciphertext index, the sum of all submissions' ciphertexts at that index."""
    out = []
    for column in columns:
        total = None
        for position, blob in enumerate(column):
            try:
                vec = ts.ckks_vector_from(ctx, blob)
                total = vec if total is None else total.add_(vec)
            except ValueError as exc:
                raise BadCiphertext(position, str(exc)) from None
        out.append(total.serialize())
    return out


def _init_worker(context: bytes) -> None:
    global _worker_ctx
    _worker_ctx = ts.context_from(context, n_threads=1)


def _in_worker(fn: Callable[[ts.Context, Any], list], batch: Any) -> list:
    return fn(_worker_ctx, batch)


class CipherPool:
    """Worker processes holding one serialised context; reuse it across rounds."""

    def __init__(self, context: bytes, workers: int | None = None):
        self.workers = workers or min(os.cpu_count() or 1, 4)
        self._executor = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(context,),
        )

    def run(self, fn: Callable[[ts.Context, Any], list], items: Sequence[Any]) -> list:
        """``fn(ctx, batch)`` over batches of ``items``, results concatenated in order."""
        batches = [items[i : i + _BATCH] for i in range(0, len(items), _BATCH)]
        results = self._executor.map(_in_worker, [fn] * len(batches), batches)
        return [r for part in results for r in part]

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)

    def __enter__(self) -> CipherPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_batch(
    fn: Callable[[ts.Context, Any], list],
    ctx: ts.Context,
    items: Sequence[Any],
    pool: CipherPool | None = None,
) -> list:
    """Run a batch function in the pool when given and worth it, else in this process."""
    if pool is not None and len(items) >= PARALLEL_MIN_CIPHERTEXTS:
        return pool.run(fn, items)
    return fn(ctx, items)
