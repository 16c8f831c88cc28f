"""AIM's and MST's queries over federated aggregation: real CKKS sums through a real
aggregator loop (members on threads, in-memory channel); each party adds its own share of
the noise, and the sums, sizes and selections come out as the pooled rows say."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memory_channel import MemoryChannel

from smpc_synth.config import RunConfig
from smpc_synth.dp import sampling
from smpc_synth.dp.budget import Budget, Ledger
from smpc_synth.dp.marginals import SCORE_BITS, LocalCounts, plan_selection, rounded_estimate
from smpc_synth.dp.zcdp import RhoPlan, gaussian_rho, share_sigma2_for
from smpc_synth.train.aggregation import AggregationClient, serve_aggregator
from smpc_synth.train.federated_marginals import (
    NOISE_TAIL,
    AggregatedQueries,
    _score_sensitivity,
    party_noise_key,
)

PARTIES = ("alice", "bob", "carol")
AGGREGATOR = "aggregator"
SHAPE = [3, 4, 2]
SIZES = (120, 60, 20)  # unequal on purpose: each party scores against its own share
KEY = b"0123456789abcdef"  # the debug seed's key stand-in: each party derives its own


def _codes(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, rows in zip(PARTIES, SIZES, strict=True):
        a = rng.integers(0, 3, rows)
        b = (a + rng.integers(0, 2, rows)) % 4  # b follows a: the pair (0, 1) stands out
        c = rng.integers(0, 2, rows)
        out[name] = np.stack([a, b, c], axis=1)
    return out


def _run(steps, codes: dict[str, np.ndarray]) -> dict[str, object]:
    """Run ``steps(queries, name)`` on every party with a real aggregator; their results."""
    channels = MemoryChannel.connect((*PARTIES, AGGREGATOR), wait=120)
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def party(name: str) -> None:
        try:
            client = AggregationClient(
                channels[name], name, PARTIES, AGGREGATOR, he="ckks", masking=True, session="t"
            )
            client.setup()
            key = party_noise_key(name, KEY)
            queries = AggregatedQueries(client, codes[name], SHAPE, name, PARTIES, key)
            results[name] = steps(queries, name)
            client.finish()
        except BaseException as exc:
            errors.append(exc)

    def aggregator() -> None:
        try:
            results[AGGREGATOR] = serve_aggregator(channels[AGGREGATOR], PARTIES, RunConfig())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=party, args=(n,)) for n in PARTIES]
    threads.append(threading.Thread(target=aggregator))
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results


def _budget(epsilon: float) -> RhoPlan:
    return RhoPlan(Ledger(Budget(epsilon, 1e-9, "zcdp")))


def test_sums_carry_every_party_s_counts_and_a_share_of_noise_each():
    codes = _codes(0)
    pooled = np.concatenate(list(codes.values()))
    sigma2 = 9.0

    def steps(queries, name):
        budget = _budget(5.0) if name == PARTIES[0] else None
        sizes = queries.measure_party_sizes(sigma2, 0, budget=budget)
        marginal = queries.measure((0, 1), sigma2, 1)
        return sizes, marginal, queries.noise_factor

    results = _run(steps, codes)
    sizes, marginal, factor = results["alice"]
    for name in PARTIES[1:]:  # every party decrypts the same sums
        assert np.array_equal(results[name][0], sizes)
        assert np.array_equal(results[name][1], marginal)
    truth = LocalCounts(pooled, SHAPE)((0, 1))
    reach = NOISE_TAIL * math.sqrt(factor * sigma2)
    assert np.all(np.abs(marginal - truth) <= reach)
    assert not np.array_equal(marginal, truth)  # the noise is there
    # ... and it is exactly the parties' own shares, each from its own key
    share = share_sigma2_for(gaussian_rho(sigma2), 2, 1.0, len(truth))
    assert share >= sigma2 / 2
    noises = [
        sampling.draw_noise(party_noise_key(n, KEY), "dgauss", 1, len(truth), [share])
        for n in PARTIES
    ]
    assert np.array_equal(marginal, truth + sum(noises))
    assert np.all(np.abs(sizes - np.array(SIZES)) <= reach)
    assert factor == pytest.approx(3 / 2)


def test_selection_takes_the_largest_summed_party_score():
    """With almost no noise the chosen candidate is the one whose parties' scores, each
    against its own share of the estimate, sum highest."""
    codes = _codes(1)
    cliques = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)]
    shape = SHAPE
    # an estimate that makes every column independent and uniform: (0, 1) is furthest off
    total = float(sum(SIZES))
    estimates = [
        np.full(math.prod(shape[c] for c in cl), total / math.prod(shape[c] for c in cl))
        for cl in cliques
    ]
    weights = np.array([2, 2, 2, 1, 1, 1], dtype=np.int64)
    offsets = np.zeros(len(cliques))

    def steps(queries, name):
        budget = _budget(1e4)  # every party plans the same (in a session only the leader)
        sizes = queries.measure_party_sizes(0.25, 0, budget=budget)
        errors = queries.errors(cliques, estimates)
        plan = plan_selection(len(cliques), weights, offsets, 200.0, 3 * total + 1000)
        plan = queries.charge_select(budget, "s", plan, errors, range(6), weights)
        index = queries.select(errors, range(6), weights, offsets, plan, 1)
        return sizes, errors, index, plan

    results = _run(steps, codes)
    sizes = results["alice"][0]
    fractions = np.maximum(sizes, 0) / np.maximum(sizes, 0).sum()
    expected = np.zeros(len(cliques))
    for position, name in enumerate(PARTIES):
        counts = LocalCounts(codes[name], SHAPE)
        local = [
            np.abs(counts(cl) * 2**SCORE_BITS - rounded_estimate(fractions[position] * e)).sum()
            for cl, e in zip(cliques, estimates, strict=True)
        ]
        assert np.array_equal(results[name][1], local)
        expected += weights * np.minimum(local, results[name][3].clip)
    ranked = np.sort(expected)
    plan = results["alice"][3]
    reach = 2 * NOISE_TAIL * math.sqrt(3 * plan.share_sigma2) * 2**plan.drop_bits
    assert ranked[-1] - ranked[-2] > reach  # a clear winner: the noise cannot flip it
    assert {results[n][2] for n in PARTIES} == {int(np.argmax(expected))}


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(0, 60),
    fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_one_row_moves_a_party_s_error_by_at_most_one_count(rows, fraction, seed):
    """The share of the estimate is public, so adding a row to a party moves each of its
    L1 errors by at most 2^SCORE_BITS units (one count): the selection's sensitivity."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, s, rows) for s in SHAPE], axis=1).reshape(rows, 3)
    row = np.array([[rng.integers(0, s) for s in SHAPE]])
    cliques = [(0,), (1, 2), (0, 1, 2)]
    estimates = [rng.random(math.prod(SHAPE[c] for c in cl)) * 50 for cl in cliques]
    before, after = (
        AggregatedQueries(None, table, SHAPE, "alice", PARTIES, b"k" * 16)
        for table in (codes, np.concatenate([codes, row]))
    )
    before._fraction = after._fraction = fraction
    moved = np.abs(after.errors(cliques, estimates) - before.errors(cliques, estimates))
    assert np.all(moved <= 2**SCORE_BITS)


@settings(max_examples=200, deadline=None)
@given(
    weight=st.integers(1, 500),
    error=st.integers(0, 2**40),
    step=st.integers(-(2**SCORE_BITS), 2**SCORE_BITS),
    drop=st.integers(0, 20),
)
def test_dropping_low_bits_stays_within_the_charged_sensitivity(weight, error, step, drop):
    moved = abs(((weight * max(error + step, 0)) >> drop) - ((weight * error) >> drop))
    assert moved <= _score_sensitivity(np.array([weight]), drop)


def test_coalitions_of_more_parties_face_less_noise():
    codes = _codes(2)

    def steps(queries, name):
        budget = _budget(5.0) if name == PARTIES[0] else None
        queries.measure_party_sizes(40.0, 0, budget=budget)
        if budget is not None:
            queries.charge_measure(budget, "m", 40.0, 12)
        queries.measure((0, 1), 40.0, 1)
        return None if budget is None else (budget, queries.privacy_notes(budget.ledger))

    budget, notes = _run(steps, codes)["alice"]
    coalitions = notes["noise_shares"]["coalitions"]
    assert [c["data_parties"] for c in coalitions] == [1, 2]
    assert coalitions[0]["epsilon"] == pytest.approx(budget.ledger.spent(), rel=1e-6)
    assert coalitions[1]["epsilon"] > coalitions[0]["epsilon"]
    kinds = {m.kind for m in budget.ledger.mechanisms}
    assert kinds == {"distributed discrete gaussian"}


def test_each_party_draws_its_own_noise():
    assert len({party_noise_key(n, KEY) for n in PARTIES}) == len(PARTIES)
    assert party_noise_key("alice", None) != party_noise_key("alice", None)  # fresh each time
