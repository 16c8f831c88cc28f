"""Exact noise samplers for differential privacy, driven by a keyed CSPRNG.

- :func:`discrete_gaussian`: the discrete Gaussian ``N_Z(0, sigma2)``, ``P[x] ∝
  exp(-x^2 / (2 sigma2))`` on the integers, sampled *exactly* by Canonne, Kamath and
  Steinke's rejection algorithm ("The Discrete Gaussian for Differential Privacy",
  NeurIPS 2020, Algorithms 1-3): only integer comparisons of uniform random integers, no
  floating point, so the privacy proof holds for the numbers actually produced. ``sigma2`` is
  a float, i.e. an exact dyadic rational, and the algorithm uses that rational. It runs on
  numpy arrays, a block of values at a time (int64 where the numbers fit, Python's integers
  where they do not); each Bernoulli(a/b) trial compares a uniform with a/b exactly.
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
            fresh = self._cipher.update(_ZEROS if count <= _CHUNK else bytes(count))
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


_WORD_BITS = 62  # bits of a uniform compared at a time in Bernoulli trials
_INT_LIMIT = 1 << _WORD_BITS  # int64 arithmetic is used below this, Python's ints above
_BLOCK = 1 << 16  # values sampled at a time (bounds the memory of one request)
_POWERS = np.left_shift(np.int64(1), np.arange(_WORD_BITS + 1, dtype=np.int64))


def _words(rng: RandomSource, n: int) -> np.ndarray:
    """``n`` uniform 64-bit words from ``rng``'s keystream."""
    return np.frombuffer(rng.randbytes(8 * n), dtype="<u8").astype(np.uint64)


def _below(n, count: int, rng: RandomSource) -> np.ndarray:
    """``count`` uniform integers in ``[0, n)`` (``n``: an int or int64 array, 1 <= n <
    2^62) by rejection: the low bits of a word, up to the power of two at or above ``n``."""
    n = np.asarray(n, dtype=np.int64)
    mask = (_POWERS[np.searchsorted(_POWERS, n)] - 1).astype(np.uint64)  # 2^e >= n, least
    out = (_words(rng, count) & mask).astype(np.int64)
    todo = np.flatnonzero(out >= n)
    if n.ndim:
        n, mask = n[todo], mask[todo]
    while todo.size:
        w = (_words(rng, todo.size) & mask).astype(np.int64)
        ok = w < n
        out[todo[ok]] = w[ok]
        todo, redo = todo[~ok], ~ok
        if n.ndim:
            n, mask = n[redo], mask[redo]
    return out


def _bernoulli_exp_small(num: np.ndarray, den, rng: RandomSource) -> np.ndarray:
    """Bernoulli(exp(-num/den)) elementwise for int64 ``0 <= num <= den < 2^62`` (CKS
    Algorithm 1: K = 1, 2, ... while Bernoulli(num / (den K)); the result is K odd). An
    element whose ``den K`` outgrows int64 goes on with Python's integers."""
    count = len(num)
    den = np.broadcast_to(np.asarray(den, dtype=np.int64), (count,))
    k = np.ones(count, dtype=np.int64)
    limit = (_INT_LIMIT - 1) // den  # largest K with den K < 2^62
    active = np.arange(count)
    while active.size:
        big = k[active] > limit[active]
        for i in active[big]:  # rare: exact, with Python's integers
            kk = int(k[i])
            while rng._randbelow(int(den[i]) * kk) < int(num[i]):
                kk += 1
            k[i] = kk
        active = active[~big]
        go_on = _below(den[active] * k[active], active.size, rng) < num[active]
        k[active[go_on]] += 1
        active = active[go_on]
    return (k & 1).astype(bool)


def _bernoulli_below(
    num: np.ndarray, den: np.ndarray, rng: RandomSource, bits: int = _WORD_BITS
) -> np.ndarray:
    """Bernoulli(num/den) elementwise for Python-integer arrays ``0 <= num < den``: a uniform
    real's binary digits, ``bits`` at a time, against those of num/den, until they differ."""
    scaled = num * (1 << bits)
    digits = scaled // den  # < 2^bits
    w = _words(rng, len(num)) & np.uint64((1 << bits) - 1)
    d = digits.astype(np.uint64)
    out = w < d
    for i in np.flatnonzero(w == d):  # probability 2^-bits each: the next digits, exactly
        rest, m = int(scaled[i] - digits[i] * den[i]), int(den[i])
        while True:
            rest <<= bits
            digit, rest = divmod(rest, m)
            word = rng.getrandbits(bits)
            if word != digit:
                out[i] = word < digit
                break
    return out


def _bernoulli_exp_big(num: np.ndarray, den: int, rng: RandomSource) -> np.ndarray:
    """Bernoulli(exp(-num/den)) elementwise for a Python-integer array ``num >= 0`` and a
    Python integer ``den``: exp(-1) once per whole unit of num/den, then CKS Algorithm 1 on
    the rest with exact Bernoulli(rest / (den K)) trials."""
    count = len(num)
    whole, rest = num // den, num % den
    out = np.ones(count, dtype=bool)
    active = np.flatnonzero(whole > 0)
    while active.size:  # Bernoulli(exp(-1)) per whole unit, until the first failure
        ok = _bernoulli_exp_small(np.ones(active.size, dtype=np.int64), 1, rng)
        out[active[~ok]] = False
        active = active[ok]
        whole[active] -= 1
        active = active[whole[active] > 0]
    k = np.ones(count, dtype=object)
    active = np.flatnonzero(out)
    while active.size:
        go_on = _bernoulli_below(rest[active], den * k[active], rng)
        k[active[go_on]] += 1
        active = active[go_on]
    return out & (k.astype(np.int64) % 2 == 1)


def _discrete_laplace(t: int, count: int, rng: RandomSource) -> tuple[np.ndarray, np.ndarray]:
    """``count`` draws of ``P[y] ∝ exp(-|y| / t)`` for an integer ``1 <= t < 2^62`` (CKS
    Algorithm 2), as (magnitudes as Python integers, signs)."""
    magnitude = np.empty(count, dtype=object)
    negative = np.empty(count, dtype=bool)
    todo = np.arange(count)
    while todo.size:
        m = todo.size
        u = np.empty(m, dtype=np.int64)  # uniform in [0, t), kept with probability exp(-u/t)
        pending = np.arange(m)
        while pending.size:
            candidate = _below(t, pending.size, rng)
            kept = _bernoulli_exp_small(candidate, t, rng)
            u[pending[kept]] = candidate[kept]
            pending = pending[~kept]
        v = np.zeros(m, dtype=np.int64)  # geometric: ones in a row of Bernoulli(exp(-1))
        active = np.arange(m)
        while active.size:
            one = _bernoulli_exp_small(np.ones(active.size, dtype=np.int64), 1, rng)
            active = active[one]
            v[active] += 1
        size = u.astype(object) + t * v.astype(object)
        sign = (_words(rng, m) & np.uint64(1)).astype(bool)
        redo = sign & (size == 0)  # -0: drawn again
        magnitude[todo[~redo]] = size[~redo]
        negative[todo[~redo]] = sign[~redo]
        todo = todo[redo]
    return magnitude, negative


def discrete_gaussian(sigma2: float, count: int, rng: RandomSource) -> np.ndarray:
    """``count`` independent draws of ``N_Z(0, sigma2)`` as int64 (CKS Algorithm 3 for the
    rational ``sigma2``), a block of values at a time."""
    _check_count(count)
    p, q = _rational(sigma2)
    t = math.isqrt(p // q) + 1  # floor(sigma) + 1
    den = 2 * p * q * t * t
    out = np.empty(count, dtype=np.int64)
    for start in range(0, count, _BLOCK):
        todo = np.arange(start, min(count, start + _BLOCK))
        while todo.size:
            magnitude, negative = _discrete_laplace(t, todo.size, rng)
            # accept with probability exp(-(|y| - sigma2/t)^2 / (2 sigma2))
            a = magnitude * (t * q) - p
            accept = _bernoulli_exp_big(a * a, den, rng)
            values = np.where(negative, -magnitude, magnitude)[accept]
            out[todo[accept]] = values.astype(np.int64)
            todo = todo[~accept]
    return out


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
