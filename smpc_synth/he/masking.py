"""Pairwise zero-sum masks (as in SecAgg): they hide each submission, and cancel in the sum.

Every pair of data parties agrees on a secret by X25519 key agreement (the caller exchanges the
32-byte public keys over the authenticated channel). Per round, each pair expands its secret
with HKDF and AES-256-CTR into a uniform stream over Z_M; the lexically smaller name adds it,
the other subtracts it. A party's mask is the sum of its pairwise streams, so all masks sum to
zero mod M, while any one submission stays uniform to anyone missing one of its pair secrets.
There is no dropout recovery: a missing party makes the round fail (the caller's deadline).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smpc_synth.errors import PeerError
from smpc_synth.he.packing import centered_mod

_LABEL = b"smpc-synth pairwise mask v1"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class MaskKey:
    """This party's X25519 key pair for one session."""

    def __init__(self, private: X25519PrivateKey | None = None):
        self._private = private or X25519PrivateKey.generate()

    def public_bytes(self) -> bytes:
        """The 32 bytes to send to every other data party."""
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def pair_secrets(
        self, me: str, peer_public: Mapping[str, bytes], session_id: str
    ) -> dict[str, bytes]:
        """One 32-byte secret per peer, bound to the session and the pair's names."""
        secrets = {}
        for peer, raw in peer_public.items():
            if peer == me:
                continue
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(raw))
            except ValueError as exc:
                raise PeerError(f"{peer}: invalid mask public key ({exc})", peer=peer) from exc
            pair = "|".join(sorted((me, peer)))
            secrets[peer] = _hkdf(shared, b"|".join([_LABEL, session_id.encode(), pair.encode()]))
        return secrets


def _stream(secret: bytes, round_index: int, size: int, ring_bits: int) -> np.ndarray:
    key = _hkdf(secret, _LABEL + b"|round|" + round_index.to_bytes(8, "big"))
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(encryptor.update(bytes(8 * size)), dtype=np.uint64)
    return (words & np.uint64((1 << ring_bits) - 1)).astype(np.int64)


def zero_sum_mask(
    me: str, secrets: Mapping[str, bytes], round_index: int, size: int, ring_bits: int
) -> np.ndarray:
    """This party's mask for one round: int64 in [-M/2, M/2); all parties' masks sum to 0 mod M."""
    mask = np.zeros(size, dtype=np.int64)
    for peer, secret in secrets.items():
        stream = _stream(secret, round_index, size, ring_bits)
        mask = mask + stream if me < peer else mask - stream
        mask = centered_mod(mask, ring_bits)
    return mask
