"""Cost curves (``bench scale``): the power-law fit recovers exponents, a member whose
memory grows faster than rows is flagged, bad suite files are refused, and a tiny real
grid ends in fitted exponents, tables and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smpc_synth.errors import InputError
from smpc_synth_bench.scale import (
    MEMORY_SLACK,
    ScaleSpec,
    fit_all,
    fit_power_law,
    superlinear_memory,
)

ROWS = [1000, 5000, 20000, 50000]
PARTIES = [2, 3, 5, 8]


@settings(max_examples=50, deadline=None)
@given(
    a=st.floats(-1.0, 2.5),
    b=st.floats(-1.0, 2.5),
    c=st.floats(1e-4, 1e4),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_fit_recovers_exponents_of_noisy_power_laws(a, b, c, seed):
    rng = np.random.default_rng(seed)
    rows = [r for r in ROWS for _ in PARTIES]
    parties = [p for _ in ROWS for p in PARTIES]
    noise = rng.uniform(0.95, 1.05, len(rows))  # 5% measurement noise
    values = [c * r**a * p**b * n for r, p, n in zip(rows, parties, noise)]
    fit = fit_power_law(rows, parties, values)
    assert fit is not None and fit["points"] == 16
    # log(1.05) spread over log-ranges of ~3.9 (rows) and ~1.4 (parties)
    assert abs(fit["rows"] - a) < 0.05 and abs(fit["parties"] - b) < 0.1, fit


def test_a_variable_with_one_value_gets_no_exponent_and_bad_values_are_left_out():
    fit = fit_power_law([1000, 5000, 20000], [2, 2, 2], [1.0, 5.0, 20.0])
    assert fit["parties"] is None and fit["rows"] == pytest.approx(1.0)
    assert fit_power_law([1000, 5000], [2, 2], [1.0, None]) is None  # one usable point
    assert fit_power_law([1000, 1000], [2, 2], [1.0, 2.0]) is None  # nothing varies
    partial = fit_power_law([1000, 5000, 20000], [2, 3, 5], [0.0, 5.0, 20.0])
    assert partial["points"] == 2  # a zero cannot be fitted on logarithms


@settings(max_examples=30, deadline=None, derandomize=True)
@given(exponent=st.floats(0.0, 2.0), member=st.sampled_from(["alice", "dealer", "aggregator"]))
def test_memory_growing_faster_than_rows_is_flagged_for_that_member(exponent, member):
    assume(abs(exponent - (1 + MEMORY_SLACK)) > 1e-6)  # at the bound, rounding decides
    points = [
        {
            "cell": "mpc:vae",
            "network": "loopback",
            "parties": p,
            "rows": r,
            "seconds": 1.0,
            "bytes_per_party": 1.0,
            "rounds_per_party": 1.0,
            "peak_memory_mb": {member: 300.0 * (r / 1000) ** exponent, "bob": 300.0 + r / 100},
        }
        for r in ROWS
        for p in (2, 3)
    ]
    flagged = {f["metric"] for f in superlinear_memory(fit_all(points))}
    expected = {f"peak_memory_mb:{member}"} if exponent > 1 + MEMORY_SLACK + 1e-9 else set()
    assert flagged == expected


def test_a_bad_suite_file_is_refused_naming_file_and_key(tmp_path):
    bad = tmp_path / "scale.toml"
    bad.write_text('[scale]\ncells = ["mpc:vae", "mpc:ctgan"]\n')
    with pytest.raises(InputError, match=r"scale.toml: key 'scale.cells'.*mpc:ctgan"):
        ScaleSpec.load(bad)
    bad.write_text("[scale]\nrowz = [1000]\n")
    with pytest.raises(InputError, match=r"unknown key 'scale\.rowz'"):
        ScaleSpec.load(bad)
    full = ScaleSpec.full()
    assert (full.parties, full.rows) == ([2, 3, 5, 8], [1000, 5000, 20000, 50000])
    assert full.networks == ["loopback", "lan", "wan"]


@pytest.mark.slow  # two MPC sessions: about a minute on 2 shared cores
def test_a_tiny_real_grid_ends_in_exponents_tables_and_plots(cli, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        '[scale]\ncells = ["mpc:gaussian"]\nparties = [2]\nrows = [300, 1200]\nsample_rows = 100\n'
    )
    out = tmp_path / "out"
    result = cli("bench", "scale", "--config", config, "--out", out, timeout=600)
    assert result.code in (0, 1), result.output[-3000:]  # 1: memory grew faster than rows
    report = json.loads((out / "scale.json").read_text())
    assert sorted(p["rows"] for p in report["points"]) == [300, 1200]
    assert all(p["bytes_per_party"] > 0 and p["dealer_peak_memory_mb"] for p in report["points"])
    metrics = {f["metric"] for f in report["fits"]}
    assert {"seconds", "bytes_per_party", "peak_memory_mb:dealer"} <= metrics
    assert all(f["parties"] is None for f in report["fits"])  # one party count: no b
    assert "a (rows)" in (out / "scale.md").read_text()
    assert all((out / png).is_file() for png in ("cost_vs_rows.png", "service_load.png"))
    assert "Fitted cost" in result.stdout
