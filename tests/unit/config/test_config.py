"""Run and party configuration: defaults, fingerprints, and errors that name the key."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest

from smpc_synth.config import RunConfig
from smpc_synth.errors import InputError
from smpc_synth.runtime.party_config import is_loopback, load_party_config


def test_equal_configs_share_a_fingerprint_and_any_change_alters_it():
    a = RunConfig.from_dict({"mode": "mpc", "epochs": 3})
    b = RunConfig.from_dict({"epochs": 3, "mode": "mpc"})
    c = RunConfig.from_dict({"mode": "mpc", "epochs": 3, "federated": {"local_epochs": 2}})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_an_integer_in_a_float_key_hashes_as_the_float():
    """One member writes clip_norm = 2, another 2.0: the same config, the same handshake hash."""
    as_int = RunConfig.from_dict({"dp": {"clip_norm": 2}, "network": {"peer_timeout_s": 9}})
    as_float = RunConfig.from_dict({"dp": {"clip_norm": 2.0}, "network": {"peer_timeout_s": 9.0}})
    assert as_int.fingerprint() == as_float.fingerprint()
    assert isinstance(as_int.dp.clip_norm, float)


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"mdoe": "mpc"}, "mdoe"),
        ({"mode": "quantum"}, "mode"),
        ({"epochs": "ten"}, "epochs"),
        ({"federated": {"update_bound": "big"}}, "federated.update_bound"),
        ({"dp": {"clip_norm": "big"}}, "dp.clip_norm"),
        ({"mpc": {"transprt": "grpc"}}, "mpc.transprt"),
        ({"holdout_fraction": 1.5}, "holdout_fraction"),
        ({"split": "random"}, "split"),
        ({"mpc": {"debug_seed": 3}}, "mpc.debug_seed"),
        ({"mpc": {"debug_seed": "3", "insecure_dev": True}}, "mpc.debug_seed"),
        # values that used to pass the config and fail later, after connecting, or never
        ({"generator": "nosuch"}, "key 'generator': unknown generator 'nosuch'"),
        ({"generator_params": {"ridge": "x"}}, "key 'generator_params'"),
        ({"generator": "vae", "generator_params": {"layers": 3}}, "unknown parameter 'layers'"),
        ({"mpc": {"provider": "tfp"}}, "key 'mpc.provider': 'tfp'"),
        ({"federated": {"dp": True}}, "key 'federated.dp' has moved"),
        ({"mode": "mpc", "federated": {"noise_multiplier": 1.0}}, "federated.noise_multiplier"),
        ({"mode": "federated", "federated": {"target_epsilon": 1.0}}, "target_epsilon"),
        ({"dp": {"epsilon": 0}}, "key 'dp.epsilon': must be > 0"),
        ({"dp": {"epsilon": 1.0, "unit": "row"}}, "key 'dp.unit'"),
        ({"mode": "mpc", "dp": {"epsilon": 1.0, "unit": "party"}}, "key 'dp.epsilon'"),
        (
            {"mode": "federated", "generator": "mst", "dp": {"epsilon": 1.0, "unit": "party"}},
            "key 'dp.epsilon'",
        ),
        (
            {
                "mode": "federated",
                "generator": "aim",
                "dp": {"epsilon": 1.0},
                "federated": {"masking": False},
            },
            "key 'federated.masking'",
        ),
        (
            {
                "mode": "federated",
                "generator": "mst",
                "dp": {"epsilon": 1.0},
                "federated": {"he": "none"},
            },
            "key 'federated.he'",
        ),
        ({"network": {"peer_timeout_s": -5}}, "key 'network.peer_timeout_s': must be > 0"),
        ({"network": {"connect_timeout_s": 1e9}}, "network.connect_timeout_s"),
        ({"network": {"call_deadline_s": 0}}, "network.call_deadline_s"),
        ({"network": {"heartbeat_interval_s": 0}}, "heartbeat_interval_s': must be > 0"),
        ({"network": {"heartbeat_interval_s": 40}}, "must be below 'peer_timeout_s'"),
        (
            {"network": {"peer_timeout_s": 60, "progress_timeout_s": 45}},
            "progress_timeout_s': must be at least 'peer_timeout_s'",
        ),
        ({"network": {"max_message_bytes": -1}}, "network.max_message_bytes': must be >="),
        ({"network": {"max_message_bytes": 2**40}}, "network.max_message_bytes"),
        ({"dp": {"clip_norm": -1.0}}, "key 'dp.clip_norm': must be > 0"),
        ({"dp": {"delta": 5}}, "key 'dp.delta': must be < 1"),
        ({"federated": {"update_bound": 0}}, "federated.update_bound"),
        ({"federated": {"local_epochs": 0}}, "federated.local_epochs"),
        ({"federated": {"he": "paillier"}}, "federated.he"),
        ({"output_parties": ["alice", "alice"]}, "output_parties"),
        ({"output_parties": ["Alice Smith"]}, "output_parties[0]"),
        ({"gate": {"min_quality_score": 1.5}}, "key 'gate.min_quality_score': must be <= 1"),
        ({"gate": {"max_exact_copy_rate": -0.1}}, "gate.max_exact_copy_rate"),
        ({"gate": {"min_dcr_ratio": float("nan")}}, "gate.min_dcr_ratio"),
        ({"gate": {"enabled": 1}}, "key 'gate.enabled': must be true or false"),
        ({"seed": -1}, "key 'seed'"),
        ({"seed": 2**40}, "key 'seed'"),
        ({"epochs": 0}, "key 'epochs'"),
        ({"epochs": 2.0}, "key 'epochs': must be a whole number"),
        ({"sample_rows": 0}, "key 'sample_rows'"),
        ({"network": 5}, "key 'network' must be a table"),
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
        (lambda t: t + "output_parties = ['carol']\n", "key 'run.output_parties[0]': 'carol'"),
        (lambda t: t + "output_parties = ['dealer']\n", "run.output_parties[0]"),
        (lambda t: t.replace('role = "dealer"', 'role = "data"'), "role 'dealer'"),
        (lambda t: t.replace('mode = "mpc"', 'mode = "federated"'), "role 'aggregator'"),
        (lambda t: t + "[run.network]\nheartbeat_interval_s = 0\n", "run.network.heartbeat"),
        (lambda t: t.replace("127.0.0.1:50052", "127.0.0.1:99999"), "peers[0].address"),
        (lambda t: t.replace("127.0.0.1:50052", "no-port"), "peers[0].address"),
        (lambda t: t.replace('name = "bob"', 'name = "Bob!"'), "peers[0].name"),
        (lambda t: t.replace('schema = "schema.toml"', "schema = 3"), "party.schema"),
        (lambda t: t.replace("[[peers]]", "peers = 3\n[[peerz]]", 1), "peerz"),
        (
            lambda t: (
                t.replace('mode = "mpc"', 'mode = "federated"').replace(
                    'role = "dealer"', 'role = "aggregator"'
                )
                + "[run.federated]\nupdate_bound = 1e30\n"
            ),
            "run.federated.update_bound",
        ),
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


# -- generated configs: the handshake hash survives every member's TOML round trip ----------


def _valid_value(prop):
    """A strategy of values the key's schema accepts (its type, inside its bounds)."""
    from hypothesis import strategies as st

    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    o = options[0]
    if "enum" in o:
        return st.sampled_from(o["enum"])
    kind = o.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        lo = o.get("minimum", o.get("exclusiveMinimum"))
        hi = o.get("maximum", o.get("exclusiveMaximum"))
        if kind == "integer":
            return st.integers(lo if lo is not None else -(2**31), hi if hi is not None else 2**31)
        floats = st.floats(
            min_value=lo,
            max_value=hi,
            exclude_min="exclusiveMinimum" in o,
            exclude_max="exclusiveMaximum" in o,
            allow_nan=False,
            allow_infinity=False,
        )
        # a whole number may be written as a TOML integer (2) or float (2.0): same config
        first = math.floor(lo) + 1 if lo is not None else -(10**6)
        last = math.ceil(hi) - 1 if hi is not None else 10**6
        return floats | st.integers(first, last) if first <= last else floats
    return None  # strings with patterns, lists, tables: keep their defaults


def _run_leaves():
    from pydantic import TypeAdapter

    from smpc_synth.config import sections

    schema = TypeAdapter(RunConfig).json_schema()
    for key, prop in schema["properties"].items():
        if key in sections(RunConfig):
            sub = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
            yield from (((key, k), p) for k, p in sub["properties"].items())
        else:
            yield (key,), prop


@pytest.fixture(scope="module")
def run_leaves():
    leaves = [(path, _valid_value(p)) for path, p in _run_leaves()]
    return [(path, strategy) for path, strategy in leaves if strategy is not None]


def test_generated_configs_hash_alike_after_a_toml_round_trip(run_leaves):
    """Any config a member can load gives the same fingerprint after simulate writes it to
    TOML and another member reads it back, and a whole float written as an integer counts
    as the same value."""
    import tomllib

    import tomli_w
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=150,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(st.sampled_from(run_leaves), max_size=8).flatmap(
            lambda chosen: st.tuples(*[st.tuples(st.just(p), s) for p, s in chosen])
        )
    )
    def check(assignments):
        raw: dict = {}
        for path, value in assignments:
            node = raw
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        try:
            cfg = RunConfig.from_dict(raw, source="generated")
        except InputError as exc:  # a rule across keys (dp without a budget, ...): named
            assert "generated: key '" in str(exc)
            # a rule between keys ("at least 'peer_timeout_s'"), not one key's type or range
            assert not re.search(r"must be [<>]|must be (?!at least ')(a|true)", str(exc)), exc
            assume(False)
        text = tomli_w.dumps(cfg.to_toml_dict())
        again = RunConfig.from_dict(tomllib.loads(text), source="round trip")
        assert again.fingerprint() == cfg.fingerprint()
        assert again.to_dict() == cfg.to_dict()

    check()


def test_a_bad_party_config_is_refused_before_any_peer_hears_from_it(tmp_path, capsys):
    """Settings that used to be checked after connecting (or never) stop the party before it
    opens a socket: a peer that is listening sees no connection."""
    import socket

    from smpc_synth.cli import main

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    (tmp_path / "alice.csv").write_text("x\n1\n")
    (tmp_path / "schema.toml").write_text(
        '[[columns]]\nname = "x"\nkind = "integer"\nmin = 0\nmax = 9\n'
    )
    base = GOOD.replace("127.0.0.1:50052", f"127.0.0.1:{port}")
    cases = {
        "heartbeat": "[run.network]\nheartbeat_interval_s = 0\n",
        "tfp": "[run.mpc]\nprovider = 'tfp'\n",
        "outputs": "output_parties = ['zed']\n",
        "generator": "generator = 'nosuch'\n",
        "gate": "[run.gate]\nmin_quality_score = 7\n",
    }
    try:
        for name, extra in cases.items():
            path = tmp_path / f"{name}.toml"
            path.write_text(base + extra)
            assert main(["party", "--config", str(path)]) == 2, name
            err = capsys.readouterr().err
            assert str(path) in err and "key 'run." in err, err
            with pytest.raises(TimeoutError):
                listener.accept()
    finally:
        listener.close()


def test_every_mode_has_a_training_strategy():
    """The config's list of modes and the strategies that train them are the same set."""
    from smpc_synth.config import MODES
    from smpc_synth.train import STRATEGIES

    assert set(STRATEGIES) == set(MODES)
    for mode in MODES:  # every entry names a class that exists
        module, _, name = STRATEGIES[mode].partition(":")
        assert isinstance(getattr(importlib.import_module(module), name), type), mode
