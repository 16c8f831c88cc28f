"""The PRG behind every party's share of the dealer's tuples: AES-128 in counter mode.

CrypTen's TTP draws shares with ``torch.randint`` on a Mersenne Twister, which is neither a
cryptographic PRG (its state follows from 624 outputs) nor fast (about 15 ns per 64-bit
word here). An AES-CTR keystream is both: about 3 ns per word with AES-NI, through the
``cryptography`` package. The dealer and one party share each key; nobody else can predict
the stream.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 16  # AES-128
_WORD = 8  # bytes per int64
_BLOCK = 16  # AES block; update_into wants this much slack
# The keystream is AES-CTR applied to zeros. A fresh ``bytes(n)`` per draw costs more than
# the cipher for large draws (a new zeroed mapping every time: 4.6 ms against 0.7 ms for
# 500k words), so draws read one shared run of zeros, a chunk at a time.
_ZERO_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_ZERO_CHUNK))
_COUNTERS = 1 << (8 * _BLOCK)  # CTR's counter block wraps modulo 2^128


def fresh_key() -> bytes:
    """A key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def debug_key(base: int, *labels: object) -> bytes:
    """A key derived from ``base`` and ``labels``: tests' fixed seeds only, never secret."""
    return hashlib.sha256(repr((base, *labels)).encode()).digest()[:KEY_BYTES]


def request_nonce(index: int, request: bytes) -> bytes:
    """The first counter block of the stream for tuple request number ``index`` whose
    encoding is ``request``: each (index, request) starts at its own random point among the
    2^128 counters, so a different request at the same index draws independent words (a
    tuple draws far fewer than 2^64 blocks: overlaps are out of reach)."""
    return hashlib.blake2b(index.to_bytes(8, "big") + request, digest_size=_BLOCK).digest()


def nonce_tag(nonce: bytes) -> int:
    """A signed 64-bit label of a :func:`request_nonce`, to name the request on the wire."""
    return int.from_bytes(nonce[:8], "big", signed=True)


class Stream:
    """A deterministic stream of uniformly random int64 words from a 128-bit key.

    Draws are consumed in call order: two holders of the key stay in step as long as they
    make the same calls with the same sizes. ``nonce`` is the first counter block (see
    :func:`request_nonce`).
    """

    def __init__(self, key: bytes, nonce: bytes = bytes(_BLOCK)) -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key is {KEY_BYTES} bytes")
        if not isinstance(nonce, bytes) or len(nonce) != _BLOCK:
            raise ValueError(f"a PRG nonce is {_BLOCK} bytes")
        self._key = key
        self._first = int.from_bytes(nonce, "big")
        self._position = 0  # keystream bytes drawn so far
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def tell(self) -> int:
        """How far the stream has been drawn, for :meth:`seek`."""
        return self._position

    def seek(self, position: int) -> None:
        """Continue from ``position`` (a :meth:`tell`), as if nothing had been drawn after it.

        Counter mode's block ``k`` is AES of the counter ``k``, so the stream restarts at the
        block holding ``position`` and drops the bytes before it within that block."""
        block, offset = divmod(position, _BLOCK)
        counter = ((self._first + block) % _COUNTERS).to_bytes(_BLOCK, "big")
        self._cipher = Cipher(algorithms.AES(self._key), modes.CTR(counter)).encryptor()
        self._cipher.update(bytes(offset))
        self._position = position

    def ring(self, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """Uniform elements of Z/2^64 (int64, wrapping) of shape ``size``."""
        nbytes = math.prod(size) * _WORD
        out = torch.empty(nbytes + _BLOCK, dtype=torch.uint8)
        buffer = out.numpy()
        for start in range(0, nbytes, _ZERO_CHUNK):
            chunk = min(_ZERO_CHUNK, nbytes - start)
            window = buffer[start : start + chunk + _BLOCK]
            written = self._cipher.update_into(_ZEROS[:chunk], window)
            assert written == chunk  # CTR is a stream cipher: no buffering
        self._position += nbytes
        return out[:nbytes].view(torch.int64).view(size)

    def bits(self, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
        """Uniform 0/1 int64 elements of shape ``size``."""
        return self.ring(size) & 1
