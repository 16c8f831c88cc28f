"""The data behind the benchmark plots: one series per cell, no one-point lines, losses only;
and `bench` says where its results are."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.runtime.progress import loss_terms
from smpc_synth_bench import describe_results
from smpc_synth_bench.grid import MODE_OPTIONS
from smpc_synth_bench.summary import plot_data, with_ratios, write_summaries

NEURAL = {"vae": ("loss", "reconstruction", "kl"), "gan": ("generator", "discriminator")}


def _curve(mode: str, generator: str, epochs: int, rng) -> list[dict]:
    if generator == "gaussian":  # one closed-form pass; plaintext reports its row count
        return [{"epoch": 1, "seconds": 0.1, **({"rows": 455} if mode == "plaintext" else {})}]
    curve = []
    for epoch in range(1, epochs + 1):
        record = {"epoch": epoch, "seconds": 1.0 * epoch, "epoch_seconds": 1.0}
        record.update({term: rng.uniform(0, 50) for term in NEURAL[generator]})
        if mode == "mpc":
            record.update({"bytes": rng.randint(10**6, 10**9), "rounds": 900, "rollbacks": 0})
        curve.append(record)
    return curve


@st.composite
def grids(draw):
    modes = [
        "plaintext",
        *draw(st.sets(st.sampled_from(sorted(set(MODE_OPTIONS) - {"plaintext"})))),
    ]
    generators = draw(
        st.lists(st.sampled_from(["gaussian", "vae", "gan"]), min_size=1, unique=True)
    )
    datasets = draw(st.lists(st.sampled_from(["fair", "wine"]), min_size=1, unique=True))
    parties = draw(st.lists(st.integers(2, 5), min_size=1, max_size=3, unique=True))
    seeds = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2, unique=True))
    epochs = draw(st.integers(1, 4))
    rng = draw(st.randoms(use_true_random=False))
    records = []
    for mode, generator, dataset, n, seed in itertools.product(
        modes, generators, datasets, parties, seeds
    ):
        records.append(
            {
                "run": {
                    "mode": mode,
                    "generator": generator,
                    "dataset": dataset,
                    "parties": n,
                    "seed": seed,
                },
                "exit_code": 0 if rng.random() > 0.1 or mode == "plaintext" else 1,
                "metrics": {
                    "quality_score": rng.random(),
                    "train_seconds": rng.uniform(0.1, 100),
                    "seconds_per_epoch": rng.uniform(0.1, 10),
                    "wall_seconds": rng.uniform(1, 200),
                    "bytes_per_party": rng.randint(0, 10**10),
                    "rounds_per_party": rng.randint(0, 10**5),
                    "loss_curve": _curve(mode, generator, epochs, rng),
                },
            }
        )
    return records


@settings(max_examples=40, deadline=None)
@given(grids())
def test_plot_data_never_averages_cells_or_draws_one_point_lines(records):
    frame = with_ratios(records)
    plots = plot_data(frame, records)
    for name, plot in plots.items():
        labels = [s.label for s in plot.series]
        assert len(labels) == len(set(labels)), (name, labels)
        if plot.kind == "line":
            assert all(len(s.x) == len(s.y) >= 2 for s in plot.series), name
    # traffic: each value is the mean over seeds of its own cell, never across generators
    ok = [r for r in records if r["exit_code"] == 0]
    several = len({r["run"]["parties"] for r in ok}) > 1
    traffic = plots["bytes_vs_parties"]
    assert traffic.kind == ("line" if several else "bar")
    datasets = len({r["run"]["dataset"] for r in ok}) > 1
    cells = defaultdict(list)
    for r in ok:
        run = r["run"]
        label = f"{run['mode']} · {run['generator']}" + (f" · {run['dataset']}" if datasets else "")
        cells[label, run["parties"]].append(r["metrics"]["bytes_per_party"] / 1e6)
    if several:  # every cell seen at two party counts or more has its line
        lines = {lab for lab, _ in cells if sum(lab == other for other, _ in cells) >= 2}
        assert {s.label for s in traffic.series} == lines
    for series in traffic.series:
        xs = series.x if several else [next(p for (lab, p) in cells if lab == series.label)]
        for x, y in zip(xs, series.y):
            expected = cells[series.label, x]
            assert y == pytest.approx(sum(expected) / len(expected)), (series.label, x)
    # loss curves: a loss term per neural cell that ran two epochs or more, nothing else
    curves = plots["loss_curves"].series
    for series in curves:
        term = series.label.rsplit("(", 1)[1].rstrip(")")
        assert term in NEURAL[series.panel], series.label
        assert term in loss_terms({term: 1.0})
    neural = {
        (r["run"]["mode"], r["run"]["generator"], r["run"]["dataset"])
        for r in ok
        if r["run"]["generator"] in NEURAL and len(r["metrics"]["loss_curve"]) >= 2
    }
    assert len(curves) == len(neural)


def test_a_grid_of_one_party_count_and_one_epoch_draws_no_misleading_plot(tmp_path):
    import random

    rng = random.Random(0)
    records = []
    for mode, generator in itertools.product(["plaintext", "mpc"], ["gaussian", "vae"]):
        run = {"mode": mode, "generator": generator, "dataset": "fair", "parties": 2, "seed": 0}
        metrics = {
            "quality_score": rng.random(),
            "train_seconds": rng.uniform(1, 10),
            "seconds_per_epoch": 1.0,
            "wall_seconds": 5.0,
            "bytes_per_party": rng.randint(1, 10**9),
            "rounds_per_party": 10,
            "loss_curve": _curve(mode, generator, 1, rng),
        }
        records.append({"run": run, "exit_code": 0, "metrics": metrics})
    write_summaries(records, tmp_path)
    assert not (tmp_path / "loss_curves.png").exists()  # every curve has a single epoch
    assert (tmp_path / "bytes_vs_parties.png").is_file()  # as bars: one per cell
    note = (tmp_path / "summary.md").read_text()
    assert "loss_curves.png not drawn: no series has two points or more" in note
    text = describe_results("quick", tmp_path, 0)
    assert "| mode | generator |" in text  # the summary table itself
    assert f"results in {tmp_path.resolve()}" in text and "summary.csv" in text
    assert "finished with failures (exit code 1)" in describe_results("quick", tmp_path, 1)


@pytest.mark.slow  # a real (small) grid: one simulated plaintext session
def test_bench_prints_its_summary_and_where_the_results_are(cli, tmp_path):
    grid = tmp_path / "tiny.toml"
    grid.write_text(
        'modes = ["plaintext"]\ngenerators = ["gaussian"]\ndatasets = ["breast_cancer"]\n'
        "parties = [2]\n"
    )
    out = tmp_path / "results"
    result = cli("bench", "quick", "--config", grid, "--out", out, timeout=1200)
    assert result.code == 0, result.output
    assert "Summary of quick" in result.stdout and "| mode | generator |" in result.stdout
    assert f"bench quick finished; results in {out.resolve()}" in result.stdout
    assert "summary.csv" in result.stdout
