"""Network profiles and the delay line's schedule: validation, refusal, FIFO under jitter.

No namespaces here (see test_network_emulation.py for the links themselves).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smpc_synth.errors import InputError
from smpc_synth.runtime import network
from smpc_synth.runtime.delay_line import MAX_HELD_BYTES, DelayLine
from smpc_synth.runtime.network import PROFILES, load_profile, load_profiles


def test_builtin_profiles_are_the_documented_links():
    assert not PROFILES["loopback"].emulated
    assert (PROFILES["lan"].rtt_ms, PROFILES["lan"].bandwidth_mbit) == (0.5, 1000.0)
    assert (PROFILES["wan"].rtt_ms, PROFILES["wan"].bandwidth_mbit) == (50.0, 100.0)
    assert load_profile(None) is PROFILES["loopback"]


def test_a_profile_file_is_read_at_the_top_or_under_network(tmp_path):
    top = tmp_path / "sat.toml"
    top.write_text("rtt_ms = 600\nbandwidth_mbit = 20\njitter_ms = 30\n")
    profile = load_profile(str(top))
    assert (profile.name, profile.rtt_ms, profile.bandwidth_mbit, profile.jitter_ms) == (
        "sat",
        600.0,
        20.0,
        30.0,
    )
    nested = tmp_path / "dsl.toml"
    nested.write_text('[network]\nname = "dsl"\nrtt_ms = 30\n')
    assert load_profile(nested).bandwidth_mbit is None  # unshaped rate
    assert [p.name for p in load_profiles(f"lan,{top},lan")] == ["lan", "sat"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("rtt_ms = -1\n", "rtt_ms"),
        ("rtt_ms = 10\nbandwidth_mbit = 0\n", "bandwidth_mbit"),
        ('rtt_ms = "10"\n', "rtt_ms"),
        ("rtt_ms = 10\njitter_ms = 6\n", "jitter_ms"),  # more than half the RTT
        ("rtt = 10\n", "rtt"),
        ('name = "wan"\nrtt_ms = 1\n', "name"),  # a built-in's name
    ],
)
def test_a_bad_profile_file_is_refused_naming_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_profile(path)
    assert str(path) in str(caught.value) and f"'{key}'" in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_unknown_profile_name_lists_the_builtins(tmp_path):
    with pytest.raises(InputError, match="loopback, lan, wan"):
        load_profile("satellite")
    with pytest.raises(InputError, match="file not found"):
        load_profile(tmp_path / "absent.toml")


def test_a_shaped_network_is_refused_with_exit_2_where_it_cannot_be_built(monkeypatch, tmp_path):
    from smpc_synth.cli import main

    monkeypatch.setattr(network.os, "geteuid", lambda: 1000)
    assert "root" in network.emulation_unavailable()
    with pytest.raises(InputError, match="--network wan: cannot emulate"):
        network.require_emulation(PROFILES["wan"])
    network.require_emulation(PROFILES["loopback"])  # loopback needs nothing
    code = main(["simulate", "--network", "lan", "--parties", "2", "--quiet"])
    assert code == 2
    out = tmp_path / "net"
    assert main(["bench", "network", "--out", str(out)]) == 2  # measuring needs links too
    assert not (out / "network.json").exists()
    monkeypatch.setattr(network.os, "geteuid", lambda: 0)
    monkeypatch.setattr(network.shutil, "which", lambda tool: None if tool == "tc" else "/bin/x")
    assert "iproute2 (tc not found)" in network.emulation_unavailable()
    assert main(["simulate", "--network", "wan", "--parties", "2", "--quiet"]) == 2
    monkeypatch.setattr(network.shutil, "which", lambda tool: "/bin/x")
    real_exists = network.os.path.exists
    monkeypatch.setattr(network.os.path, "exists", lambda p: p != "/dev/net/tun" and real_exists(p))
    assert "/dev/net/tun" in network.emulation_unavailable()
    assert main(["bench", "mpc-ops", "--network", "wan", "--out", str(tmp_path / "ops")]) == 2


def test_bench_refuses_network_for_suites_that_send_nothing(tmp_path):
    from smpc_synth_bench import networked_suites, run_suite

    with pytest.raises(InputError, match="--network: bench he-agg"):
        run_suite("he-agg", tmp_path, network="wan")
    assert {"quick", "paper", "scale", "mpc-ops", "network"} <= set(networked_suites())
    assert not list(tmp_path.iterdir())  # refused before writing anything


def _packet(src: int, dst: int, seq: int) -> bytes:
    """An IPv4 header's addresses and a payload that names the packet."""
    header = bytes([0x45]) + bytes(11) + struct.pack("!II", src, dst)
    return header + struct.pack("!I", seq)


@settings(max_examples=60, deadline=None)
@given(
    one_way=st.floats(0.0, 0.05),
    jitter=st.floats(0.0, 0.02),
    seed=st.integers(0, 2**16),
    arrivals=st.lists(
        st.tuples(st.integers(0, 2), st.floats(0.0, 0.001)), min_size=1, max_size=200
    ),
)
def test_jitter_delays_but_never_reorders_a_direction(one_way, jitter, seed, arrivals):
    line = DelayLine()
    line.configure(one_way, min(jitter, one_way), seed)
    now, sent, left = 0.0, {}, []
    flows = [(1, 2), (2, 1), (1, 3)]
    for i, (flow, gap) in enumerate(arrivals):
        now += gap
        line.hold(_packet(*flows[flow], i), now)
        sent[i] = (flow, now)
        left += [(now, p) for p in line.due(now)]
    while (wait := line.wait(now)) is not None:
        now += wait
        left += [(now, p) for p in line.due(now)]
    order = [struct.unpack("!I", p[20:24])[0] for _, p in left]
    assert sorted(order) == list(range(len(arrivals)))  # nothing lost, nothing doubled
    for flow in range(3):
        mine = [i for i in order if sent[i][0] == flow]
        assert mine == sorted(mine)  # each direction in the order it was sent
    for when, p in left:
        i = struct.unpack("!I", p[20:24])[0]
        # held for at least the delay less the jitter, never less than nothing
        assert when - sent[i][1] >= max(0.0, one_way - min(jitter, one_way)) - 1e-9


def test_without_jitter_every_packet_is_held_exactly_the_delay():
    line = DelayLine()
    line.configure(0.025, 0.0, 0)
    for i in range(5):
        line.hold(_packet(1, 2, i), i * 0.001)
    assert line.due(0.0249) == []
    assert len(line.due(0.025)) == 1
    assert len(line.due(0.029)) == 4


def test_the_line_drops_rather_than_hold_more_than_its_bound():
    line = DelayLine()
    line.configure(1.0, 0.0, 0)
    big = _packet(1, 2, 0) + bytes(65_000)
    for _ in range(MAX_HELD_BYTES // len(big) + 10):
        line.hold(big, 0.0)
    assert line.held <= MAX_HELD_BYTES and line.drops >= 10
