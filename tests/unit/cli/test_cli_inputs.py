"""Bad input through the real command line: exit code 2, the culprit named, no traceback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smpc_synth.cli import main
from smpc_synth.data import infer_schema

ROWS = 40


@pytest.fixture
def table(tmp_path):
    """A small valid table and its schema on disk."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(20, 70, ROWS),
            "income": rng.normal(50.0, 10.0, ROWS).round(2),
            "city": rng.choice(["Oslo", "Bergen", "Tromso"], ROWS),
        }
    )
    schema_path = tmp_path / "schema.toml"
    infer_schema(frame).save(schema_path)
    return frame, schema_path


def _write(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _cell(frame, column, row, value):
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


CASES = {
    "nan": (lambda f: _cell(f, "income", 6, np.nan), ["income", "row 7", "line 8"]),
    "inf": (lambda f: _cell(f, "income", 3, np.inf), ["income", "row 4", "line 5"]),
    "text_in_numeric": (lambda f: _cell(f, "age", 9, "forty"), ["age", "row 10", "forty"]),
    "unknown_category": (lambda f: _cell(f, "city", 2, "Paris"), ["city", "row 3", "Paris"]),
    "missing_column": (lambda f: f.drop(columns=["city"]), ["city"]),
    "extra_column": (lambda f: f.assign(ssn=1), ["ssn"]),
    "too_few_rows": (lambda f: f.head(3), ["3 data rows"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_rejects_bad_data_naming_file_column_and_row(cli, tmp_path, table, case):
    frame, schema = table
    edit, named = CASES[case]
    data = _write(tmp_path, edit(frame))
    result = cli("train", "--data", data, "--schema", schema, "--out", tmp_path / "out")
    assert result.code == 2, result.output
    assert str(data) in result.stderr
    for piece in named:
        assert piece in result.stderr, (piece, result.stderr)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "generator.pt").exists()


def test_missing_and_empty_files_name_the_file(cli, tmp_path, table):
    _, schema = table
    missing = tmp_path / "nope.csv"
    result = cli("train", "--data", missing, "--schema", schema, "--out", tmp_path / "o")
    assert result.code == 2 and str(missing) in result.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = cli("schema", "infer", empty, "-o", tmp_path / "s.toml")
    assert result.code == 2 and str(empty) in result.stderr
    assert "Traceback" not in result.output


def test_simulate_rejects_bad_data_before_starting_any_party(cli, tmp_path, table):
    frame, schema = table
    data = _write(tmp_path, _cell(frame, "city", 5, "Paris"))
    out = tmp_path / "run"
    result = cli("simulate", "--data", data, "--schema", schema, "--out", out, "--parties", "2")
    assert result.code == 2, result.output
    assert "Paris" in result.stderr and "city" in result.stderr
    assert not (out / "parties").exists()  # no session was written, no process started


def test_bad_option_values_name_the_option(cli, tmp_path):
    result = cli("simulate", "--parties", "9", "--out", tmp_path / "r")
    assert result.code == 2 and "--parties" in result.stderr
    result = cli("simulate", "--split", "random", "--out", tmp_path / "r")
    assert result.code == 2 and "split" in result.stderr
    result = cli("simulate", "--dataset", "nosuch", "--out", tmp_path / "r")
    assert result.code == 2 and "nosuch" in result.stderr and "breast_cancer" in result.stderr
    result = cli("simulate", "--generator", "nosuch", "--out", tmp_path / "r")
    assert result.code == 2 and "--generator" in result.stderr and "'nosuch'" in result.stderr
    assert not (tmp_path / "r").exists()


def test_schema_infer_then_train_sample_evaluate_round_trip(cli, tmp_path, table):
    frame, _ = table
    data = _write(tmp_path, frame)
    schema = tmp_path / "drafted.toml"
    assert cli("schema", "infer", data, "-o", schema).code == 0
    out = tmp_path / "model"
    result = cli(
        "train",
        "--data",
        data,
        "--schema",
        schema,
        "--out",
        out,
        "--target",
        "city",
        "--generator",
        "vae",
        "--epochs",
        "3",
        "--override-gate",
    )
    assert result.code == 0, result.output
    # train says what it does and shows its progress (plain lines: not a terminal)
    assert "train: plaintext mode, generator vae, data " in result.stdout
    assert "epoch 3/3" in result.stderr, result.stderr
    progress = json.loads((out / "metrics.json").read_text())["progress"]
    assert progress["epochs_done"] == progress["epochs_total"] == 3
    synthetic = tmp_path / "more.csv"
    assert cli("sample", "--model", out / "generator.pt", "-n", "25", "-o", synthetic).code == 0
    sampled = pd.read_csv(synthetic)
    assert len(sampled) == 25 and list(sampled.columns) == list(frame.columns)
    assert set(sampled["city"]) <= {"Oslo", "Bergen", "Tromso"}
    report = tmp_path / "report.json"
    result = cli(
        "evaluate", "--real", data, "--synthetic", synthetic, "--target", "city", "-o", report
    )
    assert result.code == 0, result.output
    assert "Quality score" in result.stdout and report.is_file()


def test_verify_passes_a_fresh_run_and_names_a_tampered_file(cli, tmp_path):
    out = tmp_path / "model"
    result = cli("train", "--dataset", "wine", "--out", out, "--override-gate")
    assert result.code == 0, result.output
    unsigned = cli("verify", out / "manifest.json")  # train has no certificates to sign with
    assert unsigned.code == 1 and "--allow-unsigned" in unsigned.output
    assert cli("verify", out / "manifest.json", "--allow-unsigned").code == 0
    data = (out / "synthetic.csv").read_bytes()
    (out / "synthetic.csv").write_bytes(data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])
    result = cli("verify", out, "--allow-unsigned")
    assert result.code == 1
    assert "synthetic.csv" in result.output


def test_simulate_refuses_a_non_empty_out_and_deletes_nothing(cli, tmp_path):
    """An earlier session's CA key, logs and parties survive a new run pointed at the folder."""
    out = tmp_path / "run"
    kept = {
        out / "certs" / "ca.key": b"the CA key of a live session\n",
        out / "logs" / "alice.log": b"yesterday's log\n",
        out / "parties" / "alice" / "party.toml": b"[party]\n",
        out / "session.json": b"{}\n",
    }
    for path, content in kept.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    result = cli("simulate", "--parties", "2", "--mode", "plaintext", "--out", out)
    assert result.code == 2, result.output
    assert str(out) in result.stderr and "not empty" in result.stderr
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in kept} == kept
    assert sorted(p.name for p in out.iterdir()) == ["certs", "logs", "parties", "session.json"]


def test_train_refuses_a_non_empty_out_before_training(cli, tmp_path, table):
    frame, schema = table
    data = _write(tmp_path, frame)
    out = tmp_path / "model"
    out.mkdir()
    (out / "generator.pt").write_bytes(b"an earlier model")
    result = cli("train", "--data", data, "--schema", schema, "--out", out)
    assert result.code == 2, result.output
    assert str(out) in result.stderr
    assert (out / "generator.pt").read_bytes() == b"an earlier model"
    assert sorted(p.name for p in out.iterdir()) == ["generator.pt"]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--mode", "federated", "--dp", "--target-epsilon", "-1"], "--target-epsilon"),
        (["--mode", "federated", "--epsilon", "nan"], "--epsilon"),
        (["--mode", "mpc", "--epsilon", "1", "--dp-unit", "party"], "per party"),
        (["--mode", "federated", "--dp"], "--dp needs --target-epsilon"),
        (
            ["--mode", "federated", "--he", "none", "--generator", "mst", "--epsilon", "1"],
            "federated.he",
        ),
        (["--seed", "-3"], "key 'seed'"),
        (["--holdout-fraction", "1"], "key 'holdout_fraction'"),
        (["--generator", "vae", "--epochs", "0"], "key 'epochs'"),
    ],
)
def test_simulate_refuses_bad_settings_before_writing_anything(capsys, tmp_path, flags, named):
    out = tmp_path / "run"
    code = main(["simulate", "--parties", "2", "--out", str(out), *flags])  # in-process: fast
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert "command line" in stderr and named in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists()


def test_train_refuses_bad_settings_before_reading_data(capsys, tmp_path):
    out = tmp_path / "model"
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "absent.csv"),
            "--generator",
            "vae",
            "--epochs",
            "0",
            "--out",
            str(out),
        ]
    )
    stderr = capsys.readouterr().err
    assert code == 2 and "key 'epochs'" in stderr and "absent.csv" not in stderr, stderr
    assert not out.exists()


WITHOUT_SCHEMA = {
    # an integer a float would round: used to train on int64 garbage (ages of -9.2e18), exit 0
    "huge_int": ("age,city\n" + "30,Oslo\n" * 20 + f"{2**63 + 5},Oslo\n", ["'age'", "row 21"]),
    "googol_ish": ("age,city\n" + "30,Oslo\n" * 20 + f"{10**30},Oslo\n", ["'age'", "row 21"]),
    # a few words among numbers: used to be '300 distinct text values ... free text'
    "text_in_numbers": (
        "age\n" + "".join(f"{i}.5\n" for i in range(299)) + "forty\n",
        ["'age'", "row 300 (line 301)", "'forty'"],
    ),
    "semicolons": ("age;city\n" + "30;Oslo\n" * 20, ["';'-separated"]),
    "header_only": ("age,city\n", ["no data rows"]),
}


@pytest.mark.parametrize("case", sorted(WITHOUT_SCHEMA))
@pytest.mark.parametrize("command", ["train", "schema"])
def test_data_without_a_schema_is_refused_naming_file_column_and_row(
    capsys, tmp_path, case, command
):
    text, named = WITHOUT_SCHEMA[case]
    data = tmp_path / "people.csv"
    data.write_text(text)
    out = tmp_path / "out"
    if command == "train":
        code = main(["train", "--data", str(data), "--out", str(out)])
    else:
        code = main(["schema", "infer", str(data), "-o", str(out / "schema.toml")])
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert str(data) in stderr and all(piece in stderr for piece in named), stderr
    assert not out.exists()


def test_simulate_refuses_a_schedule_larger_than_the_table_before_starting_any_party(cli, tmp_path):
    out = tmp_path / "run"
    result = cli(
        "simulate", "--dataset", "breast_cancer", "--parties", "2", "--generator", "vae",
        "--schedule", "latency", "--out", out,
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "generator_params.schedule = 'latency'" in result.stderr
    assert "455 training rows" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "parties").exists()  # no session was written, no process started


@pytest.mark.parametrize("command", ["schema", "sample", "evaluate"])
def test_an_existing_output_file_is_refused_and_kept(capsys, tmp_path, table, command):
    frame, _ = table
    data = _write(tmp_path, frame)
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's own file\n")
    argv = {
        "schema": ["schema", "infer", str(data), "-o", str(mine)],
        "sample": ["sample", "--model", str(tmp_path / "g.pt"), "-n", "5", "-o", str(mine)],
        "evaluate": ["evaluate", "--real", str(data), "--synthetic", str(data), "-o", str(mine)],
    }[command]
    code = main(argv)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    assert str(mine) in stderr and "already exists" in stderr, stderr
    assert mine.read_text() == "the user's own file\n"


def test_schema_infer_max_categories_admits_a_wide_column(capsys, tmp_path):
    from smpc_synth.data import Schema
    from smpc_synth.data.defaults import MAX_CATEGORIES

    levels = MAX_CATEGORIES + 50
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"city": [f"c{i}" for i in range(levels)], "x": rng.normal(size=levels).round(3)}
    )
    data = _write(tmp_path, frame)
    refused = main(["schema", "infer", str(data), "-o", str(tmp_path / "a.toml")])
    stderr = capsys.readouterr().err
    assert refused == 2 and "'city'" in stderr and "--max-categories" in stderr, stderr
    assert not (tmp_path / "a.toml").exists()
    argv = ["schema", "infer", str(data), "-o", str(tmp_path / "b.toml")]
    assert main([*argv, "--max-categories", str(levels)]) == 0
    assert len(Schema.load(tmp_path / "b.toml").column("city").categories) == levels
    assert main([*argv[:-1], str(tmp_path / "c.toml"), "--max-categories", "0"]) == 2
