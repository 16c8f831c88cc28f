"""Certificates for mutual TLS: one CA, one pair per member, private keys 0600."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from smpc_synth.errors import InputError
from smpc_synth.net import TlsFiles, fingerprint, write_certificates

NAMES = ["alice", "bob", "carol", "dealer", "aggregator"]


def test_writes_ca_and_one_pair_per_member(tmp_path):
    files = write_certificates(NAMES, tmp_path / "certs")
    assert sorted(files) == sorted(NAMES)
    ca = x509.load_pem_x509_certificate((tmp_path / "certs" / "ca.pem").read_bytes())
    for name, member in files.items():
        cert = x509.load_pem_x509_certificate(member.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [name]
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert cert.not_valid_after_utc > cert.not_valid_before_utc
        assert member.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_private_keys_are_0600(tmp_path):
    files = write_certificates(["alice", "bob"], tmp_path)
    for key in [tmp_path / "ca.key", *(f.key for f in files.values())]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_fingerprint_is_sha256_of_der(tmp_path):
    files = write_certificates(["alice", "bob"], tmp_path)
    cert = x509.load_pem_x509_certificate(files["alice"].cert.read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert fingerprint(files["alice"].cert) == hashlib.sha256(der).hexdigest()
    assert fingerprint(files["alice"].cert) != fingerprint(files["bob"].cert)


@pytest.mark.parametrize(
    ("names", "named"),
    [
        (["alice", ""], "''"),
        (["alice", "Bob"], "'Bob'"),
        (["alice", "bob_1"], "'bob_1'"),
        (["alice", "-x"], "'-x'"),
        (["alice", "bob", "alice"], "alice"),
        (["ca", "bob"], "'ca'"),
        ([], "at least one"),
    ],
)
def test_invalid_names_refused(tmp_path, names, named):
    with pytest.raises(InputError) as info:
        write_certificates(names, tmp_path)
    assert named in str(info.value)
    assert not (tmp_path / "ca.key").exists()


def test_existing_ca_not_overwritten(tmp_path):
    write_certificates(["alice"], tmp_path)
    with pytest.raises(InputError, match=r"ca\.key already exists"):
        write_certificates(["bob"], tmp_path)


def test_missing_certificate_file_named(tmp_path):
    files = write_certificates(["alice"], tmp_path)
    missing = TlsFiles(ca=files["alice"].ca, cert=tmp_path / "nobody.pem", key=files["alice"].key)
    with pytest.raises(InputError, match=r"nobody\.pem"):
        missing.read()
    with pytest.raises(InputError, match=r"nobody\.pem"):
        fingerprint(tmp_path / "nobody.pem")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_private_key_open_to_others_is_refused_before_any_traffic(tmp_path, mode):
    """As ssh refuses an unprotected key: a TLS key group or others may read is refused."""
    from smpc_synth.config import NetworkConfig
    from smpc_synth.net import PeerMesh
    from smpc_synth.release.manifest import _load_private_key

    files = write_certificates(["alice", "bob"], tmp_path)
    files["alice"].key.chmod(mode)
    with pytest.raises(InputError, match=r"alice\.key.*chmod 600") as info:
        PeerMesh("alice", "127.0.0.1:0", {"bob": "127.0.0.1:1"}, files["alice"], NetworkConfig())
    assert f"{mode:04o}" in str(info.value)
    with pytest.raises(InputError, match=r"alice\.key"):
        _load_private_key(files["alice"].key)  # signing the manifest reads it too
    files["alice"].key.chmod(0o400)  # owner-only, read-only: fine
    assert files["alice"].read()[2].startswith(b"-----BEGIN PRIVATE KEY-----")
