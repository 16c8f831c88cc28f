"""Progress: one view per run in human units, the same figures in metrics.json."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.runtime.progress import (
    PREFIX,
    ProgressView,
    RunProgress,
    format_value,
    human_bytes,
    loss_terms,
)

# A figure printed as a float with a fixed fraction, e.g. "bytes 123456.0000": the old format.
RAW_FLOAT = re.compile(r"\b\d{4,}\.\d+\b")


@given(st.integers(min_value=0, max_value=10**15))
def test_bytes_are_shown_in_units_with_at_most_four_digits(n):
    text = human_bytes(n)
    number, unit = text.split()
    assert unit in {"B", "kB", "MB", "GB", "TB"}
    assert len(number.replace(".", "")) <= 4 or unit == "TB"
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]
    assert float(number) * scale == pytest.approx(n, rel=0.06, abs=1)


@given(st.sampled_from(["rounds", "rollbacks", "rows", "epoch"]), st.integers(0, 10**12))
def test_counts_are_integers_even_when_reported_as_floats(key, n):
    assert format_value(key, float(n)) == str(n)


def _epoch_events(parties: list[str], epochs: int, seed: int = 0):
    """Interleaved epoch events as the protocols send them: counters as floats, bytes raw."""
    rng = np.random.default_rng(seed)
    sent = dict.fromkeys(parties, 0)
    for epoch in range(1, epochs + 1):
        for party in rng.permutation(parties):
            sent[party] += int(rng.integers(10**6, 10**9))
            yield {
                "event": "epoch",
                "party": str(party),
                "epoch": epoch,
                "epochs": epochs,
                "seconds": 1.5 * epoch,
                "loss": float(rng.normal(10, 1)),
                "kl": float(rng.random()),
                "bytes": float(sent[party]),  # the MPC strategy reports these as numbers
                "rounds": 123.0,
                "rollbacks": 0,
                "sent_bytes": sent[party],
            }


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.integers(0, 1000))
def test_a_run_has_one_record_per_epoch_not_one_per_party(parties, epochs, seed):
    names = [f"p{i}" for i in range(parties)]
    progress = RunProgress("mpc · vae · t")
    events = list(_epoch_events(names, epochs, seed))
    seen = []
    for event in events:
        progress.update(event)
        seen.append(progress.done)
    assert seen == sorted(seen)  # never goes back
    summary = progress.summary()
    assert summary["epochs_done"] == summary["epochs_total"] == epochs
    assert [h["epoch"] for h in summary["history"]] == list(range(1, epochs + 1))
    last = {e["party"]: e for e in events if e["epoch"] == epochs}
    assert summary["bytes_sent"] == sum(e["sent_bytes"] for e in last.values())
    mean_loss = sum(e["loss"] for e in last.values()) / parties
    assert summary["history"][-1]["loss"] == pytest.approx(mean_loss)
    assert set(summary["history"][-1]) >= {"loss", "kl"}
    assert not {"bytes", "rounds", "rollbacks"} & set(loss_terms(summary["history"][-1]))


def test_an_epoch_is_done_only_when_every_reporting_party_has_reported_it():
    progress = RunProgress("t", 3)
    for party in ("alice", "bob"):
        progress.update({"event": "epoch", "party": party, "epoch": 1, "loss": 1.0})
    progress.update({"event": "epoch", "party": "alice", "epoch": 2, "loss": 1.0})
    assert progress.done == 1
    progress.update({"event": "epoch", "party": "bob", "epoch": 2, "loss": 1.0})
    assert progress.done == 2


@pytest.mark.parametrize("parties", [1, 3])
def test_plain_lines_are_few_human_and_never_raw_events(parties):
    out = io.StringIO()
    events = list(_epoch_events([f"p{i}" for i in range(parties)], 8))
    with ProgressView(RunProgress("federated · vae · fair"), "lines", out, min_interval=3600) as v:
        for event in events:
            v(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first epoch, then the last: not one per party or epoch
    assert "epoch 1/8" in lines[0] and "epoch 8/8" in lines[1]
    assert all(line.startswith("federated · vae · fair") for line in lines)
    assert not any(PREFIX.strip() in line or RAW_FLOAT.search(line) for line in lines), lines
    assert re.search(r"\d+(\.\d)? (MB|GB) sent", lines[1]), lines[1]


def test_a_bar_is_drawn_once_per_run_with_epochs_and_traffic():
    out = io.StringIO()
    with ProgressView(RunProgress("mpc · vae · fair"), "bar", out) as view:
        for event in _epoch_events(["alice", "bob"], 3):
            view(event)
    text = out.getvalue()
    assert "mpc · vae · fair" in text and "3/3" in text and "ETA" in text
    assert re.search(r"(MB|GB) sent", text) and not RAW_FLOAT.search(text)


def test_api_train_shows_progress_when_asked_and_is_quiet_otherwise(capsys):
    from smpc_synth import api

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"x": rng.normal(size=200), "c": rng.choice(["a", "b"], 200), "y": rng.random(200)}
    )
    api.train(frame, generator="vae", epochs=2, params={"batch_size": 50}, progress=True)
    shown = capsys.readouterr().err
    assert "epoch 2/2" in shown and "plaintext · vae" in shown
    api.train(frame, generator="vae", epochs=2, params={"batch_size": 50})  # not a terminal
    assert capsys.readouterr().err == ""
    events = []
    api.train(frame, generator="vae", epochs=3, params={"batch_size": 50}, progress=events.append)
    assert [(e["epoch"], e["epochs"]) for e in events] == [(1, 3), (2, 3), (3, 3)]
