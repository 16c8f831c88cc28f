"""``smpc-synth bench mpc-ops``: how per-party records become the reported figures."""

from __future__ import annotations

from smpc_synth_bench import mpc_ops
from smpc_synth_bench.member_cpu import MemberCpu


def _party_record(me: str, seconds: float, cpu: dict[str, float], sent: float) -> dict:
    return {
        "op": "relu",
        "transport": "grpc+tls",
        "parties": 2,
        "seconds": seconds,
        "bytes_per_party": sent,
        "rounds": 5.0,
        "measured_on": "our links",
        "crypten_bytes": 2 * sent,
        "crypten_rounds": 7.0,
        "dealer_bytes_received": 1e6 if me == "alice" else 0.0,
        "phases": {},
        "cpu_seconds_by_member": cpu,
    }


def test_merge_keeps_the_slowest_party_and_charges_every_members_cpu():
    alice = _party_record("alice", 0.050, {"alice": 0.030, "dealer": 0.012}, 2e6)
    bob = _party_record("bob", 0.052, {"bob": 0.025}, 1.5e6)
    (merged,) = mpc_ops._merge([[alice], [bob]])
    assert merged["seconds"] == 0.052
    assert merged["bytes_per_party"] == 2e6
    assert merged["cpu_seconds_by_member"] == {"alice": 0.030, "dealer": 0.012, "bob": 0.025}
    assert abs(merged["cpu_seconds"] - 0.067) < 1e-12


def test_table_shows_total_cpu_and_the_floor_it_sets_on_this_machine():
    (merged,) = mpc_ops._merge(
        [[_party_record("alice", 0.05, {"alice": 0.03, "dealer": 0.01}, 2e6)]]
    )
    table = mpc_ops.format_table([merged, mpc_ops._theory_record("relu", 2)])
    header, _, row, theory, *notes = table.splitlines()
    assert header.rstrip().endswith("CPU ms")
    assert row.split()[-1] == "40.0"  # ms: 30 + 10
    assert theory.split()[-1] == "-"
    assert "cores" in notes[-1]


def test_theory_is_the_beaver_bound_of_the_matmul():
    n = mpc_ops.MATMUL_SIZE
    assert mpc_ops.theoretical_bytes("matmul", 2) == 8 * (n * n + n * n)
    assert mpc_ops.theoretical_bytes("matmul", 3) == 2 * mpc_ops.theoretical_bytes("matmul", 2)


def test_ratios_line_compares_the_step_within_one_run():
    def step(transport: str, seconds: float, cpu: float | None) -> dict:
        record = _party_record("alice", seconds, {"alice": cpu or 0.0}, 5.4e6)
        return {
            **record,
            "op": "train_step",
            "transport": transport,
            "rounds": 21.0,
            "cpu_seconds": cpu,
        }

    line = mpc_ops.format_ratios([step("grpc+tls", 0.167, 0.248), step("gloo", 0.178, None)])
    assert "167 ms, 5.40 MB, 21 rounds" in line
    assert "0.94x the time over gloo" in line
    assert "CPU floor on" in line
    assert "stock" not in line  # no stock record: no ratio to it
    with_stock = mpc_ops.format_ratios(
        [step("grpc+tls", 0.167, None), step("gloo", 0.178, None), step("stock", 1.1, None)]
    )
    assert "stock CrypTen takes 6.6x the time, 1.0x the rounds, 1.0x the bytes" in with_stock
    slow_tls = mpc_ops.format_ratios([step("grpc+tls", 0.25, None), step("gloo", 0.2, None)])
    assert "1.25x the time over gloo" in slow_tls and "CPU floor" not in slow_tls


def test_member_cpu_laps_count_only_the_time_since_the_last_lap():
    clock = MemberCpu(session=None, rank=1, me="bob")  # not party 0: no dealer reading
    sum(i * i for i in range(300_000))  # burn some CPU
    first = clock.lap()
    second = clock.lap()
    assert set(first) == {"bob"}
    assert first["bob"] > 0
    assert second["bob"] < first["bob"]
