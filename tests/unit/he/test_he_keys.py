"""Key handling: the aggregator's context cannot decrypt; key files are private."""

import stat

import numpy as np
import pytest
import tenseal as ts

from smpc_synth.errors import InputError
from smpc_synth.he.keys import (
    create_context,
    load_context,
    public_context_bytes,
    read_key_file,
    secret_context_bytes,
    write_key_file,
)


@pytest.fixture(scope="module")
def ctx():
    return create_context()


def test_public_context_holds_no_keys_and_cannot_decrypt(ctx):
    public = load_context(public_context_bytes(ctx), secret=False)
    assert not public.is_private()
    assert not public.has_galois_keys()
    assert not public.has_relin_keys()
    blob = ts.ckks_vector(ctx, [1.0, 2.0, 3.0]).serialize()
    vec = ts.ckks_vector_from(public, blob)
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    # it can still add, which is all the aggregator does
    vec.add_(ts.ckks_vector_from(public, blob))
    summed = ts.ckks_vector_from(ctx, vec.serialize()).decrypt()
    np.testing.assert_allclose(summed, [2.0, 4.0, 6.0], atol=0.1)


def test_public_context_is_much_smaller_than_secret(ctx):
    assert len(public_context_bytes(ctx)) * 100 < len(secret_context_bytes(ctx))


def test_secret_context_round_trips(ctx):
    other = load_context(secret_context_bytes(ctx), secret=True)
    blob = ts.ckks_vector(ctx, [5.0]).serialize()
    assert ts.ckks_vector_from(other, blob).decrypt()[0] == pytest.approx(5.0, abs=0.1)


def test_wrong_kind_or_garbage_is_named(ctx):
    with pytest.raises(InputError, match=r"agg.ctx: expected a secret"):
        load_context(public_context_bytes(ctx), secret=True, source="agg.ctx")
    with pytest.raises(InputError, match=r"x.ctx: not a TenSEAL context"):
        load_context(b"not a context", secret=False, source="x.ctx")


def test_key_files_are_0600_and_loose_secret_files_refused(ctx, tmp_path):
    path = write_key_file(tmp_path / "secret.ctx", secret_context_bytes(ctx))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path, secret=True).is_private()
    path.chmod(0o644)
    with pytest.raises(InputError, match=r"secret.ctx"):
        read_key_file(path, secret=True)
    public = write_key_file(tmp_path / "public.ctx", public_context_bytes(ctx))
    assert stat.S_IMODE(public.stat().st_mode) == 0o600
    assert not read_key_file(public, secret=False).is_private()


def test_missing_key_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope.ctx"):
        read_key_file(tmp_path / "nope.ctx", secret=True)
