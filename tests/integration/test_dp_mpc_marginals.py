"""Marginal queries on secret shares compute exactly what plaintext computes, and open nothing
but noisy marginals and chosen indices."""

from __future__ import annotations

import numpy as np
import pytest
from mpc_harness import PARTY_NAMES, SEED, assert_all_ok, run_mpc

from smpc_synth.dp import sampling
from smpc_synth.dp.marginals import LocalQueries, plan_selection

SHAPE = [3, 5, 4, 2]


def _codes(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = [rng.choice(k, rows, p=np.arange(1, k + 1) / (k * (k + 1) / 2)) for k in SHAPE]
    return np.stack(cols, axis=1).astype(np.int64)


def _script(queries, rank_estimates: bool) -> dict:
    """The same sequence of queries on any MarginalQueries."""
    rng = np.random.default_rng(3)
    cliques = [(0,), (1,), (0, 1), (1, 2), (2, 3), (0, 3)]
    estimates = [rng.random(int(np.prod([SHAPE[c] for c in cl]))) * 40 for cl in cliques]
    one = queries.measure((1,), 9.0, 0)
    two = queries.measure((0, 2), 30.25, 1)
    errors = queries.errors(cliques, estimates if rank_estimates else None)
    weights = np.array([1, 1, 3, 2, 2, 1], dtype=np.int64)
    offsets = np.array([0.5, 1.25, 3.0, 0.0, 7.5, 2.0])
    chosen = []
    for i, eps in enumerate((0.05, 0.5, 5.0)):
        plan = plan_selection(len(cliques), weights, offsets, eps, 10_000)
        chosen.append(queries.select(errors, range(len(cliques)), weights, offsets, plan, 10 + i))
    subset = [1, 3, 4]
    plan = plan_selection(3, weights[subset], offsets[subset], 2.0, 10_000)
    chosen.append(queries.select(errors, subset, weights[subset], offsets[subset], plan, 20))
    queries.recode({1: np.array([0, 0, 1, 2, 2])}, [3, 3, 4, 2])
    three = queries.measure((1, 3), 4.0, 2)
    return {"measured": [one.tolist(), two.tolist(), three.tolist()], "chosen": chosen}


def secure_program(rank: int, parts: list) -> dict:
    from smpc_synth.mpc.marginals import SecureQueries

    return _script(SecureQueries(np.asarray(parts[rank]), SHAPE), rank == 0)


@pytest.mark.parametrize("n_parties", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_secure_queries_equal_plaintext_with_the_same_noise(tmp_path, n_parties):
    """Counts split over parties, the dealer's debug seed: every noisy marginal and every
    selection equals plaintext's on the pooled rows with the same noise key, on every party."""
    parts = [_codes(40 + 17 * i, i).tolist() for i in range(n_parties)]
    pooled = np.concatenate([np.asarray(p) for p in parts])
    expected = _script(LocalQueries(pooled, SHAPE, sampling.noise_key(SEED)), True)
    outcomes = run_mpc(tmp_path, n_parties, secure_program, seed=SEED, parts=parts)
    assert_all_ok(outcomes)
    for name in PARTY_NAMES[:n_parties]:
        assert outcomes[name].result["result"] == expected, name
    # the opened marginals are noisy: not the true counts
    true = np.bincount(pooled[:, 1], minlength=SHAPE[1])
    assert expected["measured"][0] != true.tolist()
