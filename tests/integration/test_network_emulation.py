"""Emulated links (namespaces, delay line, tbf): accurate to their profile, carrying both
transports, and gone afterwards. Needs root, iproute2 and /dev/net/tun; skipped otherwise.

The accuracy check tests our tool, not the product's speed: the delay must be the profile's
RTT (its minimum within 1.5 ms; the median, which a busy machine's scheduling inflates,
within 25% + 3 ms) and the bulk rate between half and 105% of the profile's bandwidth (a
shared 2-core machine may not keep the sender and receiver busy enough to fill a link, but
the shaper must never let more through).
"""

from __future__ import annotations

import os

import pytest
import torch

from smpc_synth.config import NetworkConfig
from smpc_synth.net.netns import GLOO_PORT, NETNS_DIR
from smpc_synth.runtime.local import launch
from smpc_synth.runtime.network import (
    NetworkProfile,
    emulated,
    emulation_unavailable,
    remove_stale_namespaces,
)

pytestmark = pytest.mark.netns

if emulation_unavailable():
    pytest.skip(f"cannot emulate networks here: {emulation_unavailable()}", allow_module_level=True)

RTT_MS, BANDWIDTH_MBIT = 20.0, 50.0


def _ours(network) -> set[str]:
    mine = {host.netns for host in network.hosts.values()} | {network.router}
    return mine & set(os.listdir(NETNS_DIR))


def test_measured_rtt_and_throughput_match_the_profile():
    profile = NetworkProfile("test-link", rtt_ms=RTT_MS, bandwidth_mbit=BANDWIDTH_MBIT)
    network = emulated(profile, ["a", "b", "c"])
    with network:
        assert len(_ours(network)) == 4  # three members and the router
        m = network.measure("a", "c", pings=40, nbytes=int(BANDWIDTH_MBIT * 1e6 / 8 * 2))
        stats = network.delay_line_stats()
    assert RTT_MS - 0.2 <= m["rtt_ms_min"] <= RTT_MS + 1.5, m
    assert m["rtt_ms_median"] <= RTT_MS * 1.25 + 3.0, m
    assert 0.5 * BANDWIDTH_MBIT <= m["throughput_mbit"] <= 1.05 * BANDWIDTH_MBIT, m
    assert stats["packets"] > 100 and stats["drops"] == 0
    assert not _ours(network)  # every namespace removed


def test_jitter_spreads_round_trips_within_its_range():
    profile = NetworkProfile("jittery", rtt_ms=20.0, jitter_ms=5.0)
    with emulated(profile, ["a", "b"]) as network:
        m = network.measure("a", "b", pings=60)
    # each way varies by up to 5 ms either side of 10 ms: RTTs span [10, 30] ms
    assert 10.0 - 0.2 <= m["rtt_ms_min"] < 19.0, m
    assert m["rtt_ms_max"] - m["rtt_ms_min"] > 4.0, m


def test_a_failure_inside_still_removes_everything():
    network = emulated(NetworkProfile("short", rtt_ms=1.0), ["a", "b"])
    with pytest.raises(RuntimeError, match="inside"), network:
        assert _ours(network)
        delay = network._delay
        raise RuntimeError("a failure inside")
    assert not _ours(network)
    assert delay.poll() is not None  # the delay line ended with its network


def test_namespaces_left_by_a_killed_launcher_are_removed(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    name = f"smpcnet-{dead.pid}-0-r"
    subprocess.run(["ip", "netns", "add", name], check=True)
    assert name in remove_stale_namespaces()
    assert name not in os.listdir(NETNS_DIR)


PATIENT = NetworkConfig(heartbeat_interval_s=2.0, peer_timeout_s=120.0, call_deadline_s=60.0)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["grpc", "gloo"])
def test_crypten_runs_over_emulated_links_on_either_transport(tmp_path, transport):
    from mpc_harness import (
        DEALER,
        PARTY_NAMES,
        assert_all_ok,
        dealer_member,
        ops_program,
        party_member,
        plaintext_ops,
    )

    parties = PARTY_NAMES[:2]
    profile = NetworkProfile("test-lan", rtt_ms=2.0, bandwidth_mbit=200.0)
    with emulated(profile, [*parties, DEALER]) as network:
        hosts = network.hosts
        rendezvous = f"tcp://{hosts[parties[0]].ip}:{GLOO_PORT}" if transport == "gloo" else None
        party = {
            "parties": parties,
            "program": ops_program,
            "program_kwargs": {},
            "transport": transport,
            "provider": "dealer",
            "seed": None,
            "rendezvous": rendezvous,
            "allow_insecure": True,  # gloo between namespaces: plain TCP on this machine
        }
        members = {name: (party_member, party) for name in parties}
        members[DEALER] = (dealer_member, {"parties": parties, "seed": None})
        session = launch(members, tmp_path, tls=True, network=PATIENT, hosts=hosts)
        outcomes = session.wait(900)
        carried = network.delay_line_stats()["packets"]
    assert_all_ok(outcomes)
    from test_mpc_session import TOLERANCE

    expected = plaintext_ops()
    got = outcomes["alice"].result["result"]
    for name in ("mul", "matmul", "relu", "exp"):  # the tolerances of the loopback test
        atol, rtol = TOLERANCE[name]
        value = torch.tensor(got[name], dtype=expected[name].dtype)
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=rtol, msg=name)
    assert carried > 50  # the parties' traffic crossed the router, not loopback


@pytest.mark.slow
def test_bench_network_measures_the_builtin_lan_and_wan_within_tolerance(cli, tmp_path):
    """``bench network`` on the documented profiles: median RTT within 25% + 3 ms of the
    profile (minimum within 1.5 ms), throughput between half and 105% of its bandwidth."""
    import json

    result = cli("bench", "network", "--out", tmp_path, timeout=600)
    assert result.code == 0, result.output[-2000:]
    report = json.loads((tmp_path / "network.json").read_text())
    measured = {r["profile"]["name"]: (r["profile"], r["measured"]) for r in report["profiles"]}
    assert set(measured) == {"lan", "wan"}
    for profile, m in measured.values():
        rtt, rate = profile["rtt_ms"], profile["bandwidth_mbit"]
        assert rtt - 0.2 <= m["rtt_ms_min"] <= rtt + 1.5, (profile, m)
        assert m["rtt_ms_median"] <= rtt * 1.25 + 3.0, (profile, m)
        assert 0.5 * rate <= m["throughput_mbit"] <= 1.05 * rate, (profile, m)
    assert "lan" in result.output and "wan" in result.output  # the table is printed
