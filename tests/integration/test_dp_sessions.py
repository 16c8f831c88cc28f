"""AIM and MST as whole sessions: MPC selects what plaintext selects, nothing leaks, bad
budgets are refused before any traffic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mpc_harness import (
    DEALER,
    NETWORK,
    PARTY_NAMES,
    SEED,
    assert_all_ok,
    dealer_member,
    party_member,
)

from smpc_synth.api import simulate
from smpc_synth.config import RunConfig
from smpc_synth.dp import sampling
from smpc_synth.net.tap import ENV as WIRE_TAP_ENV

SMALL_AIM = {"rounds_per_column": 2, "iters": 200, "final_iters": 300}


def _session(tmp_path, mode: str, generator: str, params: dict):
    return simulate(
        3,
        dataset="fair",
        mode=mode,
        generator=generator,
        generator_params=params,
        epsilon=1.0,
        dp={"insecure_debug_seed": SEED},  # plaintext: the key the dealer's seed gives
        mpc={"insecure_dev": True, "debug_seed": SEED},
        out=tmp_path / f"{generator}-{mode}",
        show_progress=False,
    )


@pytest.mark.slow  # two 3-party sessions each (a few minutes on a busy 2-core machine)
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("generator", "params"), [("mst", {}), ("aim", SMALL_AIM)])
def test_mpc_selects_what_plaintext_selects(tmp_path, generator, params):
    """Same seed, same data, the dealer's debug seed: the same marginals are selected, the
    same budget is spent, and the same synthetic table is written (so quality and TSTR are
    equal, well within 0.01; sampling depends on no process's string hashing)."""
    runs = {mode: _session(tmp_path, mode, generator, params) for mode in ("plaintext", "mpc")}
    for mode, run in runs.items():
        assert run.exit_code == 0, (mode, run.exit_codes)
    trained = {mode: run.metrics["parties"]["alice"]["training"] for mode, run in runs.items()}
    assert trained["mpc"]["selected"] == trained["plaintext"]["selected"]
    assert trained["mpc"]["selected"]  # something was selected
    assert trained["mpc"]["privacy"]["rho_spent"] == pytest.approx(
        trained["plaintext"]["privacy"]["rho_spent"]
    )
    reports = {mode: run.metrics["evaluation"] for mode, run in runs.items()}
    quality = [reports[m]["fidelity"]["quality_score"] for m in runs]
    tstr = [reports[m]["utility"]["tstr_auc"] for m in runs]
    assert quality[0] == quality[1] and tstr[0] == tstr[1]
    tables = [(run.run_dir / "synthetic.csv").read_bytes() for run in runs.values()]
    assert tables[0] == tables[1]
    manifest = json.loads((runs["mpc"].run_dir / "manifest.json").read_text())
    assert 0.99 <= manifest["privacy"]["epsilon"] <= 1.0
    assert manifest["privacy"]["accountant"] == "zcdp"
    released = json.loads((runs["mpc"].run_dir / "metrics.json").read_text())
    assert released["privacy"] == manifest["privacy"] and "parties" not in released


SHAPE = [4, 6, 3]
CLIQUES = [(0, 1), (1, 2), (0, 2)]
SIGMA2 = 12.25


def _parts(n_parties: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(11)
    parts = []
    for i in range(n_parties):  # thousands of rows: every cell holds a large, distinct count
        rows = 6000 + 977 * i
        parts.append(np.stack([rng.integers(0, k, rows) for k in SHAPE], axis=1).tolist())
    return parts


def tapped_program(rank: int, parts: list, leak: bool) -> dict:
    import torch

    from smpc_synth.crypten_backend.compat import import_crypten
    from smpc_synth.dp.marginals import plan_selection
    from smpc_synth.mpc.marginals import SecureQueries

    queries = SecureQueries(np.asarray(parts[rank]), SHAPE)
    for tag, clique in enumerate(CLIQUES):
        queries.measure(clique, SIGMA2, tag)
    estimates = [np.full(int(np.prod([SHAPE[c] for c in cl])), 100.0) for cl in CLIQUES]
    errors = queries.errors(CLIQUES, estimates if rank == 0 else None)
    weights = np.ones(3, dtype=np.int64)
    plan = plan_selection(3, weights, np.zeros(3), 1.0, 1e6)
    chosen = queries.select(errors, range(3), weights, np.zeros(3), plan, 10)
    if leak:  # the control: send this party's counts in the clear
        import_crypten().communicator.get().all_reduce(queries._local(CLIQUES[0]).clone())
    del torch
    return {"chosen": chosen}


def _run_patiently(tmp_path, program, **kwargs):
    """The harness's 3-party session with generous deadlines: on a loaded 2-core
    machine, four fresh interpreters importing CrypTen can take longer than 30 s to listen."""
    import dataclasses

    from smpc_synth.runtime.local import launch

    parties = PARTY_NAMES[:3]
    party_args = {
        "parties": parties,
        "program": program,
        "program_kwargs": kwargs,
        "transport": "grpc",
        "provider": "dealer",
        "seed": SEED,
        "rendezvous": None,
    }
    members = {name: (party_member, party_args) for name in parties}
    members[DEALER] = (dealer_member, {"parties": parties, "seed": SEED})
    network = dataclasses.replace(
        NETWORK, connect_timeout_s=180.0, peer_timeout_s=90.0, call_deadline_s=90.0
    )
    return launch(members, tmp_path, tls=True, network=network).wait(600)


def _local_counts(parts, rank: int, clique) -> np.ndarray:
    from smpc_synth.dp.marginals import contingency

    return contingency(np.asarray(parts[rank]), clique, [SHAPE[c] for c in clique])


def _found(tap, receiver_not: str, pattern: bytes) -> list[str]:
    return [
        capture.name
        for capture in tap.glob("*-from-*.bin")
        if capture.name.split("-from-")[0] != receiver_not and pattern in capture.read_bytes()
    ]


@pytest.mark.slow  # two 3-party sessions with a dealer (minutes on a busy 2-core machine)
@pytest.mark.timeout(3600)
def test_neither_counts_nor_noise_cross_the_wire(tmp_path, monkeypatch):
    """Every frame every member receives is recorded: no party's own contingency table, no
    pooled table and no dealt noise appears in them. The control run, in which a party
    sends its counts in the clear, is caught by the same search."""
    parts = _parts(3)
    tap = tmp_path / "tap"
    monkeypatch.setenv(WIRE_TAP_ENV, str(tap))
    outcomes = _run_patiently(tmp_path / "run", tapped_program, parts=parts, leak=False)
    assert_all_ok(outcomes)
    pooled = np.concatenate([np.asarray(p) for p in parts])
    key = sampling.noise_key(SEED)
    patterns = {}
    for tag, clique in enumerate(CLIQUES):
        cells = int(np.prod([SHAPE[c] for c in clique]))
        for rank, name in enumerate(PARTY_NAMES):
            patterns[(name, f"own counts {clique}")] = _local_counts(parts, rank, clique).tobytes()
        from smpc_synth.dp.marginals import contingency

        total = contingency(pooled, clique, [SHAPE[c] for c in clique])
        noise = sampling.draw_noise(key, "dgauss", tag, cells, [SIGMA2])
        patterns[("", f"pooled counts {clique}")] = total.tobytes()
        patterns[("", f"noise {clique}")] = noise.tobytes()
        patterns[("", f"pooled counts x 256 {clique}")] = (total * 256).tobytes()
    assert {p.name for p in tap.glob("*.bin")} >= {"bob-from-alice.bin", "dealer-from-alice.bin"}
    leaks = {what: _found(tap, owner, p) for (owner, what), p in patterns.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}

    control = tmp_path / "tap-control"
    monkeypatch.setenv(WIRE_TAP_ENV, str(control))
    outcomes = _run_patiently(tmp_path / "control", tapped_program, parts=parts, leak=True)
    assert_all_ok(outcomes)
    assert _found(control, "alice", patterns[("alice", f"own counts {CLIQUES[0]}")])


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--epsilon", "0"], "--epsilon"),
        (["--epsilon", "-2"], "--epsilon"),
        (["--epsilon", "nan"], "--epsilon"),
        (["--epsilon", "1", "--delta", "0"], "--delta"),
        (["--epsilon", "1", "--delta", "nan"], "--delta"),
        (["--delta", "1e-9"], "--delta"),
        (["--epsilon", "1", "--delta"], "--delta"),
        ([], "--epsilon"),
    ],
)
def test_bad_budgets_exit_2_naming_the_flag_before_any_traffic(cli, tmp_path, flags, named):
    result = cli(
        "simulate", "--generator", "mst", "--mode", "mpc", "--out", tmp_path / "run", *flags
    )
    assert result.code == 2, result.output
    assert named in result.output
    assert not (tmp_path / "run" / "logs").exists()  # refused before any member started


def test_a_schema_inferred_from_the_rows_is_refused_with_a_budget(cli, tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n" + "".join(f"{i % 3},{i % 5}\n" for i in range(40)))
    result = cli(
        "train", "--data", data, "--generator", "aim", "--epsilon", "1", "--out", tmp_path / "o"
    )
    assert result.code == 2 and "--schema" in result.output, result.output


def test_federated_marginal_generators_need_encrypted_sums(cli, tmp_path):
    """Each submission carries only its party's share of the noise: plain sums are refused."""
    result = cli(
        "simulate",
        "--mode",
        "federated",
        "--he",
        "none",
        "--generator",
        "aim",
        "--epsilon",
        "1",
        "--out",
        tmp_path / "run",
    )
    assert result.code == 2 and "federated.he" in result.output, result.output
    assert not (tmp_path / "run" / "logs").exists()


def _federated(tmp_path, generator: str, params: dict, **options):
    return simulate(
        3,
        dataset="fair",
        mode="federated",
        generator=generator,
        generator_params=params,
        epsilon=1.0,
        dp={"insecure_debug_seed": SEED},
        out=tmp_path / f"{generator}-federated",
        show_progress=False,
        **options,
    )


@pytest.mark.timeout(1800)
def test_federated_mst_releases_only_noisy_sums_and_counts_every_share(tmp_path, monkeypatch):
    """A federated MST session, every frame every member receives recorded: no party's own
    one-way counts, no pooled count, no party's noise share and no noisy submission is among
    them, while the model the first party sends the others is (the search finds arrays
    that do cross). The budget counts n - 1 of the n shares and states each coalition's
    epsilon."""
    from smpc_synth.data import Schema, read_table, validate
    from smpc_synth.dp.marginals import contingency
    from smpc_synth.dp.zcdp import gaussian_rho, share_sigma2_for
    from smpc_synth.models import Synthesizer, get_generator
    from smpc_synth.train.federated_marginals import party_noise_key

    tap = tmp_path / "tap"
    monkeypatch.setenv(WIRE_TAP_ENV, str(tap))
    run = _federated(tmp_path, "mst", {})
    assert run.exit_code == 0, run.exit_codes
    privacy = json.loads((run.run_dir / "metrics.json").read_text())["privacy"]
    assert 0.99 <= privacy["epsilon"] <= 1.0
    assert {p["kind"] for p in privacy["parts"]} == {"distributed discrete gaussian"}
    shares = privacy["noise_shares"]
    assert (shares["parties"], shares["counted"]) == (3, 2)
    assert [c["data_parties"] for c in shares["coalitions"]] == [1, 2]
    assert shares["coalitions"][0]["epsilon"] == pytest.approx(privacy["epsilon"])
    assert shares["coalitions"][1]["epsilon"] > 1.3  # two of three know 2 of 3 shares

    schema = Schema.load(run.run_dir / "schema.toml")
    gen_cls = get_generator("mst")
    encoder = gen_cls.make_encoder(schema).fit_public()
    model = gen_cls(encoder.layout)
    d = len(model.shape)
    sigma2 = (d + 1) / (2 * (privacy["rho_budget"] / 3))  # a third: d columns and the sizes
    base = sampling.noise_key(SEED)
    codes = {}
    for name in PARTY_NAMES[:3]:
        path = run.run_dir / "parties" / name / "data.csv"
        frame = validate(read_table(path, schema), schema, source=str(path))
        codes[name] = model.codes(encoder.transform(frame))
    patterns = {}
    for c, cells in enumerate(model.shape):
        share = share_sigma2_for(gaussian_rho(sigma2), 2, 1.0, cells)
        for name, table in codes.items():
            own = contingency(table, (c,), [cells])
            noise = sampling.draw_noise(party_noise_key(name, base), "dgauss", c, cells, [share])
            patterns[(name, f"own counts {c}")] = own.tobytes()
            patterns[(name, f"own counts {c} as floats")] = own.astype(np.float64).tobytes()
            patterns[(name, f"noise share {c}")] = noise.tobytes()
            patterns[(name, f"submission {c}")] = (own + noise).astype(np.float64).tobytes()
        pooled = contingency(np.concatenate(list(codes.values())), (c,), [cells])
        patterns[("", f"pooled counts {c}")] = pooled.tobytes()
        patterns[("", f"pooled counts {c} as floats")] = pooled.astype(np.float64).tobytes()
    captured = {p.name for p in tap.glob("*.bin")}
    assert captured >= {"aggregator-from-alice.bin", "bob-from-alice.bin"}
    leaks = {what: _found(tap, owner, p) for (owner, what), p in patterns.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}

    state = Synthesizer.load(run.run_dir / "parties" / "bob" / "generator.pt").generator
    potential = np.asarray(state.state_dict()["potentials"][0], dtype=np.float64)
    assert "bob-from-alice.bin" in _found(tap, "", potential.tobytes())


@pytest.mark.slow  # a 3-party federated AIM session (a few minutes on a busy 2-core machine)
@pytest.mark.timeout(3600)
def test_federated_aim_matches_plaintext_quality(tmp_path):
    """Federated AIM selects from noisy sums of the parties' own scores and measures with
    n/(n-1) of the noise: its synthetic table stays close to plaintext AIM's."""
    runs = {
        "federated": _federated(tmp_path, "aim", SMALL_AIM),
        "plaintext": _session(tmp_path, "plaintext", "aim", SMALL_AIM),
    }
    for mode, run in runs.items():
        assert run.exit_code == 0, (mode, run.exit_codes)
    trained = runs["federated"].metrics["parties"]["alice"]["training"]
    assert trained["selected"]
    quality = {m: r.metrics["evaluation"]["fidelity"]["quality_score"] for m, r in runs.items()}
    assert quality["federated"] >= quality["plaintext"] - 0.05, quality


@pytest.mark.slow  # one 3-party session (with a dealer in MPC) and a minute-long final fit
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", ["mpc", "plaintext"])
def test_a_fit_longer_than_the_progress_deadline_does_not_stop_the_session(tmp_path, mode):
    """The first party's last Private-PGM fit (800,000 iterations) outlasts the others'
    10 s progress deadline several times; its notices keep them waiting, and the session
    ends with a model."""
    deadline = 10.0
    params = {"rounds_per_column": 1, "iters": 100, "final_iters": 800_000}
    config = RunConfig.from_dict(
        {
            "mode": mode,
            "generator": "aim",
            "generator_params": params,
            "dp": {"epsilon": 1.0},
            "network": {"peer_timeout_s": deadline, "progress_timeout_s": deadline},
        }
    )
    run = simulate(3, dataset="fair", config=config, out=tmp_path / "run", show_progress=False)
    assert run.exit_code == 0, run.exit_codes
    assert (run.run_dir / "synthetic.csv").is_file()
    leader = json.loads((run.run_dir / "parties" / "alice" / "metrics.json").read_text())
    assert leader["wall_seconds"] > 2 * deadline  # the fit did outlast the deadline
