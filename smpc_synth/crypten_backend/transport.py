"""Where each CrypTen transport may run; light to import (no CrypTen, no torch).

``grpc`` carries every message over the session's mesh (mutual TLS off loopback). ``gloo``
is torch.distributed over plain TCP: neither encrypted nor authenticated, so its rendezvous
must be a loopback address, unless the run sets ``network.allow_insecure``, which the log
then repeats. Config loading and :func:`~smpc_synth.mpc.session.start_crypten` both check
this, so a refused run stops before any traffic.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from smpc_synth.errors import InputError
from smpc_synth.net.addresses import is_loopback

RENDEZVOUS_KEY = "mpc.rendezvous"


def rendezvous_address(rendezvous: str | None) -> tuple[str, int]:
    """(host, port) of a gloo rendezvous ``tcp://HOST:PORT``; InputError naming the key."""
    if not rendezvous:
        raise InputError(f"key '{RENDEZVOUS_KEY}': 'gloo' needs a rendezvous (tcp://HOST:PORT)")
    try:
        parts = urlsplit(rendezvous)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InputError(
            f"key '{RENDEZVOUS_KEY}': {rendezvous!r} is not tcp://HOST:PORT ({exc})"
        ) from None
    if parts.scheme != "tcp" or not host or port is None or parts.path not in ("", "/"):
        raise InputError(f"key '{RENDEZVOUS_KEY}': {rendezvous!r} is not tcp://HOST:PORT")
    return host, port


def check_gloo(rendezvous: str | None, allow_insecure: bool) -> bool:
    """Whether gloo runs off loopback (only with ``allow_insecure``); InputError if refused."""
    host, _ = rendezvous_address(rendezvous)
    if is_loopback(host):
        return False
    if not allow_insecure:
        raise InputError(
            f"key '{RENDEZVOUS_KEY}': gloo over {rendezvous} is refused: gloo sends MPC "
            "traffic as plain TCP (neither encrypted nor authenticated) and may leave this "
            "machine only with 'network.allow_insecure' = true. Use transport 'grpc' "
            "(mutual TLS) between machines"
        )
    return True


def insecure_warning(rendezvous: str) -> str:
    """The line the log repeats when gloo runs off loopback."""
    return (
        f"INSECURE: MPC traffic over gloo via {rendezvous} is plain TCP, neither encrypted "
        "nor authenticated (network.allow_insecure = true)"
    )
