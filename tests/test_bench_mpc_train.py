"""``benchmarks/mpc_train.py``: how the parties' figures become the reported summary."""

from __future__ import annotations

from smpc_synth.bench import mpc_train


def _party(me: str, epoch_seconds: list[float], cpu: list[dict[str, float]]) -> dict:
    return {
        "ours": [{"epoch_seconds": s, "bytes": 4e8, "rounds": 1500.0} for s in epoch_seconds],
        "ours_phases": {},
        "ours_cpu_seconds": cpu,
        "stock": {"seconds_per_step": 5.0, "bytes_per_step": 1e8, "rounds_per_step": 900.0},
        "steps_per_epoch": 10,
    }


def test_summary_takes_the_steady_epoch_and_every_members_cpu():
    per_party = {
        "alice": _party(
            "alice", [18.0, 12.0], [{"alice": 20.0, "dealer": 6.0}, {"alice": 9.0, "dealer": 4.0}]
        ),
        "bob": _party("bob", [18.0, 12.0], [{"bob": 15.0}, {"bob": 7.5}]),
    }
    summary = mpc_train.summarize(per_party, plaintext_seconds=0.1)
    assert summary["ours_seconds_per_epoch"] == 12.0
    assert summary["ours_first_epoch_seconds"] == 18.0
    assert summary["stock_seconds_per_epoch"] == 50.0
    assert abs(summary["mpc_over_plaintext"] - 120.0) < 1e-9
    assert summary["ours_cpu_seconds_per_epoch"] == {"alice": 9.0, "dealer": 4.0, "bob": 7.5}
    summary["cores"] = 2
    table = mpc_train.format_table(summary)
    assert "120x (target <= 100x)" in table
    assert "20.5 s in all, so at least 10.2 s on 2 cores" in table
