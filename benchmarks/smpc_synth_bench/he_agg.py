"""``smpc-synth bench he-agg``: what encrypted aggregation costs, per scheme, size and party count.

Schemes, all on the same synthetic updates (a few weight matrices and biases, values about
0.02, within +-1/16):

* ``ckks``: as we ship it (fixed-point lanes, pairwise masks, 4096 / [60, 40] / 2**16), in
  this process; ``ckks-parallel``: the same with a 2-process :class:`CipherPool` (1e5+ only).
* ``ckks-nvflare``: NVFlare-like (8192, [60, 40, 40], scale 2**40, one vector per layer).
* ``masking``: pairwise masks alone on int64 fixed point (Flower SecAgg+ style), no HE.
* ``plaintext``: float32 values summed with numpy.

``encrypt_s`` is one party's time (mean over parties), ``aggregate_s`` the aggregator's for all
submissions, ``decrypt_s`` one party's time to decode the sum; ``max_abs_error`` is against
the float64 sum. The 1e7 cases take minutes per scheme on 2 cores: they run with ``full=True``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from smpc_synth.he.aggregate import aggregate, decrypt_sum, encrypt_update
from smpc_synth.he.cipher import CipherPool, decrypt_batch, encrypt_batch, sum_batch
from smpc_synth.he.keys import (
    create_context,
    load_context,
    public_context_bytes,
    secret_context_bytes,
)
from smpc_synth.he.masking import MaskKey, zero_sum_mask
from smpc_synth.he.packing import UpdateSpec, centered_mod, flatten
from smpc_synth.he.params import NVFLARE_LIKE, choose_layout

PARAMS = (10_000, 100_000, 1_000_000, 10_000_000)
PARTIES = (2, 3, 5, 8)
FULL_ONLY_ABOVE = 1_000_000
MAX_ABS = 1 / 16
PARALLEL_FROM = 100_000
_BIAS = 64  # bias vectors: each costs NVFlare-like a whole ciphertext


def _updates(n_params: int, parties: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    weight = (n_params - 4 * _BIAS) // 4
    sizes = {}
    for i in range(4):
        sizes[f"l{i}.weight"] = weight + (n_params - 4 * _BIAS - 4 * weight if i == 0 else 0)
        sizes[f"l{i}.bias"] = _BIAS
    return [
        {
            k: rng.normal(0, 0.02, s).clip(-MAX_ABS, MAX_ABS).astype(np.float32)
            for k, s in sizes.items()
        }
        for _ in range(parties)
    ]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _row(scheme, n_params, parties, enc, agg, dec, wire, result, truth, **extra) -> dict:
    return {
        "params": n_params,
        "parties": parties,
        "scheme": scheme,
        "encrypt_s": enc,
        "aggregate_s": agg,
        "decrypt_s": dec,
        "wire_bytes_per_param": wire / n_params,
        "max_abs_error": float(np.abs(result - truth).max()),
        **extra,
    }


def _ours(ctx, public, updates, truth, pool: CipherPool | None, scheme: str) -> dict:
    names = [f"p{i}" for i in range(len(updates))]
    keys = {n: MaskKey() for n in names}
    pubs = {n: k.public_bytes() for n, k in keys.items()}
    layout = choose_layout(MAX_ABS, len(names))
    subs, enc = {}, 0.0
    for name, update in zip(names, updates):
        secrets = keys[name].pair_secrets(name, pubs, "bench")
        subs[name], t = _timed(
            partial(
                encrypt_update,
                ctx,
                update,
                layout,
                me=name,
                pair_secrets=secrets,
                round_index=1,
                pool=pool,
            )
        )
        enc += t
    summed, agg = _timed(lambda: aggregate(public, subs, names, pool=pool))
    spec = UpdateSpec.of(updates[0])
    result, dec = _timed(lambda: decrypt_sum(ctx, summed, layout, spec, pool=pool))
    wire = sum(len(b) for b in subs[names[0]])
    return _row(
        scheme,
        truth.size,
        len(names),
        enc / len(names),
        agg,
        dec,
        wire,
        flatten(result)[0],
        truth,
        lanes=layout.lanes,
        frac_bits=layout.frac_bits,
    )


def _nvflare(ctx, public, updates, truth) -> dict:
    subs, enc = [], 0.0
    for update in updates:
        blobs, t = _timed(partial(encrypt_batch, ctx, list(update.values())))
        subs.append(blobs)
        enc += t
    summed, agg = _timed(lambda: sum_batch(public, list(zip(*subs))))
    parts, dec = _timed(lambda: decrypt_batch(ctx, summed))
    wire = sum(len(b) for b in subs[0])
    return _row(
        "ckks-nvflare",
        truth.size,
        len(updates),
        enc / len(updates),
        agg,
        dec,
        wire,
        np.concatenate(parts),
        truth,
    )


def _masking(updates, truth) -> dict:
    names = [f"p{i}" for i in range(len(updates))]
    keys = {n: MaskKey() for n in names}
    pubs = {n: k.public_bytes() for n, k in keys.items()}
    layout = choose_layout(MAX_ABS, len(names))  # same resolution; one value per int64 word
    scale, bits = 2.0**layout.frac_bits, layout.lane_bits

    def submit(name: str, update: dict[str, np.ndarray]) -> bytes:
        q = np.rint(flatten(update)[0] * scale).astype(np.int64)
        secrets = keys[name].pair_secrets(name, pubs, "bench")
        return centered_mod(q + zero_sum_mask(name, secrets, 1, q.size, bits), bits).tobytes()

    subs, enc = [], 0.0
    for name, update in zip(names, updates):
        blob, t = _timed(partial(submit, name, update))
        subs.append(blob)
        enc += t
    summed, agg = _timed(lambda: np.sum([np.frombuffer(b, np.int64) for b in subs], axis=0))
    result, dec = _timed(lambda: centered_mod(summed, bits) / scale)
    return _row(
        "masking", truth.size, len(names), enc / len(names), agg, dec, len(subs[0]), result, truth
    )


def _plaintext(updates, truth) -> dict:
    blobs, enc = _timed(lambda: [flatten(u)[0].astype(np.float32).tobytes() for u in updates])
    summed, agg = _timed(lambda: np.sum([np.frombuffer(b, np.float32) for b in blobs], axis=0))
    return _row(
        "plaintext",
        truth.size,
        len(updates),
        enc / len(updates),
        agg,
        0.0,
        len(blobs[0]),
        summed.astype(np.float64),
        truth,
    )


def run_he_agg(
    out_dir: Path | str,
    params: Sequence[int | float] = PARAMS,
    parties: Sequence[int] = PARTIES,
    *,
    full: bool = False,
    console: Console | None = None,
) -> list[dict]:
    """Measure every scheme for every (size, party count); write ``out_dir/he_agg.json``.

    Sizes above 1e6 run only with ``full=True`` (minutes each on 2 cores).
    """
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ours = create_context()
    ours_public = load_context(public_context_bytes(ours), secret=False)
    nv = create_context(NVFLARE_LIKE)
    nv_public = load_context(public_context_bytes(nv), secret=False)
    rows: list[dict] = []
    with CipherPool(secret_context_bytes(ours), workers=2) as pool:
        for n_params in (int(p) for p in params):
            if n_params > FULL_ONLY_ABOVE and not full:
                continue
            for n in parties:
                updates = _updates(n_params, n, seed=n)
                truth = np.sum([flatten(u)[0] for u in updates], axis=0)
                rows.append(_ours(ours, ours_public, updates, truth, None, "ckks"))
                if n_params >= PARALLEL_FROM:
                    rows.append(_ours(ours, ours_public, updates, truth, pool, "ckks-parallel"))
                rows.append(_nvflare(nv, nv_public, updates, truth))
                rows.append(_masking(updates, truth))
                rows.append(_plaintext(updates, truth))
    (out_dir / "he_agg.json").write_text(json.dumps(rows, indent=2))
    _print(rows, console or Console(width=max(Console().width, 120)))
    return rows


def _print(rows: list[dict], console: Console) -> None:
    table = Table(title="Encrypted aggregation (he-agg)")
    for col in (
        "params",
        "parties",
        "scheme",
        "encrypt s",
        "aggregate s",
        "decrypt s",
        "B/param",
        "x float32",
        "max abs err",
    ):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    for r in rows:
        table.add_row(
            f"{r['params']:.0e}",
            str(r["parties"]),
            r["scheme"],
            f"{r['encrypt_s']:.3f}",
            f"{r['aggregate_s']:.3f}",
            f"{r['decrypt_s']:.3f}",
            f"{r['wire_bytes_per_param']:.2f}",
            f"{r['wire_bytes_per_param'] / 4:.2f}",
            f"{r['max_abs_error']:.1e}",
        )
    console.print(table)


def main(out: Path, config: Path | None = None, full: bool = False) -> int:
    """``smpc-synth bench he-agg --out DIR``: 1e4..1e6 parameters (``--full``: up to 1e7)."""
    run_he_agg(out, full=full)
    return 0
