"""Run and party configuration: defaults, fingerprints, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from smpc_synth.config import RunConfig
from smpc_synth.errors import InputError
from smpc_synth.runtime.party_config import is_loopback, load_party_config


def test_equal_configs_share_a_fingerprint_and_any_change_alters_it():
    a = RunConfig.from_dict({"mode": "mpc", "epochs": 3})
    b = RunConfig.from_dict({"epochs": 3, "mode": "mpc"})
    c = RunConfig.from_dict({"mode": "mpc", "epochs": 3, "federated": {"clip_norm": 2.0}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"mdoe": "mpc"}, "mdoe"),
        ({"mode": "quantum"}, "mode"),
        ({"epochs": "ten"}, "epochs"),
        ({"federated": {"clip_norm": "big"}}, "federated.clip_norm"),
        ({"mpc": {"transprt": "grpc"}}, "mpc.transprt"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"split": "random"}, "split"),
        ({"mpc": {"debug_seed": 3}}, "mpc.debug_seed"),
        ({"mpc": {"debug_seed": "3", "insecure_dev": True}}, "mpc.debug_seed"),
    ],
)
def test_bad_run_config_names_the_key(raw, named):
    with pytest.raises(InputError) as err:
        RunConfig.from_dict(raw, source="run.toml")
    assert "run.toml" in str(err.value)
    assert named in str(err.value)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "party.toml"
    path.write_text(text)
    return path


GOOD = """
[party]
name = "alice"
listen = "127.0.0.1:50051"
data = "alice.csv"
schema = "schema.toml"

[[peers]]
name = "bob"
address = "127.0.0.1:50052"

[[peers]]
name = "dealer"
address = "127.0.0.1:50053"
role = "dealer"

[run]
mode = "mpc"
"""


def test_party_config_resolves_paths_ranks_and_services(tmp_path):
    cfg = load_party_config(_write(tmp_path, GOOD))
    assert cfg.data == (tmp_path / "alice.csv").resolve()
    assert cfg.data_parties == ("alice", "bob")
    assert cfg.service("dealer") == "dealer"
    assert cfg.run.mode == "mpc"


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda t: t.replace('name = "alice"\n', ""), "party.name"),
        (lambda t: t.replace('listen = "127.0.0.1:50051"', 'listne = "x"'), "party.listne"),
        (lambda t: t.replace('role = "dealer"', 'role = "judge"'), "peers[1].role"),
        (lambda t: t.replace('name = "bob"', 'name = "alice"'), "'alice' appears twice"),
        (lambda t: t.replace('mode = "mpc"', 'mode = "magic"'), "mode"),
        (lambda t: t + "[tls]\nca = 'nope.pem'\ncert = 'a.pem'\nkey = 'a.key'\n", "tls.ca"),
        (lambda t: t.replace("127.0.0.1:50052", "10.1.2.3:50052"), "peers.bob.address"),
        (lambda t: t.replace("[party]", "[party\n"), "not valid TOML"),
    ],
)
def test_bad_party_config_names_file_and_key(tmp_path, edit, named):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(InputError) as err:
        load_party_config(path)
    assert str(path) in str(err.value)
    assert named in str(err.value)


def test_plain_tcp_off_loopback_needs_the_explicit_flag(tmp_path):
    text = GOOD.replace("127.0.0.1:50052", "10.1.2.3:50052")
    text = text.replace('schema = "schema.toml"', 'schema = "schema.toml"\nallow_insecure = true')
    assert load_party_config(_write(tmp_path, text)).allow_insecure


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1:1", True), ("localhost:5", True), ("[::1]:7", True), ("10.0.0.1:1", False)],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback
