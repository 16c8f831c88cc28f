"""``generator_params.schedule``: the rule's values, its refusals, and where it is recorded."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_models_support import mixed_frame

from smpc_synth.cli import main
from smpc_synth.config import RunConfig
from smpc_synth.data.schema import infer_schema
from smpc_synth.errors import InputError
from smpc_synth.models import Synthesizer, check_batch_rows, get_generator, hyperparameters
from smpc_synth.models.base import parse_hparams
from smpc_synth.models.schedule import LATENCY_BATCH_FACTOR, latency_lr_factor
from smpc_synth.runtime.simulate import prepare_session

NEURAL = ("vae", "gan")


@pytest.mark.parametrize("name", NEURAL)
def test_latency_takes_k_times_the_default_batch_and_scales_the_rate(name):
    cls = get_generator(name).Params
    defaults = cls()
    params = parse_hparams(cls, {"schedule": "latency"}, name)
    assert params.batch_size == LATENCY_BATCH_FACTOR * defaults.batch_size
    assert math.isclose(params.lr, defaults.lr * LATENCY_BATCH_FACTOR)
    # read back (a saved model's hyperparameters): the same values, not scaled twice
    assert parse_hparams(cls, asdict(params), name) == params
    assert parse_hparams(cls, {}, name).batch_size == defaults.batch_size  # opt-in only


@given(st.floats(min_value=1.0, max_value=1e4))
def test_the_rate_grows_with_the_batch_factor(k):
    assert math.isclose(latency_lr_factor(k), k, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("given_params", "named"),
    [
        ({"schedule": "fast"}, "parameter 'schedule' must be one of default, latency"),
        ({"schedule": "latency", "batch_size": 1000}, "parameter 'batch_size' = 1000"),
        ({"schedule": "latency", "lr": 0.01}, "parameter 'lr' = 0.01"),
        ({"schedule": 5}, "parameter 'schedule' should be like"),
    ],
)
def test_a_bad_or_contradicted_schedule_is_refused_naming_the_key(given_params, named):
    with pytest.raises(InputError, match=named):
        parse_hparams(get_generator("vae").Params, given_params, "generator 'vae'")


def test_run_configs_refuse_what_the_schedule_cannot_honour():
    ok = RunConfig.from_dict({"generator": "vae", "generator_params": {"schedule": "latency"}})
    recorded = hyperparameters(ok.generator, ok.generator_params, epochs=7)
    assert (recorded["batch_size"], recorded["lr"], recorded["epochs"]) == (2500, 5e-3, 7)
    assert hyperparameters("vae", {"epochs": 12})["epochs"] == 12
    for raw, named in [
        ({"generator": "vae", "generator_params": {"schedule": "x"}}, "generator_params"),
        ({"generator": "gaussian", "generator_params": {"schedule": "latency"}}, "schedule"),
        # DP-SGD's batches are Poisson samples the ledger accounts: the user's own
        (
            {
                "generator": "vae",
                "generator_params": {"schedule": "latency"},
                "dp": {"epsilon": 1.0},
            },
            "'schedule' = 'default' under DP",
        ),
    ]:
        with pytest.raises(InputError, match=named):
            RunConfig.from_dict(raw)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=2, max_value=10_000), st.sampled_from(["default", "latency"]))
def test_a_schedules_batch_larger_than_the_rows_is_refused(rows, schedule):
    params = {"schedule": schedule}
    batch = hyperparameters("vae", params)["batch_size"]
    if schedule == "latency" and batch > rows:
        with pytest.raises(InputError, match=r"generator_params\.schedule = 'latency'"):
            check_batch_rows("vae", params, rows, "here", "training rows")
    else:  # the default schedule clips its batch to the rows, as it always has
        check_batch_rows("vae", params, rows, "here", "training rows")


def test_the_python_api_applies_refuses_and_records_the_schedule(tmp_path):
    table = mixed_frame(2600, seed=0)
    schema = infer_schema(table, target="target")
    small = table.iloc[:300]
    with pytest.raises(InputError, match="more than the 300 training rows"):
        Synthesizer.fit(small, schema, "vae", epochs=1, params={"schedule": "latency"})
    model = Synthesizer.fit(
        table, schema, "vae", epochs=1, params={"schedule": "latency", "hidden": [8]}
    )
    assert model.generator.hparams.batch_size == 2500
    model.save(tmp_path / "generator.pt")
    loaded = Synthesizer.load(tmp_path / "generator.pt")
    assert loaded.generator.hparams == model.generator.hparams
    assert loaded.generator.hparams.schedule == "latency"


def test_simulate_and_a_federated_party_refuse_before_connecting(tmp_path, capsys):
    """Federated parties draw batches from their own rows: simulate refuses a schedule
    larger than the smallest party's, and a party started from its own config refuses it
    before it connects (its peers are not even running)."""
    config = RunConfig.from_dict(
        {"mode": "federated", "generator": "vae", "generator_params": {"schedule": "latency"}}
    )
    with pytest.raises(InputError, match="more than the 1,697 rows of the smallest party"):
        prepare_session(3, dataset="fair", config=config, out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    session = prepare_session(
        2, dataset="breast_cancer", out=tmp_path / "run", mode="federated", generator="vae"
    )
    alice = next(m for m in session.members if m.name == "alice")
    text = alice.config_path.read_text()
    assert "[run.generator_params]\n" in text
    alice.config_path.write_text(
        text.replace("[run.generator_params]\n", '[run.generator_params]\nschedule = "latency"\n')
    )
    assert main(["party", "--config", str(alice.config_path)]) == 2
    err = capsys.readouterr().err
    assert "data.csv: generator_params.schedule = 'latency' takes batches of 2,500" in err
    assert "rows here" in err and "Traceback" not in err
