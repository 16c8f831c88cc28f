"""PeerMesh over real gRPC servers on loopback: delivery, TLS refusals, handshake, liveness."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
import pytest
import torch

from smpc_synth.config import NetworkConfig
from smpc_synth.errors import InputError, PeerError
from smpc_synth.net import PeerMesh, TlsFiles, free_ports, write_certificates

torch.set_num_threads(1)

FAST = NetworkConfig(
    heartbeat_interval_s=0.2, peer_timeout_s=10.0, connect_timeout_s=10.0, call_deadline_s=5.0
)
# For the liveness tests: a stalled peer is declared dead after 3 s.
WATCHFUL = NetworkConfig(**(asdict(FAST) | {"peer_timeout_s": 3.0, "connect_timeout_s": 60.0}))
TRIO = ["alice", "bob", "carol"]


def _addresses(names):
    return {name: f"127.0.0.1:{port}" for name, port in zip(names, free_ports(len(names)))}


def _meshes(names, tls, network=FAST, addresses=None):
    """Started (not connected) meshes for ``names``; ``tls`` maps name -> TlsFiles or None."""
    addresses = addresses or _addresses(names)
    meshes = {}
    for name in names:
        peers = {p: a for p, a in addresses.items() if p != name}
        meshes[name] = PeerMesh(name, addresses[name], peers, tls and tls[name], network)
        meshes[name].start()
    return meshes


def _on_all(meshes, method, *args):
    """Call ``method`` on every mesh at once; return name -> result or raised exception."""

    def call(mesh):
        try:
            return getattr(mesh, method)(*args)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(meshes)) as pool:
        results = pool.map(call, meshes.values())
        return dict(zip(meshes, results))


@pytest.fixture
def certs(tmp_path):
    return write_certificates([*TRIO, "mallory"], tmp_path / "certs")


@pytest.fixture
def trio(certs):
    meshes = _meshes(TRIO, certs)
    results = _on_all(meshes, "connect")
    assert all(r is None for r in results.values()), results
    yield meshes
    _on_all(meshes, "close")


def test_payloads_round_trip_between_three_members_over_tls(trio):
    alice, bob, carol = (trio[n] for n in TRIO)
    payloads = [
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.random.default_rng(1).standard_normal(100).astype(np.float32),
        np.array([True, False, True]),
        torch.randn(4, 5, dtype=torch.float64),
        torch.arange(7, dtype=torch.int64),
        b"ciphertext \x00\xff bytes",
    ]
    for sender, receiver in [(alice, bob), (bob, carol), (carol, alice)]:
        for i, payload in enumerate(payloads):
            sender.send(receiver.me, f"p{i}", payload)
        for i, payload in reversed(list(enumerate(payloads))):  # any tag order
            got = receiver.recv(sender.me, f"p{i}")
            assert type(got) is type(payload)
            if isinstance(payload, bytes):
                assert got == payload
            else:
                assert got.dtype == payload.dtype and got.shape == payload.shape
                assert (got == payload).all()


def test_order_kept_per_sender_and_tag(trio):
    alice, bob = trio["alice"], trio["bob"]
    for i in range(50):
        alice.send("bob", "even" if i % 2 == 0 else "odd", np.array([i]))
    evens = [int(bob.recv("alice", "even")[0]) for _ in range(25)]
    odds = [int(bob.recv("alice", "odd")[0]) for _ in range(25)]
    assert evens == list(range(0, 50, 2))
    assert odds == list(range(1, 50, 2))


def test_has_message_tells_whether_recv_would_return_at_once(trio):
    """The dealer checks for a waiting request before it works ahead (mpc/dealer/server.py)."""
    alice, bob = trio["alice"], trio["bob"]
    assert not bob.has_message("alice", "poll")
    alice.send("bob", "poll", np.array([7]))
    deadline = time.monotonic() + 10
    while not bob.has_message("alice", "poll") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bob.has_message("alice", "poll")
    assert not bob.has_message("alice", "other tag") and not bob.has_message("carol", "poll")
    assert int(bob.recv("alice", "poll")[0]) == 7
    assert not bob.has_message("alice", "poll")


def test_64_mb_tensor_streams(trio):
    big = torch.randn(16 * 1024 * 1024)  # 64 MiB of float32, in many frames
    trio["alice"].send("carol", "big", big)
    got = trio["carol"].recv("alice", "big", timeout=60)
    assert torch.equal(got, big)
    assert trio["alice"].stats().bytes_sent == big.numel() * 4
    assert trio["carol"].stats().bytes_received == big.numel() * 4


def test_rounds_and_phases_counted(trio):
    alice, bob = trio["alice"], trio["bob"]
    with alice.phase("forward"):
        alice.send("bob", "a", b"1")
        alice.send("carol", "a", b"2")  # same round: no receive in between
        bob.send("alice", "b", b"3")
        alice.recv("bob", "b")
    with alice.phase("backward"):
        alice.send("bob", "c", b"45")
    stats = alice.stats()
    assert stats.rounds == 2 and stats.messages_sent == 3
    assert stats.bytes_sent == 4 and stats.bytes_received == 1
    assert stats.by_phase["forward"]["rounds"] == 1
    assert stats.by_phase["backward"]["bytes_sent"] == 2
    remote = bob.peer_status("alice")
    assert remote["member"] == "alice" and remote["rounds"] == 2 and remote["bytes_sent"] == 4


def test_recv_deadline_aborts_naming_the_silent_peer(trio):
    with pytest.raises(PeerError, match=r"bob sent no 'late' message within 0\.5 s") as info:
        trio["alice"].recv("bob", "late", timeout=0.5)
    assert info.value.peer == "bob"
    with pytest.raises(PeerError, match="alice aborted the session") as info:
        trio["bob"].recv("alice", "anything", timeout=None)
    assert info.value.peer == "bob"  # alice blamed bob; bob is told so


def test_ctrl_c_aborts_the_session_for_every_peer(trio):
    with pytest.raises(KeyboardInterrupt), trio["alice"]:
        raise KeyboardInterrupt
    for name in ("bob", "carol"):
        with pytest.raises(PeerError, match=r"alice was interrupted \(Ctrl-C\)") as info:
            trio[name].recv("alice", "never", timeout=30)
        assert info.value.peer == "alice"


def test_leaving_on_a_peer_error_passes_on_whom_it_names(trio):
    """A member that stops on a PeerError (say, a peer left mid-protocol) tells the others
    whom that error names: a peer that has not noticed the departure itself must not blame
    the messenger (a 3-party kill test caught the dealer naming bob for alice's death)."""
    with pytest.raises(PeerError), trio["bob"]:
        raise PeerError("alice left the session without sending 'mpc'", "alice")
    with pytest.raises(PeerError, match="bob aborted the session") as info:
        trio["carol"].recv("bob", "never", timeout=30)
    assert info.value.peer == "alice"


def test_abort_reaches_every_peer(trio):
    trio["alice"].abort("the operator stopped it")
    for name in ("bob", "carol"):
        with pytest.raises(PeerError, match="alice aborted the session") as info:
            trio[name].recv("alice", "never", timeout=30)
        assert info.value.peer == "alice"
    with pytest.raises(PeerError):
        trio["alice"].send("bob", "x", b"")


def test_handshake_mismatch_named_on_every_member(trio):
    same = {"config": "c" * 64, "schema": "s" * 64, "version": "0.1.0"}
    fingerprints = {"alice": same, "bob": same, "carol": {**same, "schema": "t" * 64}}

    def handshake(name):
        try:
            trio[name].handshake("session-1", fingerprints[name])
        except PeerError as exc:
            return exc

    with ThreadPoolExecutor(3) as pool:
        errors = dict(zip(TRIO, pool.map(handshake, TRIO)))
    for name, error in errors.items():
        assert isinstance(error, PeerError), name
        assert "schema" in str(error) and "config" not in str(error)
    assert errors["alice"].peer == "carol" and "carol" in str(errors["alice"])
    assert errors["bob"].peer == "carol" and "alice" not in str(errors["bob"])
    assert "alice" in str(errors["carol"]) and "bob" in str(errors["carol"])


def test_handshake_agrees_then_barrier_waits_for_all(trio):
    results = _on_all(trio, "handshake", "session-1", {"config": "x"})
    assert all(r is None for r in results.values()), results
    assert all(r is None for r in _on_all(trio, "barrier", "train").values())
    late = _on_all({n: trio[n] for n in ("alice", "bob")}, "barrier", "sample", 1.0)
    assert all(isinstance(r, PeerError) and r.peer == "carol" for r in late.values()), late


def test_session_id_mismatch(certs):
    meshes = _meshes(["alice", "bob"], certs)
    try:
        _on_all(meshes, "connect")
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(meshes[n].handshake, f"id-{n}", {}) for n in meshes]
            errors = [call.exception() for call in calls]
        for error in errors:
            assert isinstance(error, PeerError) and "session id" in str(error)
    finally:
        _on_all(meshes, "close")


def test_peer_from_another_ca_refused(tmp_path):
    ours = write_certificates(["alice", "bob"], tmp_path / "ours")
    theirs = write_certificates(["alice", "bob"], tmp_path / "theirs")
    network = NetworkConfig(connect_timeout_s=20.0)  # refused at once, not after retries
    meshes = _meshes(["alice", "bob"], {"alice": ours["alice"], "bob": theirs["bob"]}, network)
    try:
        errors = _on_all(meshes, "connect")
    finally:
        _on_all(meshes, "close")
    assert isinstance(errors["alice"], PeerError) and errors["alice"].peer == "bob"
    assert isinstance(errors["bob"], PeerError) and errors["bob"].peer == "alice"
    assert all("certificate" in str(error) for error in errors.values())


def test_valid_certificate_under_the_wrong_name_refused(certs, caplog):
    # "bob" presents carol's certificate: same CA, wrong name.
    network = NetworkConfig(connect_timeout_s=20.0)
    meshes = _meshes(["alice", "bob"], {"alice": certs["alice"], "bob": certs["carol"]}, network)
    try:
        with caplog.at_level(logging.WARNING, logger="smpc_synth.net"):
            errors = _on_all(meshes, "connect")
    finally:
        _on_all(meshes, "close")
    assert isinstance(errors["alice"], PeerError) and errors["alice"].peer == "bob"
    assert isinstance(errors["bob"], PeerError) and errors["bob"].peer == "alice"
    assert "carol" in str(errors["bob"])  # alice says whose certificate it saw
    assert "names 'bob'" in str(errors["alice"])
    assert any("carol" in r.getMessage() and "bob" in r.getMessage() for r in caplog.records)


def test_unknown_member_refused(certs):
    addresses = _addresses(["alice", "bob", "mallory"])
    alice = PeerMesh("alice", addresses["alice"], {"bob": addresses["bob"]}, certs["alice"], FAST)
    mallory = PeerMesh(
        "mallory", addresses["mallory"], {"alice": addresses["alice"]}, certs["mallory"], FAST
    )
    alice.start()
    mallory.start()
    try:
        with pytest.raises(PeerError, match="not a member") as info:
            mallory.connect()
        assert info.value.peer == "alice" and "mallory" in str(info.value)
    finally:
        alice.close()
        mallory.close()


def test_peer_not_yet_up_is_retried(certs):
    addresses = _addresses(["alice", "bob"])
    alice = _meshes(["alice"], certs, addresses=addresses)["alice"]
    bob = PeerMesh("bob", addresses["bob"], {"alice": addresses["alice"]}, certs["bob"], FAST)
    connecting = threading.Thread(target=alice.connect)
    connecting.start()
    started = threading.Timer(1.0, bob.start)
    started.start()
    started.join()
    bob.connect()
    connecting.join()
    try:
        alice.send("bob", "hi", b"late but here")
        assert bob.recv("alice", "hi") == b"late but here"
    finally:
        _on_all({"alice": alice, "bob": bob}, "close")


def test_unreachable_peer_named(certs):
    addresses = _addresses(["alice", "bob"])
    network = NetworkConfig(connect_timeout_s=1.0)
    alice = _meshes(["alice"], certs, network, addresses)["alice"]
    try:
        with pytest.raises(PeerError, match=r"could not reach bob within 1 s") as info:
            alice.connect()
        assert info.value.peer == "bob" and addresses["bob"] in str(info.value)
    finally:
        alice.close()


def test_plain_tcp_refused_off_loopback_without_flag(caplog):
    peers = {"bob": "192.0.2.10:7000"}
    with pytest.raises(InputError, match=r"bob \(192\.0\.2\.10:7000\)"):
        PeerMesh("alice", "127.0.0.1:0", peers, None, NetworkConfig())
    mesh = PeerMesh("alice", "127.0.0.1:0", peers, None, NetworkConfig(), allow_insecure=True)
    with caplog.at_level(logging.WARNING, logger="smpc_synth.net"):
        mesh.start()
    mesh.close()
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_plain_tcp_on_loopback_works():
    meshes = _meshes(["alice", "bob"], None)
    try:
        assert all(r is None for r in _on_all(meshes, "connect").values())
        meshes["bob"].send("alice", "t", torch.ones(3))
        assert torch.equal(meshes["alice"].recv("bob", "t"), torch.ones(3))
    finally:
        _on_all(meshes, "close")


def test_missing_certificate_file_is_input_error(certs, tmp_path):
    files = TlsFiles(certs["alice"].ca, tmp_path / "absent.pem", certs["alice"].key)
    with pytest.raises(InputError, match=r"absent\.pem"):
        PeerMesh("alice", "127.0.0.1:0", {"bob": "127.0.0.1:1"}, files, NetworkConfig())


# A member in its own process, so the test can SIGKILL or SIGSTOP it.
CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from smpc_synth.config import NetworkConfig
from smpc_synth.net import PeerMesh, TlsFiles
spec = json.loads(sys.argv[1])
mesh = PeerMesh(spec["me"], spec["listen"], spec["peers"], TlsFiles(**spec["tls"]),
                NetworkConfig(**spec["network"]))
mesh.start()
mesh.connect()
print("connected", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def _with_child(certs, network=WATCHFUL):
    """alice and bob in this process, carol in a subprocess; all connected. Yields the two
    meshes and carol's process."""
    addresses = _addresses(TRIO)
    spec = {
        "me": "carol",
        "listen": addresses["carol"],
        "peers": {p: addresses[p] for p in ("alice", "bob")},
        "tls": {k: str(v) for k, v in asdict(certs["carol"]).items()},
        "network": asdict(network),
    }
    command = [sys.executable, "-c", CHILD, json.dumps(spec)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        meshes = _meshes(["alice", "bob"], certs, network, addresses)
        try:
            results = _on_all(meshes, "connect")
            assert all(r is None for r in results.values()), results
            assert child.stdout.readline().strip() == "connected"
            yield meshes, child
        finally:
            child.kill()
            _on_all(meshes, "close")


@pytest.fixture
def trio_with_child(certs):
    with _with_child(certs) as (meshes, child):
        yield meshes, child


def _recv_errors_after(meshes, peer, signum, pid):
    """Send ``signum`` to ``pid``; each mesh's PeerError from a recv on ``peer`` with a
    deadline far beyond liveness checks (only they can end it in time)."""

    def wait(mesh):
        with pytest.raises(PeerError) as info:
            mesh.recv(peer, "never", timeout=600)
        return info.value

    with ThreadPoolExecutor(len(meshes)) as pool:
        waiting = [pool.submit(wait, mesh) for mesh in meshes.values()]
        os.kill(pid, signum)
        return [future.result() for future in waiting]


@pytest.mark.timeout(60)
def test_killed_peer_named_by_every_member(trio_with_child):
    meshes, child = trio_with_child
    for error in _recv_errors_after(meshes, "carol", signal.SIGKILL, child.pid):
        assert error.peer == "carol" and "carol" in str(error)


@pytest.mark.timeout(60)
def test_stalled_peer_detected_by_heartbeats(trio_with_child):
    meshes, child = trio_with_child
    for error in _recv_errors_after(meshes, "carol", signal.SIGSTOP, child.pid):
        assert error.peer == "carol" and "silent" in str(error)


# peer_timeout_s is the promise: every member has stopped within it. Heartbeats must declare
# a silent peer dead early enough to leave time for stopping; calls to it must not outlast it.
PROMISE = NetworkConfig(
    heartbeat_interval_s=0.5, peer_timeout_s=10.0, connect_timeout_s=60.0, call_deadline_s=30.0
)


@pytest.mark.timeout(90)
def test_a_stopped_peer_is_named_within_peer_timeout(certs):
    with _with_child(certs, PROMISE) as (meshes, child):
        started = time.monotonic()
        errors = _recv_errors_after(meshes, "carol", signal.SIGSTOP, child.pid)
        elapsed = time.monotonic() - started
    assert all(error.peer == "carol" for error in errors), errors
    assert elapsed < PROMISE.peer_timeout_s, f"named after {elapsed:.1f} s"


@pytest.mark.timeout(90)
def test_a_handshake_with_a_stopped_peer_ends_with_the_abort(certs):
    """The handshake's calls to a stopped peer last call_deadline_s (30 s) unless the abort
    ends them: the heartbeats' verdict must stop every member within peer_timeout_s."""
    with _with_child(certs, PROMISE) as (meshes, child):
        os.kill(child.pid, signal.SIGSTOP)
        started = time.monotonic()
        errors = _on_all(meshes, "handshake", "session-1", {"config": "x"})
        elapsed = time.monotonic() - started
    assert all(isinstance(e, PeerError) and e.peer == "carol" for e in errors.values()), errors
    assert elapsed < PROMISE.peer_timeout_s, f"stopped after {elapsed:.1f} s"


def test_a_broken_stream_waits_for_the_abort_that_explains_it(trio):
    """alice stops because carol failed; her Abort reaches bob only after her stream to bob
    has broken (a loaded machine): bob must still name carol, not the messenger."""
    alice, bob = trio["alice"], trio["bob"]
    tell = alice._tell_peers_abort

    def slow_tell(reason, culprit):
        time.sleep(1.0)
        tell(reason, culprit)

    alice._tell_peers_abort = slow_tell
    alice.abort("carol sent garbage", culprit="carol")
    for call in alice._streams.values():
        call.cancel()  # her streams end before her Abort is out
    with pytest.raises(PeerError) as info:
        bob.recv("alice", "never", timeout=30)
    assert info.value.peer == "carol", info.value


def test_a_handshake_refused_by_an_aborted_peer_names_whom_it_blames(trio):
    """alice has aborted because of carol before the handshake; her Abort reaches bob a
    moment after her refusal to hand shake: bob must name carol, not alice."""
    alice = trio["alice"]
    tell = alice._tell_peers_abort

    def slow_tell(reason, culprit):
        time.sleep(1.0)
        tell(reason, culprit)

    alice._tell_peers_abort = slow_tell
    alice.abort("carol's process died", culprit="carol")
    others = {name: trio[name] for name in ("bob", "carol")}
    errors = _on_all(others, "handshake", "session-1", {"config": "x"})
    assert isinstance(errors["bob"], PeerError) and errors["bob"].peer == "carol", errors


def test_a_recv_deadline_blames_the_end_of_a_chain_of_waits(trio):
    """alice waits for bob, who waits for carol, who is alive but never sends: bob is not at
    fault, and alice's deadline, which runs out first, must not name him."""
    alice, bob = trio["alice"], trio["bob"]
    with ThreadPoolExecutor(2) as pool:
        at_alice = pool.submit(alice.recv, "bob", "result", 1.0)
        time.sleep(0.3)
        at_bob = pool.submit(bob.recv, "carol", "input", 1.5)
        for future in (at_alice, at_bob):
            with pytest.raises(PeerError) as info:
                future.result()
            assert info.value.peer == "carol", info.value


def test_a_recv_deadline_waits_for_the_verdict_of_a_peer_that_aborted(trio):
    """alice's wait for bob runs out just as bob, having aborted because of carol, is about
    to tell her so: alice must name carol, not bob (a fault-matrix run caught a party
    naming the aggregator that was itself reporting the stuck party)."""
    alice, bob = trio["alice"], trio["bob"]
    tell = bob._tell_peers_abort

    def slow_tell(reason, culprit):
        time.sleep(1.0)
        tell(reason, culprit)

    bob._tell_peers_abort = slow_tell
    bob.abort("carol sent no 'update' message within 60 s", culprit="carol")
    with pytest.raises(PeerError) as info:
        alice.recv("bob", "result", timeout=0.5)
    assert info.value.peer == "carol", info.value


@pytest.mark.timeout(60)
def test_recv_without_a_timeout_is_bounded_by_the_progress_deadline(certs):
    """Heartbeats prove a process alive, not that it makes progress: a peer whose protocol
    thread is stuck while its gRPC threads answer must still be named, after
    progress_timeout_s."""
    network = NetworkConfig(**(asdict(FAST) | {"peer_timeout_s": 4.0, "progress_timeout_s": 4.0}))
    meshes = _meshes(["alice", "bob"], certs, network)
    try:
        assert all(r is None for r in _on_all(meshes, "connect").values())
        with pytest.raises(PeerError, match=r"bob sent no 'update' message within 4 s") as info:
            meshes["alice"].recv("bob", "update")
        assert info.value.peer == "bob"
    finally:
        _on_all(meshes, "close")


@pytest.mark.timeout(90)
def test_a_peer_that_called_and_died_before_it_was_reached_is_named(certs):
    """At start-up bob reaches alice (his heartbeats arrive) and dies before alice reaches
    him. A peer never heard from may just be slow to start (connect_timeout_s bounds that),
    but one that was heard and fell silent is dead: alice must stop within peer_timeout_s."""
    import grpc

    from smpc_synth.net.tls import MEMBER_METADATA_KEY, channel_credentials, channel_options
    from smpc_synth.net.v1 import control_pb2, control_pb2_grpc

    addresses = _addresses(["alice", "bob"])
    alice = _meshes(["alice"], certs, PROMISE, addresses)["alice"]
    bob_side = grpc.secure_channel(
        addresses["alice"], channel_credentials(certs["bob"]), options=channel_options("alice")
    )
    try:
        connecting = ThreadPoolExecutor(1).submit(alice.connect)
        beat = control_pb2_grpc.ControlStub(bob_side).Heartbeat
        beat(control_pb2.Beat(state="connecting"), metadata=((MEMBER_METADATA_KEY, "bob"),))
        bob_side.close()  # and bob is gone
        started = time.monotonic()
        with pytest.raises(PeerError, match="bob silent") as info:
            connecting.result()
        elapsed = time.monotonic() - started
    finally:
        alice.close()
    assert info.value.peer == "bob"
    assert elapsed < PROMISE.peer_timeout_s, f"named after {elapsed:.1f} s"
