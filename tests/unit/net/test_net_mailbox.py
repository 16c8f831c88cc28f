"""The mesh's queues: order, limits, end of stream and failure, each seen by a waiting thread."""

from __future__ import annotations

import threading
import time

import pytest

from smpc_synth.errors import PeerError
from smpc_synth.net.codec import WireFrame
from smpc_synth.net.mailbox import Inbox, Outbox


def _in_thread(fn):
    """Run ``fn`` in a thread; returns (thread, outcome dict with 'value' or 'error')."""
    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_inbox_keeps_order_per_peer_and_tag():
    box = Inbox(limit=1 << 20)
    for i in range(3):
        box.put("alice", "a", i, 8)
        box.put("bob", "a", 10 + i, 8)
        box.put("alice", "b", 20 + i, 8)
    assert [box.get("alice", "a", 1)[0] for _ in range(3)] == [0, 1, 2]
    assert [box.get("alice", "b", 1)[0] for _ in range(3)] == [20, 21, 22]
    assert [box.get("bob", "a", 1)[0] for _ in range(3)] == [10, 11, 12]
    assert box.get("alice", "a", 0.05) is None  # nothing more: times out


def test_inbox_has_tells_whether_get_returns_at_once():
    box = Inbox(limit=1 << 20)
    assert not box.has("alice", "a")
    box.put("alice", "a", b"x", 1)
    assert box.has("alice", "a") and not box.has("alice", "b")
    box.get("alice", "a", 0)
    assert not box.has("alice", "a")


def test_a_failure_wakes_a_waiting_get_and_every_later_one():
    box = Inbox(limit=1 << 20)
    thread, outcome = _in_thread(lambda: box.get("alice", "a", None))
    time.sleep(0.1)
    assert thread.is_alive()
    error = PeerError("alice vanished", "alice")
    box.fail(error)
    thread.join(2)
    assert outcome["error"] is error
    box.put("bob", "late", b"x", 1)
    with pytest.raises(PeerError, match="alice vanished"):
        box.get("bob", "late", 1)  # queued, but the session is over
    with pytest.raises(PeerError, match="alice vanished"):
        box.get("carol", "never", 1)


def test_a_peer_that_ends_delivers_what_it_sent_then_is_named():
    box = Inbox(limit=1 << 20)
    box.put("alice", "a", 1, 8)
    waiting, outcome = _in_thread(lambda: [box.get("alice", "a", None) for _ in range(2)])
    time.sleep(0.1)
    box.end("alice")
    waiting.join(2)
    error = outcome["error"]
    assert isinstance(error, PeerError) and error.peer == "alice"
    assert "left the session without sending 'a'" in str(error)
    with pytest.raises(PeerError, match="without sending 'b'"):
        box.get("alice", "b", None)  # a tag never used before: raises at once
    box.put("bob", "a", 2, 8)
    assert box.get("bob", "a", 1)[0] == 2  # other peers carry on
    assert box.wait_ended({"alice", "bob"}, 0.05) == {"bob"}


def test_reserve_waits_for_room_and_one_message_may_exceed_the_limit():
    box = Inbox(limit=Inbox.cost("a", 100))
    box.reserve("alice", "a", 150)  # alone it fits, however large
    box.put("alice", "a", b"big", 150)
    thread, outcome = _in_thread(lambda: box.reserve("alice", "a", 10))
    time.sleep(0.1)
    assert thread.is_alive()  # stalls alice's stream until the big one is taken
    box.reserve("bob", "a", 60)  # other peers have their own room
    box.get("alice", "a", 1)
    thread.join(2)
    assert not thread.is_alive() and "error" not in outcome


def test_reserve_waiting_for_room_raises_when_the_session_fails():
    box = Inbox(limit=Inbox.cost("a", 100))
    box.reserve("alice", "a", 100)
    thread, outcome = _in_thread(lambda: box.reserve("alice", "a", 10))
    time.sleep(0.1)
    box.fail(PeerError("stop", "bob"))
    thread.join(2)
    assert isinstance(outcome["error"], PeerError)


def _frames(*sizes: int) -> list[WireFrame]:
    return [WireFrame(bytes([n % 256]) * n, n) for n in sizes]


def test_outbox_yields_frames_in_order_and_ends_after_close():
    box = Outbox("bob", limit=1 << 20)
    box.put(_frames(1, 2), 3, 1)
    box.put(_frames(3), 3, 1)
    box.close("done")
    assert [f.payload_bytes for f in box] == [1, 2, 3]
    with pytest.raises(PeerError, match="cannot send to bob: done"):
        box.put(_frames(1), 1, 1)


def test_outbox_over_its_limit_names_the_peer_that_does_not_take():
    box = Outbox("bob", limit=10)
    box.put(_frames(8), 8, 1)
    with pytest.raises(PeerError, match=r"bob has not taken 8 queued bytes in 0\.1 s"):
        box.put(_frames(5), 5, 0.1)
    frames = iter(box)
    next(frames)  # the stream takes the first message: room for the next
    box.put(_frames(5), 5, 0.1)
    assert next(frames).payload_bytes == 5


def test_a_failed_outbox_never_ends_cleanly_before_close():
    box = Outbox("bob", limit=1 << 20)
    box.put(_frames(4), 4, 1)
    box.fail(PeerError("stop", "carol"))
    thread, outcome = _in_thread(lambda: list(box))
    time.sleep(0.1)
    assert thread.is_alive()  # a clean end would tell bob we finished
    box.close("aborted")
    thread.join(2)
    assert outcome["value"] == []  # the frame queued before the failure is not sent
    with pytest.raises(PeerError, match="stop"):
        box.put(_frames(1), 1, 1)
