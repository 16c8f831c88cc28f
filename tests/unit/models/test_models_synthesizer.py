"""Synthesizer: fit on a table, sample, and the safety of generator.pt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_models_support import mixed_frame

from smpc_synth.data.encoding import TableEncoder
from smpc_synth.data.schema import infer_schema
from smpc_synth.errors import InputError
from smpc_synth.models import GENERATOR_FILE, Synthesizer, get_generator

FAST = {"gaussian": {}, "vae": {"batch_size": 100}, "gan": {"batch_size": 100, "pac": 5}}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return mixed_frame(300, seed=1)


@pytest.fixture(scope="module")
def schema(table):
    return infer_schema(table, target="target")


@pytest.fixture(scope="module")
def vae(table, schema) -> Synthesizer:
    return Synthesizer.fit(table, schema, "vae", epochs=2, seed=0, params=FAST["vae"])


class _Marker:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("name", ["gaussian", "vae", "gan"])
def test_fit_sample_and_save_load_round_trip(table, schema, tmp_path, name):
    synth = Synthesizer.fit(table, schema, name, epochs=2, seed=0, params=FAST[name])
    first = synth.sample(80, seed=4)
    assert list(first.columns) == schema.names and len(first) == 80
    assert set(first["colour"]) <= set(table["colour"])
    pd.testing.assert_frame_equal(first, synth.sample(80, seed=4))
    path = synth.save(tmp_path)
    assert path == tmp_path / GENERATOR_FILE
    loaded = Synthesizer.load(path)
    assert loaded.generator.name == name and loaded.schema == schema
    pd.testing.assert_frame_equal(first, loaded.sample(80, seed=4))


def test_saved_file_is_plain_tensors(vae, tmp_path):
    payload = torch.load(vae.save(tmp_path / "g.pt"), weights_only=True)
    assert payload["format"] == "smpc-synth/generator" and payload["version"] == 1
    assert payload["generator"] == "vae" and payload["meta"]["train_rows"] == 300
    assert set(payload["state"]["modules"]) == {"decoder"}  # the encoder stays private


def test_same_seed_same_synthesizer(table, schema, vae):
    again = Synthesizer.fit(table, schema, "vae", epochs=2, seed=0, params=FAST["vae"])
    pd.testing.assert_frame_equal(vae.sample(50, seed=1), again.sample(50, seed=1))


def test_pickle_payload_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / GENERATOR_FILE
    torch.save({"format": "smpc-synth/generator", "version": 1, "x": _Marker(marker)}, evil)
    with pytest.raises(InputError, match="refused") as info:
        Synthesizer.load(tmp_path)
    assert str(evil) in str(info.value)
    assert not marker.exists()


def test_payload_with_foreign_object_cannot_be_saved(vae, tmp_path):
    vae.meta["bad"] = np.float64(1.0)
    try:
        with pytest.raises(TypeError, match=r"meta\.bad"):
            vae.save(tmp_path)
    finally:
        del vae.meta["bad"]
    assert not (tmp_path / GENERATOR_FILE).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable"),
        (b"\x00\x01garbage" * 50, "not a readable|refused"),
        ("half", "not a readable|refused|damaged"),
        ({"format": "other"}, "not a smpc-synth generator file"),
        ({"format": "smpc-synth/generator", "version": 99}, "'version': 99"),
        ({"format": "smpc-synth/generator", "version": 1}, "key 'generator' is missing"),
        ("bad-generator", "unknown generator 'nope'"),
        ("bad-state", "module 'decoder'"),
    ],
)
def test_bad_files_are_input_errors_naming_the_file(vae, tmp_path, content, message):
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        good = vae.save(tmp_path / "good.pt")
        if content == "half":
            data = good.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        else:
            payload = torch.load(good, weights_only=True)
            if content == "bad-generator":
                payload["generator"] = "nope"
            else:
                payload["state"]["modules"]["decoder"] = {"0.weight": torch.zeros(2, 2)}
            torch.save(payload, path)
    with pytest.raises(InputError, match=message) as info:
        Synthesizer.load(path)
    assert str(path) in str(info.value)


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Synthesizer.load(tmp_path / "nothing")


def test_bad_table_and_parameters_are_input_errors(table, schema):
    broken = table.copy()
    broken.loc[7, "colour"] = "purple"
    with pytest.raises(InputError, match="colour"):
        Synthesizer.fit(broken, schema, "gaussian", source="train.csv")
    with pytest.raises(InputError, match="unknown parameter 'depth'"):
        Synthesizer.fit(table, schema, "vae", params={"depth": 3})
    with pytest.raises(InputError, match="unknown generator"):
        Synthesizer.fit(table, schema, "diffusion")
    synth = Synthesizer.fit(table, schema, "gaussian")
    with pytest.raises(InputError, match="positive integer"):
        synth.sample(0)


def test_from_parts_assembles_a_separately_trained_generator(table, schema):
    cls = get_generator("gaussian")
    encoder = TableEncoder(schema, numeric=cls.numeric_encoding)
    encoder.fit_stats(encoder.sufficient_stats(table))
    gen = cls(encoder.layout).fit(encoder.transform(table))
    synth = Synthesizer.from_parts(schema, encoder, gen)
    pd.testing.assert_frame_equal(
        synth.sample(30, seed=2), Synthesizer.fit(table, schema, "gaussian").sample(30, seed=2)
    )
    other = TableEncoder(schema, numeric="mode").fit(table)
    with pytest.raises(ValueError, match="layout"):
        Synthesizer.from_parts(schema, other, gen)


def _with_hparams(vae: Synthesizer, path: Path, **hparams) -> Path:
    vae.save(path)
    payload = torch.load(path, weights_only=True)
    payload["hparams"].update(hparams)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        ({"hidden": [50_000, 50_000]}, "hidden"),  # 10 GB of weights
        ({"latent_dim": 10**12}, "latent_dim"),
        ({"hidden": [10**30]}, "hidden"),
    ],
)
def test_hyperparameters_of_a_model_file_are_bounded_before_allocation(
    vae, tmp_path, cli, hparams, key
):
    """generator.pt's hyperparameters sized the networks it built: 10 GB to 1 TB tried."""
    path = _with_hparams(vae, tmp_path / "generator.pt", **hparams)
    with pytest.raises(InputError, match=f"parameter '{key}'.*above the limit") as info:
        Synthesizer.load(path)
    assert str(path) in str(info.value)
    result = cli("sample", "--model", path, "-n", "5", "-o", tmp_path / "s.csv", timeout=120)
    assert result.code == 2 and f"parameter '{key}'" in result.stderr, result.output


def test_sample_rows_are_bounded_and_named(vae, tmp_path, cli):
    path = vae.save(tmp_path / "generator.pt")
    too_many = vae.max_sample_rows + 1
    with pytest.raises(InputError, match="exceed the limit"):
        vae.sample(too_many)
    result = cli("sample", "--model", path, "-n", "10000000000", "-o", tmp_path / "s.csv")
    assert result.code == 2 and "-n/--rows" in result.stderr, result.output
    assert not (tmp_path / "s.csv").exists()


def test_rows_are_drawn_in_batches_reproducibly(vae, monkeypatch):
    from smpc_synth.models import synthesizer

    first = vae.sample(15, seed=3)
    monkeypatch.setattr(synthesizer, "SAMPLE_BATCH_BYTES", 8 * vae.generator.widest() * 15)
    batched = vae.sample(40, seed=3)
    assert len(batched) == 40 and list(batched.columns) == list(first.columns)
    pd.testing.assert_frame_equal(batched.iloc[:15], first)  # the first batch: the same seed
    pd.testing.assert_frame_equal(batched, vae.sample(40, seed=3))
    assert (
        not batched.iloc[15:30]
        .reset_index(drop=True)
        .equals(batched.iloc[:15].reset_index(drop=True))
    )  # later batches draw from their own seeds
