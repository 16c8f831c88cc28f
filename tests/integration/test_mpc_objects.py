"""CrypTen's object calls over both transports, with real processes: unsigned 64-bit seeds
arrive intact, a refused object fails on the sender and leaves the stream in step, and a
hostile gloo peer's size or pickle is refused naming it, before any allocation."""

from __future__ import annotations

import pickle

import pytest
import torch
from mpc_harness import PARTY_NAMES, assert_all_ok, run_mpc

from smpc_synth.crypten_backend.transport import check_gloo
from smpc_synth.errors import InputError
from smpc_synth.mpc.session import start_crypten
from smpc_synth.net import objects

HUGE = 1 << 40  # bytes a hostile peer announces


def objects_program(rank: int, hostile: bool) -> dict:
    """Party 1 sends; party 0 receives and reports what happened at each step."""
    import torch.distributed as dist

    from smpc_synth.crypten_backend.compat import import_crypten
    from smpc_synth.errors import PeerError
    from smpc_synth.net import objects

    comm = import_crypten().communicator.get()
    out: dict = {}

    def outcome(call):
        try:
            return {"value": call()}
        except (PeerError, objects.CodecError) as exc:
            return {
                "error": type(exc).__name__,
                "text": str(exc),
                "peer": getattr(exc, "peer", None),
            }

    if rank == 1:
        seeds = []
        for _ in range(64):  # about half are 2^63 or more
            generator = torch.Generator()
            generator.seed()
            seeds.append(generator.initial_seed())
        seeds.append(2**64 - 1)
        comm.send_obj(seeds, 0)
        out["seeds"] = seeds
        out["refused"] = outcome(lambda: comm.send_obj(2**64 + 5, 0))
        comm.send_obj("after the refusal", 0)
        out["broadcast_refused"] = outcome(lambda: comm.broadcast_obj({1, 2}, 1))
        comm.broadcast_obj("broadcast in step", 1)
        if hostile:
            blob = torch.frombuffer(bytearray(pickle.dumps({"a": 1})), dtype=torch.uint8)
            dist.send(torch.tensor(blob.numel()), 0, group=comm.main_group)
            dist.send(blob, 0, group=comm.main_group)
            dist.send(torch.tensor(HUGE), 0, group=comm.main_group)
    elif rank == 0:
        out["listening"] = listening_addresses()
        out["seeds"] = comm.recv_obj(1)
        out["refused"] = outcome(lambda: comm.recv_obj(1))
        out["after"] = comm.recv_obj(1)
        out["broadcast_refused"] = outcome(lambda: comm.broadcast_obj(None, 1))
        out["broadcast_after"] = comm.broadcast_obj(None, 1)
        if hostile:
            out["pickle"] = outcome(lambda: comm.recv_obj(1))
            out["huge"] = outcome(lambda: comm.recv_obj(1))
    return out


def listening_addresses() -> list[str] | None:
    """Local addresses of this process's listening TCP sockets (None without Linux /proc)."""
    import os
    from pathlib import Path

    if not Path("/proc/net/tcp").exists():
        return None
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.append(fields[1].split(":")[0])
    return found


# 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


@pytest.mark.parametrize("transport", ["grpc", "gloo"])
def test_seeds_refusals_and_hostile_objects(tmp_path, transport):
    hostile = transport == "gloo"  # over grpc, hostile frames: tests/unit/net/test_net_hostile.py
    outcomes = run_mpc(
        tmp_path, 2, objects_program, transport=transport, provider="tfp", hostile=hostile
    )
    assert_all_ok(outcomes)
    alice, bob = (outcomes[name].result["result"] for name in PARTY_NAMES[:2])
    assert alice["seeds"] == bob["seeds"]
    assert any(seed >= 2**63 for seed in bob["seeds"])
    # the sender fails; the receiver names it; the next object is the next one sent
    assert bob["refused"]["error"] == "CodecError" and "64 bits" in bob["refused"]["text"]
    assert alice["refused"]["error"] == "PeerError" and alice["refused"]["peer"] == "bob"
    assert "bob could not send the object" in alice["refused"]["text"]
    assert alice["after"] == "after the refusal"
    assert bob["broadcast_refused"]["error"] == "CodecError"
    assert alice["broadcast_refused"]["peer"] == "bob"
    assert alice["broadcast_after"] == "broadcast in step"
    if alice["listening"] is not None:  # gloo's store and pairs, and the mesh: loopback only
        assert alice["listening"] and set(alice["listening"]) <= LOOPBACK_HEX, alice["listening"]
    if hostile:
        assert alice["pickle"]["peer"] == "bob" and "malformed object" in alice["pickle"]["text"]
        assert alice["huge"]["peer"] == "bob" and f"announced {HUGE} bytes" in alice["huge"]["text"]


def test_gloo_off_loopback_refused_before_any_traffic_unless_allowed():
    with pytest.raises(InputError, match=r"mpc\.rendezvous.*network\.allow_insecure"):
        start_crypten(
            None,
            ("alice", "bob"),
            0,
            provider="tfp",
            transport="gloo",
            insecure_dev=True,
            rendezvous="tcp://192.0.2.7:29500",
        )
    assert check_gloo("tcp://192.0.2.7:29500", allow_insecure=True) is True
    assert check_gloo("tcp://127.0.0.1:29500", allow_insecure=False) is False
    for bad in ("192.0.2.7:29500", "file:///tmp/x", "tcp://127.0.0.1"):
        with pytest.raises(InputError, match=r"mpc\.rendezvous"):
            check_gloo(bad, allow_insecure=True)


def test_unsigned_64_bit_integers_round_trip_and_one_encoding_each():
    for value in (2**63, 2**64 - 1, torch.Generator().manual_seed(2**64 - 1).initial_seed()):
        assert objects.decode(objects.encode(value)) == value
    for value in (2**64, -(2**63) - 1):
        with pytest.raises(objects.CodecError, match="64 bits"):
            objects.encode(value)
    with pytest.raises(objects.CodecError, match="should have been signed"):
        objects.decode(b"u" + (5).to_bytes(8, "little"))


def test_party_with_gloo_off_loopback_exits_2_naming_the_key(cli, tmp_path):
    config = tmp_path / "alice.toml"
    config.write_text(
        """
[party]
name = "alice"
listen = "127.0.0.1:7001"
data = "alice.csv"
schema = "schema.toml"

[[peers]]
name = "bob"
address = "127.0.0.1:7002"

[[peers]]
name = "dealer"
address = "127.0.0.1:7003"
role = "dealer"

[run]
mode = "mpc"

[run.mpc]
transport = "gloo"
rendezvous = "tcp://192.0.2.7:29500"
"""
    )
    result = cli("party", "--config", config, timeout=120)
    assert result.code == 2, result.output
    assert "mpc.rendezvous" in result.stderr and "network.allow_insecure" in result.stderr
    assert "Traceback" not in result.output
