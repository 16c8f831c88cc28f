"""Exact noise samplers for differential privacy, driven by a keyed CSPRNG.

- :func:`discrete_gaussian`: the discrete Gaussian ``N_Z(0, sigma2)``, ``P[x] ∝
  exp(-x^2 / (2 sigma2))`` on the integers, sampled *exactly* by Canonne, Kamath and
  Steinke's rejection algorithm ("The Discrete Gaussian for Differential Privacy",
  NeurIPS 2020, Algorithms 1-3): only integer comparisons of uniform random integers, no
  floating point, so the privacy proof holds for the numbers actually produced. ``sigma2`` is
  a float, i.e. an exact dyadic rational, and the algorithm uses that rational.
- :func:`gumbel_fixed`: ``round(scale 2^bits G)`` for standard Gumbel ``G`` (the
  exponential mechanism by Gumbel-max), computed in 60-digit decimal arithmetic from a
  128-bit uniform. It is not exact; :func:`gumbel_shift` and :func:`gumbel_tail` bound how
  far an argmax over such values can be from the exact exponential mechanism (the
  accountant charges both).

All randomness comes from a :class:`RandomSource`: AES-128-CTR under a key from the
operating system's CSPRNG (or, in tests, a key derived from a debug seed), so a dealer, an
aggregator or a plaintext run produce the same numbers from the same key and label.
"""

from __future__ import annotations

import decimal
import hashlib
import math
import os
import random

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 16
_CHUNK = 1 << 16  # keystream bytes generated at a time
_ZEROS = bytes(_CHUNK)
MAX_SIGMA2 = 2.0**120  # discrete-Gaussian variances beyond this are refused (values stay int64)
MAX_NOISE_ELEMENTS = 1 << 22  # one request samples at most this many values (~30 s of CPU)
GUMBEL_UNIFORM_BITS = 128
_GUMBEL_DIGITS = 60
# A 128-bit uniform u in [2^-64, 1 - 2^-64] (all but 2^-63 of the mass) gives G with
# |dG/du| <= 2^65, so the rounding of u moves G by at most 2^65 2^-129 = 2^-64; 60 decimal
# digits leave the logarithms' error far below that.
GUMBEL_VALUE_ERROR = 2.0**-63  # |computed G - exact G| outside the tails, generous
GUMBEL_TAIL_MASS = 2.0**-63  # probability that u falls outside [2^-64, 1 - 2^-64]


def noise_key(debug_seed: int | None = None) -> bytes:
    """The key DP noise is drawn from: fresh from the OS CSPRNG, or (tests only) derived from
    a debug seed, so that a dealer, an aggregator and a plaintext run draw the same noise."""
    if debug_seed is None:
        return os.urandom(KEY_BYTES)
    return hashlib.sha256(repr((debug_seed, "dp-noise")).encode()).digest()[:KEY_BYTES]


class RandomSource(random.Random):
    """``random.Random`` whose bits are AES-128-CTR keystream under ``key`` from a counter
    block derived from ``label``: a CSPRNG as long as the key is secret. Every method of
    ``random.Random`` that uses ``getrandbits`` (``randrange``, ``getrandbits``) draws from
    it; :meth:`random` gives 53-bit floats from it too."""

    def __init__(self, key: bytes, label: bytes = b"") -> None:
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"a noise key is {KEY_BYTES} bytes")
        nonce = hashlib.blake2b(label, digest_size=16).digest()
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        self._buffer = b""
        self._position = 0
        super().__init__()

    def seed(self, *args, **kwargs) -> None:  # the key is the seed
        return None

    def _bytes(self, count: int) -> bytes:
        if self._position + count > len(self._buffer):
            fresh = self._cipher.update(_ZEROS[: max(_CHUNK, count)])
            self._buffer = self._buffer[self._position :] + fresh
            self._position = 0
        start = self._position
        self._position += count
        return self._buffer[start : self._position]

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        if k == 0:
            return 0
        nbytes = (k + 7) // 8
        return int.from_bytes(self._bytes(nbytes), "little") >> (8 * nbytes - k)

    def random(self) -> float:
        return self.getrandbits(53) * 2.0**-53

    def randbytes(self, n: int) -> bytes:
        return self._bytes(n)


def _bernoulli_exp_at_most_one(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-num/den)) for 0 <= num <= den (CKS Algorithm 1)."""
    below = rng._randbelow
    k = 1
    while below(den * k) < num:  # Bernoulli(num / (den k))
        k += 1
    return bool(k & 1)


def _bernoulli_exp(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-num/den)) for num >= 0: exp(-1) once per whole unit, then the rest."""
    while num > den:
        if not _bernoulli_exp_at_most_one(1, 1, rng):
            return False
        num -= den
    return _bernoulli_exp_at_most_one(num, den, rng)


def _discrete_laplace(t: int, rng: RandomSource) -> int:
    """``P[y] ∝ exp(-|y| / t)`` on the integers for an integer ``t >= 1`` (CKS Algorithm 2)."""
    below = rng._randbelow
    while True:
        while True:  # u uniform in [0, t), kept with probability exp(-u / t)
            u = below(t)
            if _bernoulli_exp_at_most_one(u, t, rng):
                break
        v = 0  # geometric: v ones in a row of Bernoulli(exp(-1))
        while _bernoulli_exp_at_most_one(1, 1, rng):
            v += 1
        magnitude = u + t * v  # geometric with parameter 1 - exp(-1/t)
        negative = below(2)
        if negative and magnitude == 0:
            continue
        return -magnitude if negative else magnitude


def discrete_gaussian_one(sigma2: float, rng: RandomSource) -> int:
    """One draw of ``N_Z(0, sigma2)`` (CKS Algorithm 3) for the rational ``sigma2``."""
    p, q = _rational(sigma2)
    t = math.isqrt(p // q) + 1  # floor(sigma) + 1
    while True:
        y = _discrete_laplace(t, rng)
        # accept with probability exp(-(|y| - sigma2/t)^2 / (2 sigma2))
        a = abs(y) * t * q - p
        if _bernoulli_exp(a * a, 2 * p * q * t * t, rng):
            return y


def discrete_gaussian(sigma2: float, count: int, rng: RandomSource) -> np.ndarray:
    """``count`` independent draws of ``N_Z(0, sigma2)`` as int64."""
    _check_count(count)
    _rational(sigma2)
    return np.fromiter((discrete_gaussian_one(sigma2, rng) for _ in range(count)), np.int64, count)


def _rational(sigma2: float) -> tuple[int, int]:
    if isinstance(sigma2, bool) or not isinstance(sigma2, int | float):
        raise ValueError(f"sigma2 must be a number, got {sigma2!r}")
    if not (math.isfinite(sigma2) and 0 < sigma2 <= MAX_SIGMA2):
        raise ValueError(f"sigma2 must be positive, finite and at most 2^120, got {sigma2!r}")
    return float(sigma2).as_integer_ratio()


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not count >= 0:
        raise ValueError(f"a count of noise values must be a non-negative int, got {count!r}")
    if count > MAX_NOISE_ELEMENTS:
        raise ValueError(f"{count} noise values are more than {MAX_NOISE_ELEMENTS} per request")


def gumbel_fixed(scale: float, bits: int, count: int, rng: RandomSource) -> np.ndarray:
    """``round(scale * 2^bits * G)`` as int64 for ``count`` standard Gumbel ``G``.

    ``G = -ln(-ln u)`` for ``u = (k + 1/2) / 2^128``, ``k`` uniform, in 60-digit decimal
    arithmetic. Values are bounded: ``|G| < 90``, so ``scale 2^bits`` must stay below 2^56.
    """
    _check_count(count)
    if not (math.isfinite(scale) and scale > 0) or not (isinstance(bits, int) and bits >= 0):
        raise ValueError(f"a Gumbel scale must be positive and bits >= 0, got {scale}, {bits}")
    factor = decimal.Decimal(scale) * (decimal.Decimal(2) ** bits)
    if factor >= decimal.Decimal(2) ** 56:
        raise ValueError(f"scale * 2^bits = {float(factor):.3g} is too large for int64 values")
    context = decimal.Context(prec=_GUMBEL_DIGITS)
    half = decimal.Decimal(1) / 2
    denominator = decimal.Decimal(2) ** GUMBEL_UNIFORM_BITS
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        u = context.divide(
            decimal.Decimal(rng.getrandbits(GUMBEL_UNIFORM_BITS)) + half, denominator
        )
        g = -context.ln(-context.ln(u))
        out[i] = int(context.multiply(g, factor).to_integral_value(decimal.ROUND_HALF_EVEN))
    return out


def gumbel_shift(scale: float, bits: int) -> float:
    """How far, in units of the Gumbel (``scale``), the argmax of ``s_i + N_i`` with ``N_i =
    gumbel_fixed(scale, bits)`` (``s_i`` integers in units of ``2^-bits``) can stand from the
    exact exponential mechanism ``P[i] ∝ exp(s_i / scale)``, as a privacy-loss bound.

    Couple both with the same uniforms. Each computed value is within ``h = 2^-bits / 2 +
    scale GUMBEL_VALUE_ERROR`` of the exact one (rounding, and the logarithms' error) unless a
    uniform fell in the tails (:func:`gumbel_tail`). So the computed argmax is ``i`` only if
    the exact ``v_i`` is within ``2h`` of the exact maximum, and is ``i`` whenever ``v_i``
    leads by more than ``2h``. With ``t = 2h / scale``, Gumbel-max gives ``P[v_i >= max_j
    v_j - t] = P[i wins with its score raised by t scale] <= e^t P[i]`` and likewise ``P[v_i
    > max_j v_j + t] >= e^-t P[i]``: every outcome's probability is within a factor ``e^t``
    of the exact mechanism's, so the privacy loss's range grows by at most ``2 t`` on each
    side: an exponential mechanism with ``epsilon`` becomes one with ``epsilon + 4 t``."""
    h = 2.0**-bits / 2 + scale * GUMBEL_VALUE_ERROR
    return 2 * h / scale


def gumbel_tail(candidates: int) -> float:
    """The probability that some uniform of a selection falls where :func:`gumbel_shift`'s
    error bound does not hold; charged to delta (approximate zCDP)."""
    return candidates * GUMBEL_TAIL_MASS


NOISE_KINDS = ("dgauss", "gumbel")


def draw_noise(key: bytes, kind: str, tag: int, count: int, params) -> np.ndarray:
    """``count`` values of noise ``kind`` for the draw named ``tag``, from ``key``:

    - ``"dgauss"``, params ``(sigma2,)``: :func:`discrete_gaussian`;
    - ``"gumbel"``, params ``(scale, bits)``: :func:`gumbel_fixed`.

    The same key, kind, tag and params give the same values (a dealer and a debug-seeded
    plaintext run agree); each ``tag`` has its own stream, so distinct tags are independent.
    """
    if isinstance(tag, bool) or not isinstance(tag, int) or tag < 0:
        raise ValueError(f"a noise tag is a non-negative int, got {tag!r}")
    params = list(params)
    rng = RandomSource(key, f"{kind}/{tag}".encode())
    if kind == "dgauss" and len(params) == 1:
        return discrete_gaussian(params[0], count, rng)
    if kind == "gumbel" and len(params) == 2 and type(params[1]) is int:
        return gumbel_fixed(float(params[0]), params[1], count, rng)
    raise ValueError(f"unknown noise {kind!r} with parameters {params!r}")
