"""Mutual TLS for gRPC: credentials from PEM files and the check of who a caller is.

Both ends present certificates issued by the session CA. The client checks the server's
certificate names the peer it meant to reach (``ssl_target_name_override``); the server
checks the caller's certificate names the member the caller claims to be (the
``smpc-member`` metadata entry) and that this member belongs to the session.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import grpc

from smpc_synth.errors import InputError
from smpc_synth.private import read_private

MEMBER_METADATA_KEY = "smpc-member"  # the caller's member name, sent on every call


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one member: the session CA, its certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            object.__setattr__(self, name, Path(getattr(self, name)))

    @staticmethod
    def read_file(path: Path) -> bytes:
        """The bytes of a PEM file; InputError naming it if missing, unreadable or not PEM."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read certificate file {path}: {exc.strerror}") from None
        return _pem(path, data)

    @staticmethod
    def read_key(path: Path) -> bytes:
        """The bytes of a PEM private key, refused if group or others may read it."""
        return _pem(path, read_private(path, "private key"))

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) PEM bytes."""
        return self.read_file(self.ca), self.read_file(self.cert), self.read_key(self.key)


def _pem(path: Path, data: bytes) -> bytes:
    if b"-----BEGIN " not in data:
        raise InputError(f"{path} is not a PEM file (expected '-----BEGIN ...')")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server side: present our certificate, require a client certificate from the CA."""
    ca, cert, key = files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client side: trust only the session CA and present our own certificate."""
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def channel_options(peer: str) -> list[tuple[str, str]]:
    """The server at the peer's address must hold a certificate for ``peer`` by name."""
    return [("grpc.ssl_target_name_override", peer)]


def caller_name(context: grpc.ServicerContext, members: Collection[str], secure: bool) -> str:
    """The member calling; PermissionError naming it if unknown or its certificate disagrees."""
    claimed = dict(context.invocation_metadata()).get(MEMBER_METADATA_KEY, "")
    if claimed not in members:
        raise PermissionError(
            f"refused caller {claimed or '(unnamed)'!r} at {context.peer()}: "
            f"not a member of this session ({', '.join(sorted(members))})"
        )
    if secure:
        names = [n.decode() for n in context.peer_identities() or []]
        if claimed not in names:
            raise PermissionError(
                f"refused caller claiming to be {claimed!r} at {context.peer()}: "
                f"its certificate names {', '.join(names) or 'nobody'}"
            )
    return claimed
