"""``bench dp``: a config narrows the grid, every session gets its own folder, and the table
says whether MPC selected what plaintext selected."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth_bench import dp


@settings(max_examples=40, deadline=None)
@given(
    epsilons=st.lists(st.sampled_from([0.3, 1.0, 3.0, 10.0]), min_size=1, max_size=4, unique=True),
    generators=st.lists(st.sampled_from(dp.GENERATORS), min_size=1, unique=True),
    modes=st.lists(st.sampled_from([*dp.MODES, "reference"]), min_size=1, unique=True),
    scaling=st.lists(st.sampled_from(dp.GENERATORS), unique=True),
    rows=st.lists(st.integers(100, 10**6), min_size=1, max_size=3, unique=True),
    debug_seed=st.none() | st.integers(0, 100),
    scaling_modes=st.lists(st.sampled_from(["mpc", "plaintext"]), min_size=1, unique=True),
    scaling_seed=st.none() | st.integers(0, 100),
)
def test_jobs_cover_the_config_once_each_in_its_own_folder(
    tmp_path_factory,
    epsilons,
    generators,
    modes,
    scaling,
    rows,
    debug_seed,
    scaling_modes,
    scaling_seed,
):
    path = tmp_path_factory.mktemp("cfg") / "dp.toml"
    lines = [
        f"epsilons = {epsilons!r}",
        f"generators = {generators!r}".replace("'", '"'),
        f"modes = {modes!r}".replace("'", '"'),
        f"scaling_generators = {scaling!r}".replace("'", '"'),
        f"scaling_rows = {rows!r}",
        f"scaling_modes = {scaling_modes!r}".replace("'", '"'),
    ]
    if debug_seed is not None:
        lines.append(f"debug_seed = {debug_seed}")
    if scaling_seed is not None:
        lines.append(f"scaling_debug_seed = {scaling_seed}")
    path.write_text("\n".join(lines) + "\n")
    jobs = list(dp._jobs(dp.DpGridSpec.load(path)))
    grid = [job for _, job in jobs if job["kind"] == "grid"]
    scaled = [job for _, job in jobs if job["kind"] == "scaling"]
    assert len(grid) == len(epsilons) * len(generators) * len(modes)
    assert {(j["epsilon"], j["generator"], j["mode"]) for j in grid} == {
        (e, g, m) for e in epsilons for g in generators for m in modes
    }
    assert len(scaled) == len(scaling) * len(rows) * len(scaling_modes)
    assert {(j["generator"], j["rows"], j["mode"]) for j in scaled} == {
        (g, r, m) for g in scaling for r in rows for m in scaling_modes
    }
    assert all(j["debug_seed"] == scaling_seed for j in scaled)
    assert len({key for key, _ in jobs}) == len(jobs)
    sessions = [job for _, job in jobs if job["mode"] != "reference"]
    assert len({dp._run_name(job) for job in sessions}) == len(sessions)
    if 1.0 in epsilons:  # the headline first
        assert grid[0]["epsilon"] == 1.0
    assert all(j["debug_seed"] == debug_seed for j in grid)


def _record(mode: str, selected: list, quality: float) -> dict:
    return {
        "exit_code": 0,
        "kind": "grid",
        "generator": "mst",
        "epsilon": 1.0,
        "seed": 0,
        "mode": mode,
        "debug_seed": 7,
        "selected": selected,
        "quality_score": quality,
        "tstr_auc": 0.7,
        "wall_seconds": 10.0 if mode == "plaintext" else 25.0,
    }


def test_table_compares_mpc_with_plaintext_and_notices_a_different_selection():
    same = dp.to_markdown(
        [_record("plaintext", [["a", "b"]], 0.9), _record("mpc", [["a", "b"]], 0.9)]
    )
    assert "the same marginals" in same and "| 2.50 |" in same
    other = dp.to_markdown(
        [_record("plaintext", [["a", "b"]], 0.9), _record("mpc", [["a", "c"]], 0.85)]
    )
    assert "different marginals" in other and "0.0500" in other


def test_times_are_compared_only_within_one_benchmark_invocation():
    """On a shared machine a ratio across two invocations measures the load, not the mode."""
    earlier = _record("plaintext", [["a", "b"]], 0.9) | {"bench_run": "dp-ours 1"}
    later = _record("mpc", [["a", "b"]], 0.9) | {"bench_run": "dp-sweep 2"}
    table = dp.to_markdown([earlier, later])
    mpc = next(line for line in table.splitlines() if "| mpc |" in line)
    assert "| 25.0 | – |" in mpc
    assert "the same marginals" in table  # quality does not depend on the load
    again = dp.to_markdown([earlier, later | {"bench_run": "dp-ours 1"}])
    assert "| 25.0 | 2.50 |" in again


def test_scaling_table_compares_rows_within_a_mode_and_mpc_with_plaintext():
    def run(rows, mode, wall, marginals):
        return {
            "exit_code": 0,
            "kind": "scaling",
            "generator": "aim",
            "epsilon": 1.0,
            "seed": 0,
            "rows": rows,
            "mode": mode,
            "debug_seed": 7,
            "selected": [["a"]] * marginals,
            "wall_seconds": wall,
            "train_seconds": wall / 2,
            "cpu_seconds_max": wall / 4,
            "members": {"dealer": {"role": "dealer", "cpu_seconds": 1.0}, "alice": {}},
        }

    table = dp.to_markdown(
        [run(5000, "plaintext", 10.0, 4), run(5000, "mpc", 20.0, 4), run(50000, "mpc", 60.0, 10)]
    )
    rows = {tuple(line.split(" | ")[1:3]): line for line in table.splitlines()}
    assert "| 3.00 |" in rows["50000", "mpc"]  # against 5,000 rows in MPC
    assert "| 1.00 | 2.00 |" in rows["5000", "mpc"]  # against plaintext on the same rows
    assert "| 1.50 |" in rows["50000", "mpc"] and "| 3.00 |" in rows["50000", "mpc"]  # s / marginal
    assert rows["5000", "mpc"].endswith("alice –, dealer 1.0 |")


def test_default_grid_and_committed_configs_load():
    spec = dp.DpGridSpec.load(None, full=True)
    assert spec.seeds == [0, 1, 2] and spec.epsilons == list(dp.EPSILONS)
    assert set(spec.modes) == {*dp.MODES, "reference"}
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("dp-*.toml"))
    assert configs
    for config in configs:  # an unknown key would raise here
        assert list(dp._jobs(dp.DpGridSpec.load(config))), config


def test_a_reference_stopped_at_its_timeout_runs_again_only_when_allowed_longer():
    stopped = {"exit_code": 124, "timeout_s": 300.0}
    assert not dp._again(stopped, dp.DpGridSpec(reference_timeout_s=300.0))
    assert dp._again(stopped, dp.DpGridSpec(reference_timeout_s=900.0))
    assert dp._again(stopped, dp.DpGridSpec())
    assert dp._again({"exit_code": 1}, dp.DpGridSpec())
    assert not dp._again({"exit_code": 2}, dp.DpGridSpec())
    table = dp.to_markdown([{**stopped, **_record("reference", [], 0.0), "unfinished": "late"}])
    assert "stopped: late" in table
