"""A hostile session member for tests: it holds a real member certificate and speaks raw
gRPC to a :class:`~smpc_synth.net.PeerMesh`, so it can send frames no honest codec writes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

import grpc

from smpc_synth.config import NetworkConfig
from smpc_synth.net import PeerMesh, codec, free_ports
from smpc_synth.net.mailbox import Inbox
from smpc_synth.net.mesh.connection import END_TAG
from smpc_synth.net.tls import MEMBER_METADATA_KEY, TlsFiles, channel_credentials, channel_options
from smpc_synth.net.v1 import data_pb2
from smpc_synth.net.v1 import tensor_pb2 as pb

STREAM_METHOD = "/smpc_synth.v1.DataPlane/Stream"
NETWORK = NetworkConfig(peer_timeout_s=30.0, connect_timeout_s=10.0, call_deadline_s=5.0)


def receiver_mesh(certs, inbox_limit: int | None = None) -> PeerMesh:
    """alice, listening with TLS; bob is her only peer (to be played by a RawPeer).
    ``inbox_limit`` shrinks her inbox bound (and so the largest message she accepts)."""
    port_alice, port_bob = free_ports(2)
    peers = {"bob": f"127.0.0.1:{port_bob}"}
    alice = PeerMesh("alice", f"127.0.0.1:{port_alice}", peers, certs["alice"], NETWORK)
    if inbox_limit is not None:
        alice._limits = replace(alice._limits, max_queued_bytes=inbox_limit)
        alice._inbox = Inbox(inbox_limit)
    alice.start()
    return alice


def end_of_stream() -> list[bytes]:
    """The frames an honest member sends last; a stream without them reads as broken."""
    return [frame.wire for frame in codec.encode(END_TAG, b"", 1 << 16)]


def frame(
    tag: str = "t",
    *,
    kind: int = pb.PAYLOAD_KIND_NUMPY,
    dtype: str = "float32",
    shape: Iterable[int] = (2,),
    nbytes: int | None = None,
    data: bytes | None = None,
    last: bool = True,
    header: bool = True,
) -> bytes:
    """One serialized ``Frame``; by default a well-formed float32 array of two zeros."""
    shape = list(shape)
    if data is None:
        data = b"\0" * (4 * 2)
    message = pb.Frame(tag=tag, data=data, last=last)
    if header:
        message.header.CopyFrom(
            pb.TensorHeader(
                kind=kind,
                dtype=dtype,
                shape=shape,
                nbytes=len(data) if nbytes is None else nbytes,
            )
        )
    return message.SerializeToString()


class RawPeer:
    """Member ``me`` (with its own certificate) talking raw frames to ``address``."""

    def __init__(self, me: str, target: str, address: str, tls: TlsFiles):
        self.me = me
        options = channel_options(target)
        self.channel = grpc.secure_channel(address, channel_credentials(tls), options=options)
        self.stream = self.channel.stream_unary(
            STREAM_METHOD,
            request_serializer=None,
            response_deserializer=data_pb2.StreamSummary.FromString,
        )

    def send(self, frames: Iterable[bytes], timeout: float = 30.0) -> grpc.StatusCode:
        """Stream ``frames`` on one call; the status the receiver ended it with."""
        try:
            self.stream(iter(frames), timeout=timeout, metadata=((MEMBER_METADATA_KEY, self.me),))
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def start(self, frames: Iterable[bytes], timeout: float = 60.0) -> grpc.Future:
        """Like :meth:`send`, without waiting for the end of the call."""
        return self.stream.future(
            iter(frames), timeout=timeout, metadata=((MEMBER_METADATA_KEY, self.me),)
        )

    def close(self) -> None:
        self.channel.close()


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (gRPC logs an exception a handler let out)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage():
            self.records.append(record)

    def __enter__(self) -> TracebackCounter:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)
