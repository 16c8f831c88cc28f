"""Network bounds come from NetworkConfig; addresses are parsed and classified strictly."""

from __future__ import annotations

import pytest

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import InputError
from smpc_synth.net import Limits, free_ports, is_loopback, split_address
from smpc_synth.net.limits import FRAME_OVERHEAD_BYTES


def test_limits_follow_the_run_config():
    network = NetworkConfig(
        heartbeat_interval_s=0.5, peer_timeout_s=7.0, connect_timeout_s=9.0, call_deadline_s=3.0
    )
    limits = Limits.from_network(network)
    assert (limits.heartbeat_interval_s, limits.peer_timeout_s) == (0.5, 7.0)
    assert (limits.connect_timeout_s, limits.call_deadline_s) == (9.0, 3.0)
    options = dict(limits.grpc_options())
    assert options["grpc.max_send_message_length"] == network.max_message_bytes
    assert options["grpc.max_receive_message_length"] == network.max_message_bytes


def test_frames_fit_a_small_message_limit():
    limits = Limits.from_network(NetworkConfig(max_message_bytes=256 * 1024))
    assert limits.chunk_bytes + FRAME_OVERHEAD_BYTES <= 256 * 1024


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.org", False),
        ("::", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_addresses_parsed_or_refused_naming_the_owner():
    assert split_address("127.0.0.1:5000", "bob") == ("127.0.0.1", 5000)
    assert split_address("[::1]:80", "bob") == ("::1", 80)
    for bad in ("127.0.0.1", "host:port", ":5000", "h:70000"):
        with pytest.raises(InputError, match="address of bob"):
            split_address(bad, "bob")


def test_free_ports_are_distinct():
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(port > 0 for port in ports)
