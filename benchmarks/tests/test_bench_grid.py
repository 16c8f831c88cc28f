"""The benchmark harness: files, ratios against the right baseline, resume."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from smpc_synth.errors import InputError
from smpc_synth_bench.grid import GridSpec, run_grid
from smpc_synth_bench.summary import to_latex


@dataclass
class _Result:
    exit_code: int
    metrics: dict


class RecordingRunner:
    """Stands in for `simulate` at the harness boundary: random but recorded figures."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.wall: dict[tuple, float] = {}
        self.rng = random.Random(1)

    def __call__(self, parties, *, dataset, out, show_progress, generator, seed, **options):
        key = (options["mode"], options.get("federated", {}).get("he"), generator, parties, seed)
        self.calls.append(key)
        wall = self.rng.uniform(1, 100)
        self.wall[key] = wall
        Path(out).mkdir(parents=True, exist_ok=True)
        party = {
            "role": "data",
            "training": {
                "epochs": [
                    {"epoch": e, "seconds": wall * e / 6, "loss": 1.0 / e} for e in (1, 2, 3)
                ],
                "train_seconds": wall,
            },
            "traffic": {"bytes_sent": self.rng.randint(1, 10**6), "rounds": 3},
        }
        metrics = {
            "wall_seconds": wall,
            "parties": {"alice": party},
            "evaluation": {"fidelity": {"quality_score": self.rng.random()}},
        }
        return _Result(0, metrics)


def _spec() -> GridSpec:
    return GridSpec(
        modes=["federated+ckks", "plaintext"],
        generators=["gaussian"],
        datasets=["breast_cancer"],
        parties=[2, 3],
        seeds=[0, 1],
    )


def test_grid_writes_every_file_and_divides_by_the_matching_plaintext_run(tmp_path):
    runner = RecordingRunner()
    run_grid(_spec(), tmp_path, runner=runner)
    for name in (
        "runs.jsonl",
        "summary.csv",
        "summary.md",
        "summary.tex",
        "quality_vs_time.png",
        "bytes_vs_parties.png",
        "loss_curves.png",
    ):
        assert (tmp_path / name).is_file(), name
    lines = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    assert all("git_commit" in r["environment"] and r["environment"]["versions"] for r in lines)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["mode"]) == {"plaintext", "federated+ckks"}
    # the plaintext baseline of each cell is run before the modes divided by it
    assert runner.calls[0][0] == "plaintext"
    from smpc_synth_bench.summary import with_ratios

    frame = with_ratios(lines)
    for _, row in frame[frame["mode"] == "federated+ckks"].iterrows():
        base = runner.wall[("plaintext", None, "gaussian", row["parties"], row["seed"])]
        mine = runner.wall[("federated", "ckks", "gaussian", row["parties"], row["seed"])]
        assert row["time_ratio"] == pytest.approx(mine / base)
    assert (frame[frame["mode"] == "plaintext"]["time_ratio"] == 1.0).all()


def test_an_interrupted_grid_resumes_without_repeating_finished_runs(tmp_path):
    first = RecordingRunner()
    run_grid(_spec(), tmp_path, runner=first)
    ledger = tmp_path / "runs.jsonl"
    kept = ledger.read_text().splitlines()[:3]
    ledger.write_text("\n".join(kept) + "\n" + '{"torn": ')  # a run cut off mid-write
    second = RecordingRunner()
    run_grid(_spec(), tmp_path, runner=second)
    assert len(second.calls) == 5

    def as_call(run):
        mode, he = {"plaintext": ("plaintext", None), "federated+ckks": ("federated", "ckks")}[
            run["mode"]
        ]
        return (mode, he, run["generator"], run["parties"], run["seed"])

    finished = {as_call(json.loads(x)["run"]) for x in kept}
    assert len(finished) == 3
    assert not finished & set(second.calls)
    assert len(set(first.calls) - set(second.calls)) == 3
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(lines) == 8  # 3 kept + 5 new; the torn line is gone
    # the five repeated runs' first attempts keep their folders; the repeats get new ones
    repeated = [Path(r["run_dir"]) for r in lines[3:]]
    assert all(p.name.endswith("-2") and p.with_name(p.name[:-2]).is_dir() for p in repeated)


def test_latex_table_is_booktabs_with_mean_and_std(tmp_path):
    run_grid(_spec(), tmp_path, runner=RecordingRunner())
    tex = (tmp_path / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex
    assert to_latex(pd.read_csv(tmp_path / "summary.csv")).count("\\\\") >= 5


def test_grid_file_errors_name_the_key(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("[grid]\nmodes = ['plaintext', 'quantum']\n")
    with pytest.raises(InputError, match=r"grid\.modes"):
        GridSpec.load(path)
    path.write_text("[grid]\nseedz = [1]\n")
    with pytest.raises(InputError, match=r"grid\.seedz"):
        GridSpec.load(path)
