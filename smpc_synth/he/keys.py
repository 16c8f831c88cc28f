"""The session's CKKS context: create it once, hand it out as bytes, keep key files private.

One data party creates the context per session. The *secret* context (with the secret key)
goes to the other data parties only over mutual TLS; the aggregator gets the *public* context,
which is only the parameters: no secret key, no public key, no relinearisation or Galois keys
(the aggregator only adds, and parties encrypt with the secret key).
"""

from __future__ import annotations

import os
from pathlib import Path

import tenseal as ts

from smpc_synth.errors import InputError
from smpc_synth.he.params import OURS, CkksParams
from smpc_synth.private import read_private, write_private


def create_context(params: CkksParams = OURS) -> ts.Context:
    """A fresh CKKS context with a new secret key."""
    kwargs = {"encryption_type": ts.ENCRYPTION_TYPE.SYMMETRIC} if params.symmetric else {}
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        n_threads=1,
        **kwargs,
    )
    ctx.global_scale = 2.0**params.scale_bits
    return ctx


def secret_context_bytes(ctx: ts.Context) -> bytes:
    """The context data parties need: parameters and the secret key."""
    if not ctx.is_private():
        raise ValueError("this context holds no secret key")
    return ctx.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )


def public_context_bytes(ctx: ts.Context) -> bytes:
    """The context the aggregator gets: parameters only, so it can add but not decrypt."""
    return ctx.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )


def load_context(data: bytes, *, secret: bool, source: str = "context") -> ts.Context:
    """Parse a serialised context and check it is the kind expected (secret or public)."""
    try:
        ctx = ts.context_from(data, n_threads=1)
    except ValueError as exc:
        raise InputError(f"{source}: not a TenSEAL context ({exc})") from exc
    if ctx.is_private() != secret:
        kind = "a secret" if secret else "a public"
        raise InputError(f"{source}: expected {kind} context")
    return ctx


def write_key_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write key material atomically, readable by the owner only (0600)."""
    return write_private(path, data)


def read_key_file(path: str | os.PathLike[str], *, secret: bool) -> ts.Context:
    """Load a context from a key file; a secret one must not be readable by group or others."""
    path = Path(path)
    if secret:
        data = read_private(path, "secret key file")
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read key file ({exc.strerror})") from exc
    return load_context(data, secret=secret, source=str(path))
