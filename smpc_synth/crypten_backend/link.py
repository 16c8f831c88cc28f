"""Framing of MPC messages over a :class:`~smpc_synth.net.channel.Channel`.

Four kinds of message travel on one tag, so that they stay in order per sender: tensors (as raw
numpy arrays), objects (``b"O"`` + :mod:`smpc_synth.net.objects`), refusals (``b"R"`` +
why: sent in place of an object the codec refused, so the receiver fails naming the sender instead
of taking the next message for the object) and abort notices (``b"A"`` + the name of the member at
fault). A member that sees a peer fail tells every other member before it raises, so each survivor
names the member that actually failed, not the neighbour that stopped talking to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from smpc_synth.errors import PeerError
from smpc_synth.net import objects
from smpc_synth.net.channel import Channel
from smpc_synth.net.traffic import TrafficRecorder, clock

TAG = "mpc"
DEALER = "dealer"
_OBJECT = b"O"
_REFUSED = b"R"
_ABORT = b"A"
_MAX_REASON = 300  # characters of a refusal's reason that travel

log = logging.getLogger(__name__)


class Link:
    """Sends and receives tensors and objects for one session member, recording traffic."""

    def __init__(
        self,
        channel: Channel,
        recorder: TrafficRecorder,
        timeout: float | None = None,
        dealer: str = DEALER,
    ) -> None:
        self.channel = channel
        self.recorder = recorder
        self.timeout = timeout
        self.dealer = dealer
        # runs after each message from a party: the dealer's deferred shares are settled
        # there (see DealerProvider), once the round they overlap has come back
        self.after_party_recv: Callable[[], None] | None = None
        self._aborted = False

    @property
    def me(self) -> str:
        return self.channel.me

    def send_tensor(self, peer: str, tensor: torch.Tensor) -> None:
        """Send without copying: the channel must serialise in ``send`` (PeerMesh does),
        since CrypTen may update the tensor in place right after."""
        array = tensor.detach().contiguous().numpy()
        self._send(peer, array, array.nbytes)

    def recv_tensor(
        self, peer: str, shape: torch.Size | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        payload = self._recv(peer)
        if isinstance(payload, torch.Tensor):
            tensor = payload
        elif isinstance(payload, np.ndarray):
            array = payload if payload.flags.writeable else payload.copy()
            tensor = torch.from_numpy(array)
        else:
            raise self.malformed(peer, f"expected a tensor, got {type(payload).__name__}")
        if shape is not None and tensor.shape != shape:
            # CrypTen may receive a scalar into a one-element tensor: only the count must match
            if tensor.numel() != math.prod(shape):
                raise self.malformed(peer, f"expected shape {tuple(shape)}, got {tensor.shape}")
            tensor = tensor.reshape(shape)
        if dtype is not None and tensor.dtype != dtype:
            raise self.malformed(peer, f"expected {dtype}, got {tensor.dtype}")
        return tensor

    def send_obj(self, peer: str, obj: Any) -> None:
        self.broadcast_obj([peer], obj)

    def broadcast_obj(self, peers: Sequence[str], obj: Any) -> None:
        """Send ``obj`` to each of ``peers``. If the codec refuses it, each peer gets a
        refusal in its place (the stream stays in step) and this raises CodecError."""
        try:
            encoded = objects.encode(obj)
        except objects.CodecError as err:
            reason = str(err)[:_MAX_REASON]
            for peer in peers:
                notice = _REFUSED + reason.encode()
                self._send(peer, notice, len(notice))
            raise objects.CodecError(f"cannot send to {', '.join(peers)}: {err}") from None
        for peer in peers:
            self.send_encoded(peer, encoded)

    def send_encoded(self, peer: str, encoded: bytes) -> None:
        """Send an object already encoded by :func:`smpc_synth.crypten_backend.objects.encode`."""
        data = _OBJECT + encoded
        self._send(peer, data, len(data))

    def recv_obj(self, peer: str) -> Any:
        payload = self._recv(peer)
        if isinstance(payload, bytes) and payload.startswith(_REFUSED):
            reason = payload[1:].decode(errors="replace")[:_MAX_REASON]
            raise PeerError(f"{peer} could not send the object it owed: {reason}", peer=peer)
        if not isinstance(payload, bytes) or not payload.startswith(_OBJECT):
            raise self.malformed(peer, f"expected an object, got {type(payload).__name__}")
        try:
            return objects.decode(payload[1:])
        except objects.CodecError as err:
            raise self.malformed(peer, str(err)) from err

    def abort(self, culprit: str) -> None:
        """Tell every other member that ``culprit`` failed (once; best effort)."""
        if self._aborted:
            return
        self._aborted = True
        notice = _ABORT + culprit.encode()
        for peer in self.channel.peers:
            if peer == culprit:
                continue
            try:
                self.channel.send(peer, TAG, notice)
            except Exception as err:  # a second failure must not hide the first
                log.debug("could not tell %s that %s failed: %s", peer, culprit, err)

    def _send(self, peer: str, payload: Any, nbytes: int) -> None:
        try:
            self.channel.send(peer, TAG, payload)
        except PeerError as err:
            self.abort(err.peer or peer)
            raise
        self.recorder.sent(nbytes, dealer=peer == self.dealer)

    def _recv(self, peer: str) -> Any:
        start = clock()
        try:
            payload = self.channel.recv(peer, TAG, timeout=self.timeout)
        except PeerError as err:
            self.abort(err.peer or peer)
            raise
        if isinstance(payload, bytes) and payload.startswith(_ABORT):
            culprit = payload[1:].decode(errors="replace")
            self.abort(culprit)
            raise PeerError(f"MPC stopped: {culprit} failed (reported by {peer})", peer=culprit)
        nbytes = payload.nbytes if hasattr(payload, "nbytes") else len(payload)
        self.recorder.received(nbytes, clock() - start, dealer=peer == self.dealer)
        if self.after_party_recv is not None and peer != self.dealer:
            self.after_party_recv()
        return payload

    def has_message(self, peer: str) -> bool:
        """Whether a message from ``peer`` waits (False where the channel cannot tell)."""
        probe = getattr(self.channel, "has_message", None)
        return probe is not None and probe(peer, TAG)

    def malformed(self, peer: str, what: str) -> PeerError:
        self.abort(peer)
        return PeerError(f"{peer} sent a malformed MPC message: {what}", peer=peer)
