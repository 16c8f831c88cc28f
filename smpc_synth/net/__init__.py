"""The network layer: gRPC between session members, mutual TLS, certificates, framing.

:class:`PeerMesh` is the :class:`~smpc_synth.net.channel.Channel` the runtime hands to
strategies; :func:`write_certificates` backs ``smpc-synth certs``. Names are imported on
first use, so ``smpc-synth certs`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DTYPES": "codec",
    "CodecError": "codec",
    "Limits": "limits",
    "PeerMesh": "mesh",
    "TlsFiles": "tls",
    "fingerprint": "certs",
    "free_ports": "addresses",
    "is_loopback": "addresses",
    "split_address": "addresses",
    "validate_names": "certs",
    "write_certificates": "certs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
