"""Benchmark grids on Ray: ``bench paper --ray local`` runs real cells as Ray tasks into the
same ledger and tables, resumes, and is refused without Ray installed."""

from __future__ import annotations

import json
import sys

import pytest

from smpc_synth_bench.grid import GridSpec, members_of


def test_ray_without_ray_installed_is_refused_with_the_install_hint(monkeypatch, tmp_path, capsys):
    from smpc_synth.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    grid = tmp_path / "grid.toml"
    grid.write_text('[grid]\nmodes = ["plaintext"]\ngenerators = ["gaussian"]\n')
    code = main(
        ["bench", "paper", "--config", str(grid), "--ray", "local", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "pip install 'smpc-synth[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs.jsonl").exists()


def test_ray_is_refused_by_suites_without_a_grid(tmp_path):
    from smpc_synth.errors import InputError
    from smpc_synth_bench import run_suite

    with pytest.raises(InputError, match="--ray: bench mpc-ops"):
        run_suite("mpc-ops", tmp_path, ray="local")


def test_a_cell_reserves_a_cpu_for_each_of_its_members():
    spec = GridSpec(modes=["plaintext", "mpc", "federated+ckks"], parties=[3])
    counts = {run["mode"]: members_of(run, spec) for run in spec.runs()}
    assert counts == {"plaintext": 3, "mpc": 4, "federated+ckks": 4}


def test_paper_grid_on_local_ray_completes_resumes_and_writes_the_tables(cli, tmp_path):
    pytest.importorskip("ray")
    grid = tmp_path / "grid.toml"
    grid.write_text(
        "[grid]\n"
        'modes = ["plaintext", "federated"]\n'
        'generators = ["gaussian"]\n'
        'datasets = ["breast_cancer"]\n'
        "parties = [2]\n"
        "[grid.options]\n"
        "holdout_fraction = 0.0\n"  # no evaluation: this checks the machinery, fast
    )
    out = tmp_path / "out"
    first = cli("bench", "paper", "--config", grid, "--ray", "local", "--out", out, timeout=900)
    assert first.code == 0, first.output[-3000:]
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["run"]["mode"] for r in records) == ["federated", "plaintext"]
    assert all(r["exit_code"] == 0 and r["environment"]["node"] for r in records)
    federated = next(r for r in records if r["run"]["mode"] == "federated")
    assert set(federated["metrics"]["members"]) == {"alice", "bob", "aggregator"}
    assert federated["metrics"]["bytes_per_party"] > 0  # a real session ran in the task
    assert (out / "summary.md").is_file() and (out / "summary.tex").is_file()
    again = cli("bench", "paper", "--config", grid, "--ray", "local", "--out", out, timeout=900)
    assert again.code == 0, again.output[-3000:]
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2  # nothing ran twice


def test_a_cluster_without_a_node_large_enough_for_a_cell_is_refused():
    ray = pytest.importorskip("ray")
    from smpc_synth.errors import InputError
    from smpc_synth_bench.ray_grid import _check_room

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _check_room(ray, "head:6379", 2)  # two members fit on a 2-CPU node
        with pytest.raises(InputError, match=r"runs 3 member processes.*has 2 CPUs"):
            _check_room(ray, "head:6379", 3)  # its placement group would wait for ever
    finally:
        ray.shutdown()
