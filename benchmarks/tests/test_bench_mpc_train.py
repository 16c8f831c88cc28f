"""``benchmarks/mpc_train.py``: how the parties' figures become the reported summary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from smpc_synth_bench import mpc_train


def _party(me: str, epoch_seconds: list[float], cpu: list[dict[str, float]]) -> dict:
    return {
        "ours": [{"epoch_seconds": s, "bytes": 4e8, "rounds": 1500.0} for s in epoch_seconds],
        "ours_phases": {},
        "ours_cpu_seconds": cpu,
        "stock": {"seconds_per_step": 5.0, "bytes_per_step": 1e8, "rounds_per_step": 900.0},
        "steps_per_epoch": 10,
    }


def test_summary_takes_the_steady_epochs_and_every_members_cpu():
    seconds = [18.0, 14.0, 13.0, 12.5, 11.0, 12.0]
    alice_cpu = [{"alice": a, "dealer": d} for a, d in [(20, 6), (12, 5), (9, 4), (8, 4), (9.5, 3)]]
    bob_cpu = [{"bob": b} for b in (15.0, 9.0, 7.5, 8.0, 7.0)]
    per_party = {
        "alice": _party("alice", seconds, [{"alice": 30.0, "dealer": 9.0}, *alice_cpu]),
        "bob": _party("bob", seconds, [{"bob": 20.0}, *bob_cpu]),
    }
    summary = mpc_train.summarize(per_party, 0.1, steady_epochs=3, run_epochs=10)
    assert summary["ours_seconds_per_epoch"] == 12.0  # median of 12.5, 11.0, 12.0
    assert summary["ours_epoch_seconds"] == seconds
    assert summary["ours_first_epoch_seconds"] == 18.0
    # 3 warm-up epochs as measured, then 7 steady ones
    assert abs(summary["ours_run_mean_seconds_per_epoch"] - (45.0 + 7 * 12.0) / 10) < 1e-9
    assert summary["stock_seconds_per_epoch"] == 50.0
    assert abs(summary["mpc_over_plaintext"] - 120.0) < 1e-9
    assert summary["ours_cpu_seconds_per_epoch"] == {"alice": 9.0, "dealer": 4.0, "bob": 7.5}
    summary["cores"] = 2
    table = mpc_train.format_table(summary)
    assert "MPC / plaintext: 120x;" in table and "target" not in table
    assert "the median of the last 3" in table
    assert "a 10-epoch run averages 12.90 s an epoch, 129x plaintext" in table
    assert "20.5 s in all, so at least 10.2 s on 2 cores" in table


def _script():
    path = Path(__file__).resolve().parents[1] / "mpc_train.py"
    spec = importlib.util.spec_from_file_location("mpc_train_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_refuses_more_steady_epochs_than_epochs(capsys):
    script = _script()
    assert script.parse_args(["--epochs", "4", "--steady-epochs", "2"]).steady_epochs == 2
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--epochs", "2", "--steady-epochs", "3"])
    assert exit_.value.code == 2
    assert "--steady-epochs must be between 1 and --epochs (2)" in capsys.readouterr().err


def test_schedules_are_compared_by_their_medians_against_the_first():
    def run(seconds: float, rounds: float, nbytes: float, steps: int) -> dict:
        return {
            "ours_seconds_per_epoch": seconds,
            "ours_rounds_per_epoch": rounds,
            "ours_bytes_per_epoch": nbytes,
            "steps_per_epoch": steps,
        }

    runs = {
        "default": [run(80.0, 1000, 360e6, 10), run(90.0, 1000, 380e6, 10)],
        "latency": [run(40.0, 200, 170e6, 2), run(30.0, 150, 160e6, 2)],
    }
    table = mpc_train.format_schedules(runs, "wan")
    latency = next(line for line in table.splitlines() if line.startswith("latency"))
    # medians 85 s / 35 s, 1000 / 175 rounds, 370 / 165 MB
    assert latency.split()[1:] == ["2", "35.0", "175", "165.0", "2.43", "5.71", "2.24"]
    assert "the median of 2 runs per schedule, alternated" in table
