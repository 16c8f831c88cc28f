"""A certificate authority and one key/certificate per session member, for mutual TLS.

``smpc-synth certs --names alice,bob,carol --out DIR`` writes ``ca.pem``, ``ca.key`` and
``NAME.pem`` / ``NAME.key`` per member. Each certificate names its member in the subject CN
and as its only DNS subject-alternative name, which is what peers check. Private keys are
created with mode 0600. Distribute ``ca.pem`` plus each member's own pair; keep ``ca.key``
offline.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smpc_synth.errors import InputError
from smpc_synth.net.tls import TlsFiles

CA_NAME = "ca"  # file stem of the authority; no member may use it
CA_VALID_DAYS = 5 * 365
MEMBER_VALID_DAYS = 365
CLOCK_SKEW = dt.timedelta(minutes=5)  # certificates are valid from a little before now
# One DNS label, lower case (peers compare names exactly).
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_names(names: list[str]) -> None:
    """InputError naming every name that is empty, repeated, reserved or not a DNS label."""
    if not names:
        raise InputError("--names: give at least one member name, e.g. alice,bob,carol")
    bad = [repr(n) for n in names if not _NAME.match(n)]
    if bad:
        raise InputError(
            f"--names: {', '.join(bad)} not usable as a certificate name "
            "(lower-case letters, digits and inner hyphens, at most 63 characters)"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"--names: {', '.join(duplicates)} given more than once")
    if CA_NAME in names:
        raise InputError(f"--names: {CA_NAME!r} is reserved for the certificate authority")


def write_certificates(names: list[str], out_dir: str | Path) -> dict[str, TlsFiles]:
    """Create a CA and a key/certificate per name in ``out_dir``; return each member's files.

    Refuses to overwrite an existing CA key, since certificates issued by it may be in use.
    """
    validate_names(names)
    out = Path(out_dir)
    ca_key_path, ca_path = out / f"{CA_NAME}.key", out / f"{CA_NAME}.pem"
    if ca_key_path.exists():
        raise InputError(f"{ca_key_path} already exists; choose another --out or remove it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {out}: {exc.strerror}") from None
    now = dt.datetime.now(dt.UTC) - CLOCK_SKEW
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, now)
    _write_key(ca_key_path, ca_key)
    _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    files = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _member_certificate(name, key, ca_key, ca_cert, now)
        files[name] = TlsFiles(ca=ca_path, cert=out / f"{name}.pem", key=out / f"{name}.key")
        _write_key(files[name].key, key)
        _write(files[name].cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def fingerprint(cert_path: str | Path) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (for the run manifest)."""
    cert = x509.load_pem_x509_certificate(TlsFiles.read_file(Path(cert_path)))
    return cert.fingerprint(hashes.SHA256()).hex()


def _subject(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_subject("smpc-synth session CA"))
        .issuer_name(_subject("smpc-synth session CA"))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _member_certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> x509.Certificate:
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=MEMBER_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode, so a key is never readable by others, even briefly.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)
