"""The marginal mechanisms' leader and followers: while the leader fits it tells the others
so (their wait for its next step stays bounded), and that changes nothing it computes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
from memory_channel import MemoryChannel

from smpc_synth.config import DpConfig
from smpc_synth.data import Schema
from smpc_synth.data.schema import ColumnSpec
from smpc_synth.dp.marginals import LocalQueries
from smpc_synth.models.marginal import Measurement, Privacy
from smpc_synth.models.mst import MSTGenerator
from smpc_synth.net import objects
from smpc_synth.train import marginals

PARTIES = ("alice", "bob")


def _model_and_codes(seed: int, rows: int = 400):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, rows)
    frame = pd.DataFrame({"a": a.astype(str), "b": (a + rng.integers(0, 2, rows)) % 4})
    schema = Schema(
        (
            ColumnSpec("a", "categorical", categories=("0", "1", "2")),
            ColumnSpec("b", "integer", min=0, max=3),
        )
    )
    encoder = MSTGenerator.make_encoder(schema).fit_public()
    model = MSTGenerator(encoder.layout, select_iters=150, final_iters=150)
    return model, model.codes(encoder.transform(frame))


def _tables(fitted) -> np.ndarray:
    """A fitted Private-PGM model's potentials, flat."""
    p = fitted.potentials
    return np.concatenate([np.asarray(p.tables[cl].values).ravel() for cl in p.cliques])


class Recording(MemoryChannel):
    """A follower's channel that notes each announced step it receives."""

    methods: list[str] = []

    def recv(self, peer, tag, timeout=None):
        payload = super().recv(peer, tag, timeout)
        if tag == marginals.CALL_TAG:
            self.methods.append(objects.decode(bytes(payload))["method"])
        return payload


class Steps:
    """A follower's side of the queries: what it was asked to run (its shares aside)."""

    def __init__(self):
        self.run: list[str] = []

    def recode(self, mappings, shape):
        self.run.append("recode")

    def measure(self, columns, sigma2, tag):
        self.run.append("measure")

    def errors(self, cliques, estimates):
        self.run.append("errors")

    def select(self, errors, subset, weights, offsets, plan, tag):
        self.run.append("select")


def test_the_leader_says_it_is_fitting_and_the_follower_runs_every_step():
    privacy = Privacy.from_run(
        DpConfig(epsilon=1.0, delta=1e-9, accountant="zcdp", insecure_debug_seed=3)
    )
    channels = MemoryChannel.connect(PARTIES)
    follower = Recording("bob", PARTIES, channels["bob"]._boxes)
    Recording.methods = []

    def ctx(name, channel):
        # a deadline of 0: every few iterations of every fit are announced
        network = SimpleNamespace(progress_timeout_s=0.0)
        return SimpleNamespace(
            name=name,
            parties=PARTIES,
            channel=channel,
            config=SimpleNamespace(network=network),
            output_parties=(),
            is_output_party=True,
            progress=lambda event: None,
        )

    model, codes = _model_and_codes(0)
    marginals.run_mechanism(
        ctx("alice", channels["alice"]), model, LocalQueries(codes, model.shape, b"k" * 16), privacy
    )
    other, _ = _model_and_codes(1)
    steps = Steps()
    received = marginals.run_mechanism(ctx("bob", follower), other, steps, privacy)
    methods = Recording.methods
    assert methods.count("working") >= 2 and methods[-1] == "done"
    assert {"measure", "errors", "select"} <= set(methods)
    assert steps.run == [m for m in methods if m not in ("working", "done")]
    marginals.finish(other, received)
    np.testing.assert_array_equal(_tables(other.model), _tables(model.model))


def test_saying_so_changes_nothing_the_fit_computes():
    model, _ = _model_and_codes(2)
    rng = np.random.default_rng(0)
    measurements = [
        Measurement(cl, rng.random(int(np.prod([model.shape[c] for c in cl]))) * 30 + 1, 9.0)
        for cl in [(0,), (1,), (0, 1)]
    ]
    quiet = model.estimate(measurements, 150)
    calls = []
    model._working = lambda: calls.append(1)
    told = model.estimate(measurements, 150)
    assert len(calls) == 3  # every 50 iterations
    np.testing.assert_array_equal(_tables(told), _tables(quiet))
