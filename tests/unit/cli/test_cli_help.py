"""`--help` documents every option with its default and choices; flags that cannot be
honoured are refused."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from smpc_synth.cli import build_parser
from smpc_synth.errors import InputError


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_commands(sub, prefix + name + " "))
    return found


COMMANDS = _commands(build_parser())


def test_every_command_is_covered():
    expected = {"simulate", "party", "dealer", "aggregator", "split", "certs", "schema infer"}
    expected |= {"train", "sample", "evaluate", "verify", "bench"}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_each_default_and_every_choice(command):
    parser = COMMANDS[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help text"
        for choice in action.choices or ():
            assert str(choice) in text, f"{command} {name}: choice {choice!r} not shown"
        has_value = action.nargs != 0  # not a flag
        if action.option_strings and has_value and not action.required:
            if action.default is not None:
                assert f"default: {action.default}" in text, f"{command} {name}: no default"
            elif not any(action in g._group_actions for g in parser._mutually_exclusive_groups):
                # no value: the help says what happens then
                assert "default" in " ".join(action.help.split()), f"{command} {name}"


def test_light_commands_do_not_load_the_registries():
    """Choices come from the registries only when needed: `certs` stays fast."""
    import subprocess
    import sys

    code = (
        "import sys; from smpc_synth.cli import build_parser; "
        "build_parser().parse_args(['certs', '--names', 'a', '--out', 'x']); "
        "print('torch' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("command", ["simulate", "train"])
def test_epochs_with_gaussian_is_refused_naming_the_flag(cli, tmp_path, command):
    args = [command, "--generator", "gaussian", "--epochs", "5", "--out", tmp_path / "o"]
    if command == "train":
        args += ["--dataset", "breast_cancer"]
    result = cli(*args)
    assert result.code == 2, result.output
    assert "--epochs = 5 does not apply to generator 'gaussian'" in result.stderr
    assert "vae" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_epochs_with_gaussian_is_refused_by_the_api_and_a_party_config(tmp_path):
    from smpc_synth import api
    from smpc_synth.runtime.party_config import party_config_from_dict

    frame = pd.DataFrame({"x": [float(i) for i in range(20)]})
    with pytest.raises(InputError, match=r"train\(\): epochs = 3 does not apply"):
        api.train(frame, generator="gaussian", epochs=3)
    raw = {
        "party": {"name": "alice", "listen": "127.0.0.1:1", "data": "a.csv", "schema": "s.toml"},
        "run": {"generator": "gaussian", "epochs": 4},
    }
    with pytest.raises(InputError, match=r"p\.toml: key 'run\.epochs' = 4 does not apply"):
        party_config_from_dict(raw, base=tmp_path, source="p.toml")
