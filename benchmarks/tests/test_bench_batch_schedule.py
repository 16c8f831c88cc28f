"""``smpc-synth bench batch-schedule``: its grid and how seeds are summarized."""

from __future__ import annotations

from smpc_synth_bench import batch_schedule


def test_the_grid_pairs_every_larger_batch_with_every_rule():
    grid = batch_schedule.cells(500, 100, factors=(2, 5), long_factor=5)
    assert grid[0] == batch_schedule.Cell(500, "x1", 100)
    equal = {(c.batch, c.rule) for c in grid if c.epochs == 100}
    assert equal == {(500, "x1")} | {(b, r) for b in (1000, 2500) for r in ("x1", "sqrt", "k")}
    assert {(c.batch, c.epochs) for c in grid if c.epochs != 100} == {(2500, 200)}


def test_seeds_are_summarized_by_mean_and_range_per_configuration():
    def record(batch: int, seed: int, quality: float, tstr: float) -> dict:
        return {"batch": batch, "rule": "x1", "epochs": 100, "seed": seed,
                "quality_score": quality, "tstr_auc": tstr}  # fmt: skip

    rows = batch_schedule.summarize(
        [record(500, 0, 0.9, 0.7), record(500, 1, 0.8, 0.6), record(2500, 0, 0.85, 0.65)]
    )
    assert [(r["batch"], r["seeds"]) for r in rows] == [(500, 2), (2500, 1)]
    assert abs(rows[0]["quality_score"] - 0.85) < 1e-12
    assert rows[0]["tstr_auc_range"] == (0.6, 0.7)
