"""Message framing and traffic counting of one member (an in-memory channel, one process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from memory_channel import MemoryChannel

from smpc_synth.crypten_backend.link import TAG, Link
from smpc_synth.errors import PeerError
from smpc_synth.net.traffic import TrafficRecorder

MEMBERS = ("alice", "bob", "carol", "dealer")


@pytest.fixture
def links() -> dict[str, Link]:
    channels = MemoryChannel.connect(MEMBERS)
    return {m: Link(channels[m], TrafficRecorder()) for m in MEMBERS}


def test_tensors_and_objects_arrive_in_order_and_are_counted(links):
    alice, bob = links["alice"], links["bob"]
    share = torch.arange(6, dtype=torch.long).reshape(2, 3)
    alice.send_tensor("bob", share.clone())  # this channel passes references
    alice.send_obj("bob", {"size": torch.Size([2, 3])})
    received = bob.recv_tensor("alice", torch.Size([2, 3]), torch.long)
    received += 1  # shares are updated in place
    assert torch.equal(received, share + 1)
    assert bob.recv_obj("alice") == {"size": torch.Size([2, 3])}
    sent, got = alice.recorder.snapshot(), bob.recorder.snapshot()
    assert sent.bytes_sent == got.bytes_received > 6 * 8
    assert sent.messages_sent == 2 and got.rounds == 1 and sent.rounds == 0


def test_rounds_count_waits_that_follow_a_send(links):
    alice, bob = links["alice"], links["bob"]
    for _ in range(3):  # three exchanges: each side sends, then waits
        alice.send_tensor("bob", torch.zeros(4, dtype=torch.long))
        bob.send_tensor("alice", torch.zeros(4, dtype=torch.long))
        alice.recv_tensor("bob")
        bob.recv_tensor("alice")
    bob.send_tensor("alice", torch.zeros(1, dtype=torch.long))
    bob.send_tensor("alice", torch.zeros(1, dtype=torch.long))
    alice.recv_tensor("bob")
    alice.recv_tensor("bob")  # still the same wait: no new round
    assert alice.recorder.snapshot().rounds == 3
    assert bob.recorder.snapshot().rounds == 3


def test_phases_and_dealer_bytes_are_kept_apart(links):
    alice, dealer = links["alice"], links["dealer"]
    with alice.recorder.phase("forward"):
        dealer.send_tensor("alice", torch.zeros(8, dtype=torch.long))
        alice.recv_tensor("dealer")
    by_phase = alice.recorder.snapshot().by_phase
    assert by_phase["forward"]["dealer_bytes_received"] == 64
    assert by_phase["forward"]["bytes_received"] == 0


def test_a_failure_is_reported_to_everyone_naming_the_culprit(links):
    with pytest.raises(PeerError) as first:
        links["alice"].recv_tensor("bob")  # bob is silent: alice blames bob
    assert first.value.peer == "bob"
    for member in ("carol", "dealer"):
        with pytest.raises(PeerError) as told:
            links[member].recv_obj("alice")
        assert told.value.peer == "bob", member


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        (b"O" + b"\x80\x04pickle", "obj"),  # not our codec
        (np.zeros(3, dtype=np.int64), "obj"),  # a tensor where an object was due
        (b"Osnot-a-tensor", "tensor"),
        (np.zeros(5, dtype=np.int64), "tensor"),  # wrong size
        (np.zeros(4, dtype=np.int32), "tensor"),  # wrong dtype
    ],
)
def test_malformed_messages_blame_their_sender(links, payload, expect):
    links["bob"].channel.send("alice", TAG, payload)
    with pytest.raises(PeerError) as err:
        if expect == "obj":
            links["alice"].recv_obj("bob")
        else:
            links["alice"].recv_tensor("bob", torch.Size([4]), torch.long)
    assert err.value.peer == "bob"
