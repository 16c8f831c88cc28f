"""CKKS parameters and the fixed-point lane layout: the one place they are chosen.

Why these numbers (measured with TenSEAL 0.3.18, see tests/unit/he/test_he_params.py):

* Aggregation only adds ciphertexts, so no multiplicative depth is needed. A ciphertext lives
  at the data level, which holds every prime but the last (the special prime, needed only
  because TenSEAL always makes key-switching keys). With ``[60, 40]`` the ciphertext keeps one
  60-bit prime: 2 polynomials x 4096 coefficients x 8 B = 64 KiB for 2048 slots, i.e.
  32 B per slot. Every further data prime adds another 32 B per slot; N only changes how
  many slots share that cost. So cost per slot is fixed and the only way under 4x float32
  (16 B per value) is more than one value per slot.
* We therefore encode *exact integers*: each value is quantised to fixed point
  (``2**-frac_bits`` resolution) and ``lanes`` values are packed into one integer per slot,
  ``sum(lane_j * 2**(j * lane_bits))``. Addition of ciphertexts adds the packed integers; after
  decryption the sum is rounded to an integer and split back into lanes (balanced digits).
* A slot decrypts to the right integer while ``|value| * scale < q / 2`` (q is the 60-bit
  prime; beyond that a coefficient wraps: measured, a constant vector of 2**44 at scale 2**16
  fails) and the noise divided by the scale stays well under 0.5. Secret-key (symmetric)
  encryption has ~7x less noise than public-key encryption (max error 0.03 vs 0.15 integer
  units for a sum of 8 at scale 2**16), so parties, who all hold the secret key, encrypt
  symmetrically. Scale 2**16 then leaves ``EXACT_INT_BITS = 42`` bits of magnitude per slot
  with one bit of margin (59 - 16 - 1).
* Pairwise masks are added to the whole packed integer in the ring Z_M, M = 2**(lanes *
  lane_bits), so they hide it perfectly and cancel mod M. The sum of n masked integers needs
  log2(n) headroom bits once per slot; each lane needs room for the true sum of n values.
* The NVFlare-like reference (8192, [60, 40, 40], scale 2**40, per-layer vectors, public-key
  encryption) is here only for the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smpc_synth.errors import InputError


@dataclass(frozen=True)
class CkksParams:
    """A TenSEAL CKKS parameter set."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    symmetric: bool  # secret-key encryption: less noise, only key holders can encrypt

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


OURS = CkksParams(
    poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 40), scale_bits=16, symmetric=True
)
NVFLARE_LIKE = CkksParams(
    poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40), scale_bits=40, symmetric=False
)

# |packed sum| <= 2**EXACT_INT_BITS decrypts exactly with OURS (one 60-bit data prime, q/2 ~ 2**59).
EXACT_INT_BITS = OURS.coeff_mod_bit_sizes[0] - 1 - OURS.scale_bits - 1
# A decrypted slot further than this from an integer means the ciphertexts were corrupted.
MAX_ROUNDING_GAP = 0.25
DEFAULT_MAX_ERROR = 1e-6  # target max abs error of the decrypted sum, per value


@dataclass(frozen=True)
class FixedPointLayout:
    """How float values become packed integers; every party of a session uses the same one."""

    frac_bits: int  # resolution 2**-frac_bits
    lane_bits: int  # room for the signed sum of all parties' values in one lane
    lanes: int  # values per CKKS slot
    max_abs: float  # bound on every value of one party's update
    parties: int
    masked: bool

    @property
    def ring_bits(self) -> int:
        """Masks live in Z_M with M = 2**ring_bits."""
        return self.lanes * self.lane_bits

    @property
    def max_error(self) -> float:
        """Worst-case abs error of the decrypted sum: each party rounds once."""
        return self.parties * 2.0 ** -(self.frac_bits + 1)

    @property
    def max_quantum(self) -> int:
        """Largest |integer| a value within max_abs quantises to."""
        return math.floor(self.max_abs * 2**self.frac_bits + 0.5)


def choose_layout(
    max_abs: float,
    parties: int,
    *,
    max_error: float = DEFAULT_MAX_ERROR,
    masked: bool = True,
) -> FixedPointLayout:
    """Pick the finest resolution meeting ``max_error`` and then as many lanes as fit a slot.

    ``max_abs`` bounds each value of one party's update (the clip bound, plus noise under DP);
    values beyond it raise when packed. Raises InputError when no layout fits.
    """
    if parties < 1:
        raise InputError(f"parties must be at least 1, got {parties}")
    if not (max_abs > 0 and math.isfinite(max_abs)):
        raise InputError(f"max_abs must be a positive number, got {max_abs}")
    if not max_error > 0:
        raise InputError(f"max_error must be positive, got {max_error}")
    frac_bits = max(0, math.ceil(math.log2(parties / (2 * max_error))))
    max_sum = parties * math.floor(max_abs * 2**frac_bits + 0.5)
    lane_bits = max_sum.bit_length() + 1
    headroom = math.ceil(math.log2(parties)) if masked else 0
    lanes = (EXACT_INT_BITS + 1 - headroom) // lane_bits
    if lanes < 1:
        raise InputError(
            f"no fixed-point layout holds values up to {max_abs} from {parties} parties with "
            f"error <= {max_error}: raise max_error or lower the clip bound"
        )
    return FixedPointLayout(frac_bits, lane_bits, lanes, max_abs, parties, masked)
