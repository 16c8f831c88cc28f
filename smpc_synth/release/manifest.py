"""The provenance manifest: what a run used and produced, hashed and signed by its parties.

``manifest.json`` sits in the run directory and records the SHA-256 of the resolved config
(canonical JSON, equal to :meth:`RunConfig.fingerprint`), of the metrics, and of each file
(schema, ``generator.pt``, ``synthetic.csv``, ...) by a path relative to the manifest; the
package version; every member's certificate (PEM and fingerprint) and the session CA; the
release gate's decision. Each signer signs the canonical JSON of everything but the
``signatures`` table with the private key of its certificate (EC, Ed25519 or RSA), so every
party can vouch for the same body independently and in any order.

:func:`verify_manifest` checks every hash, every certificate (fingerprint, name, chain to the
CA, validity at signing time) and every expected signature, and names each item that fails.
A manifest must be signed (unless the caller accepts unsigned ones, as a plaintext
``smpc-synth train`` run writes them), its file paths must stay inside the run directory, and
its every field must have the shape written here: anything else is refused naming the key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from smpc_synth.errors import InputError

FORMAT = "smpc-synth-manifest/1"
MANIFEST_NAME = "manifest.json"
SCHEMA_LABEL = "schema"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest holds hashes and certificates only
_CHUNK = 1 << 20


# -- canonical forms and hashes -----------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as plain JSON types (numpy scalars as numbers, NaN as None, paths as text)."""
    from smpc_synth.eval.report import to_json_types

    return to_json_types(json.loads(json.dumps(to_json_types(value), default=str)))


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, ASCII: the same bytes for the same value on every machine."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def signed_body(manifest: Mapping[str, Any]) -> bytes:
    """The bytes every signature covers: the canonical manifest without its signatures."""
    return canonical_json({k: v for k, v in manifest.items() if k != "signatures"})


# -- building and signing -----------------------------------------------------------------


def build_manifest(
    run_dir: str | Path,
    *,
    config: Mapping[str, Any],
    schema_path: str | Path | None,
    version: str,
    artifacts: Mapping[str, str | Path],
    certificates: Mapping[str, str | Path],
    metrics: Mapping[str, Any],
    gate: Mapping[str, Any],
    ca_path: str | Path | None = None,
    signers: Iterable[str] | None = None,
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An unsigned manifest for the files of ``run_dir``.

    ``privacy`` is the DP ledger of a run with ``dp.epsilon`` (epsilon, delta, accountant,
    unit, and each part with its mechanism): signed with the rest; None for a run without.

    ``artifacts`` maps a label (``generator.pt``) to a file; ``certificates`` a member name to
    its certificate. ``signers`` are the members whose signature :func:`verify_manifest` will
    require (default: every member with a certificate).
    """
    root = Path(run_dir).resolve()
    files = {label: _file_entry(root, Path(path), label) for label, path in artifacts.items()}
    if schema_path is not None:
        files[SCHEMA_LABEL] = _file_entry(root, Path(schema_path), SCHEMA_LABEL)
    config_value, metrics_value = plain(dict(config)), plain(dict(metrics))
    expected = sorted(certificates) if signers is None else sorted(set(signers))
    unknown = [s for s in expected if s not in certificates]
    if unknown:
        raise InputError(f"manifest: signer(s) {', '.join(unknown)} have no certificate")
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "package": {"name": "smpc-synth", "version": version},
        "config": {"sha256": sha256_json(config_value), "value": config_value},
        "metrics": {"sha256": sha256_json(metrics_value), "value": metrics_value},
        "gate": plain(dict(gate)),
        "privacy": plain(dict(privacy)) if privacy is not None else None,
        "files": files,
        "ca": _certificate_entry(Path(ca_path)) if ca_path is not None else None,
        "certificates": {n: _certificate_entry(Path(p)) for n, p in sorted(certificates.items())},
        "signers": expected,
        "signatures": {},
    }


def _file_entry(root: Path, path: Path, label: str) -> dict[str, Any]:
    path = path.resolve()
    if not path.is_file():
        raise InputError(f"manifest: {label} file {path} does not exist")
    return {
        "path": Path(os.path.relpath(path, root)).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def _certificate_entry(path: Path) -> dict[str, str]:
    from smpc_synth.net.certs import fingerprint
    from smpc_synth.net.tls import TlsFiles

    pem = TlsFiles.read_file(path).decode()
    return {"fingerprint": fingerprint(path), "pem": pem}


def sign_manifest(manifest: dict[str, Any], signer: str, key_path: str | Path) -> None:
    """Add (or replace) ``signer``'s signature over the manifest body with its private key.

    The key must belong to the signer's certificate in the manifest.
    """
    entry = manifest.get("certificates", {}).get(signer)
    if entry is None:
        raise InputError(f"manifest: {signer!r} has no certificate in the manifest")
    key = _load_private_key(Path(key_path))
    cert = x509.load_pem_x509_certificate(entry["pem"].encode())
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise InputError(f"{key_path}: this key does not belong to {signer}'s certificate")
    algorithm, signature = _sign(key, signed_body(manifest))
    manifest.setdefault("signatures", {})[signer] = {
        "algorithm": algorithm,
        "certificate": entry["fingerprint"],
        "value": base64.b64encode(signature).decode(),
    }


def _load_private_key(path: Path):
    from smpc_synth.net.tls import TlsFiles

    try:
        return serialization.load_pem_private_key(TlsFiles.read_key(path), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _sign(key, body: bytes) -> tuple[str, bytes]:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519", key.sign(body)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ecdsa-sha256", key.sign(body, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return "rsa-pss-sha256", key.sign(body, _PSS, hashes.SHA256())
    raise InputError(f"unsupported key type {type(key).__name__}: use Ed25519, EC or RSA")


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)


def _verify_signature(public_key, algorithm: str, signature: bytes, body: bytes) -> None:
    """Raises InvalidSignature (also when the algorithm does not fit the key)."""
    if algorithm == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, body)
    elif algorithm == "ecdsa-sha256" and isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    elif algorithm == "rsa-pss-sha256" and isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, body, _PSS, hashes.SHA256())
    else:
        raise InvalidSignature(f"algorithm {algorithm!r} does not fit the certificate's key")


def write_manifest(manifest: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``manifest`` as indented JSON (the signatures cover its canonical form)."""
    path = Path(path)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


# -- the shape of a manifest --------------------------------------------------------------

_Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Text = Annotated[str, Field(max_length=1 << 16)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Digest(_Shape):
    sha256: _Hex64
    value: JsonValue


class _File(_Shape):
    path: _Text
    sha256: _Hex64
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside_run(cls, value: str) -> str:
        """Relative, no '..': a manifest names files of its own run directory only."""
        parts = PurePosixPath(value).parts
        if not value or "\0" in value or "\\" in value or PurePosixPath(value).is_absolute():
            raise ValueError("must be a relative path inside the run directory")
        if ".." in parts or parts in ((), (".",)):
            raise ValueError("must name a file inside the run directory (no '..')")
        return value


class _Certificate(_Shape):
    fingerprint: _Hex64
    pem: _Text


class _Signature(_Shape):
    algorithm: Literal["ed25519", "ecdsa-sha256", "rsa-pss-sha256"]
    certificate: _Hex64
    value: _Text


class _Gate(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    released: bool | None = None
    override: bool | None = None


class _Package(_Shape):
    name: _Text
    version: _Text


class _Manifest(_Shape):
    format: Literal["smpc-synth-manifest/1"]
    created: _Text
    package: _Package
    config: _Digest
    metrics: _Digest
    gate: _Gate
    privacy: dict[str, JsonValue] | None = None  # the DP ledger of a run with dp.epsilon
    files: dict[str, _File]
    ca: _Certificate | None
    certificates: dict[str, _Certificate]
    signers: list[_Text]
    signatures: dict[str, _Signature]

    @field_validator("created")
    @classmethod
    def _timestamp(cls, value: str) -> str:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO 8601 time") from None
        if parsed.tzinfo is None:
            raise ValueError("must be an ISO 8601 time with a time zone")
        return value

    @field_validator("signers")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a signer twice")
        return value


def _key_of(location: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest at ``path``; InputError if it is missing, unreadable or not a manifest,
    or if any field lacks the shape :func:`build_manifest` writes (naming the key)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes: not a manifest")
        manifest = json.loads(path.read_text(), parse_constant=_no_constant)
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not a smpc-synth manifest (expected format {FORMAT!r})")
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as exc:
        problems = [
            f"key '{_key_of(e['loc'])}': {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)[:3]
        ]
        more = exc.error_count() - len(problems)
        tail = f" (and {more} more)" if more > 0 else ""
        raise InputError(f"{path}: malformed manifest: {'; '.join(problems)}{tail}") from None
    except RecursionError:
        raise InputError(f"{path}: malformed manifest: nested too deeply") from None
    return manifest


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One verified item: what it is, whether it holds, and the detail."""

    item: str
    ok: bool
    detail: str


@dataclass
class VerifyResult:
    """Every check made on a manifest; ``ok`` only if all of them hold."""

    path: Path
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, item: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(item, ok, detail))

    def describe(self) -> str:
        lines = [f"{'OK  ' if c.ok else 'FAIL'} {c.item}: {c.detail}" for c in self.checks]
        lines += [f"note: {n}" for n in self.notes]
        failed = self.failures
        verdict = (
            f"manifest verified: {len(self.checks)} checks passed"
            if not failed
            else f"manifest verification FAILED: {', '.join(c.item for c in failed)}"
        )
        return "\n".join([*lines, verdict])


def verify_manifest(
    path: str | Path, *, ca_path: str | Path | None = None, allow_unsigned: bool = False
) -> VerifyResult:
    """Check every hash, certificate and signature of the manifest at ``path``.

    Files are looked up relative to the manifest and must lie inside its directory.
    ``ca_path`` pins the trust anchor (the session CA distributed out of band); without it,
    certificates are checked against the CA embedded in the manifest, which proves
    consistency but not origin. A manifest without signatures fails unless
    ``allow_unsigned``. Raises InputError only if the manifest (or ``ca_path``) cannot be
    read or is malformed.
    """
    path = Path(path)
    manifest = load_manifest(path)
    anchor = _pinned_anchor(ca_path)
    result = VerifyResult(path)
    _check_values(manifest, result)
    _check_files(manifest, path.parent, result)
    certificates = _check_certificates(manifest, anchor, result)
    _check_signatures(manifest, certificates, anchor is not None, allow_unsigned, result)
    return result


def _pinned_anchor(ca_path: str | Path | None) -> x509.Certificate | None:
    if ca_path is None:
        return None
    from smpc_synth.net.tls import TlsFiles

    try:
        return x509.load_pem_x509_certificate(TlsFiles.read_file(Path(ca_path)))
    except ValueError as exc:
        raise InputError(f"--ca {ca_path}: not a PEM certificate ({exc})") from None


def _check_values(manifest: dict[str, Any], result: VerifyResult) -> None:
    for section in ("config", "metrics"):
        entry = manifest.get(section) or {}
        try:
            actual = sha256_json(entry.get("value"))
        except ValueError:
            actual = "not canonical JSON"
        result.add(
            section,
            actual == entry.get("sha256"),
            "sha256 matches" if actual == entry.get("sha256") else "sha256 of its value differs",
        )


def _check_files(manifest: dict[str, Any], root: Path, result: VerifyResult) -> None:
    inside = root.resolve()
    for label, entry in sorted(manifest["files"].items()):
        file = root / entry["path"]
        if not file.resolve().is_relative_to(inside):  # a symbolic link out of the run
            result.add(f"file {label}", False, f"{file} leads outside {root}")
            continue
        if not file.is_file():
            result.add(f"file {label}", False, f"{file} is missing")
            continue
        try:
            actual = sha256_file(file)
        except OSError as exc:
            result.add(f"file {label}", False, f"{file} cannot be read ({exc.strerror})")
            continue
        ok = actual == entry.get("sha256")
        detail = "sha256 matches" if ok else f"sha256 {actual[:16]}... differs from the manifest"
        result.add(f"file {label}", ok, detail)
    gate = manifest.get("gate") or {}
    if gate.get("released") is False:
        stray = [n for n in ("synthetic.csv",) if (root / n).exists()]
        result.add(
            "gate",
            not stray,
            "refused release; no synthetic data present"
            if not stray
            else f"refused release, yet {', '.join(stray)} is present next to the manifest",
        )
    elif gate.get("override"):
        result.notes.append("the release gate failed and was overridden (see 'gate')")


def _check_certificates(
    manifest: dict[str, Any], pinned: x509.Certificate | None, result: VerifyResult
) -> dict[str, x509.Certificate]:
    """Valid member certificates by name; each problem becomes a failed check."""
    anchor = _trust_anchor(manifest, pinned, result)
    created = _created(manifest)
    valid: dict[str, x509.Certificate] = {}
    for name, entry in sorted(manifest["certificates"].items()):
        item = f"certificate {name}"
        try:
            cert = x509.load_pem_x509_certificate(entry["pem"].encode())
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            result.add(item, False, f"cannot be read: {exc!r}")
            continue
        try:
            problem = _certificate_problem(cert, entry, name, anchor, created)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # parsed lazily
            problem = f"cannot be read: {exc!r}"
        result.add(item, problem is None, problem or "fingerprint, name and chain hold")
        if problem is None:
            valid[name] = cert
    return valid


def _trust_anchor(
    manifest: dict[str, Any], pinned: x509.Certificate | None, result: VerifyResult
) -> x509.Certificate | None:
    embedded = manifest.get("ca")
    if pinned is not None:
        fp = pinned.fingerprint(hashes.SHA256()).hex()
        ok = embedded is None or embedded.get("fingerprint") == fp
        result.add("ca", ok, f"pinned {fp[:16]}..." + ("" if ok else " differs from embedded CA"))
        return pinned
    if embedded is None:
        result.notes.append("no CA in the manifest and none given: chains not checked")
        return None
    try:
        cert = x509.load_pem_x509_certificate(embedded["pem"].encode())
    except (KeyError, ValueError) as exc:
        result.add("ca", False, f"embedded CA cannot be read: {exc}")
        return None
    fp = cert.fingerprint(hashes.SHA256()).hex()
    result.add("ca", fp == embedded.get("fingerprint"), f"embedded, fingerprint {fp}")
    result.notes.append("trust anchor is the CA embedded in the manifest; pin it with --ca")
    return cert


def _created(manifest: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(manifest["created"])
    except (KeyError, TypeError, ValueError):
        return None


def _certificate_problem(
    cert: x509.Certificate,
    entry: dict[str, Any],
    name: str,
    anchor: x509.Certificate | None,
    created: dt.datetime | None,
) -> str | None:
    if cert.fingerprint(hashes.SHA256()).hex() != entry.get("fingerprint"):
        return "fingerprint does not match the embedded certificate"
    if name not in _names(cert):
        return f"certificate names {sorted(_names(cert))}, not {name!r}"
    if anchor is not None:
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return "not issued by the CA"
    if created is not None and not (
        cert.not_valid_before_utc <= created <= cert.not_valid_after_utc
    ):
        return f"not valid at signing time {created.isoformat()}"
    return None


def _names(cert: x509.Certificate) -> set[str]:
    names = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return {str(n) for n in names}


def _check_signatures(
    manifest: dict[str, Any],
    certificates: dict[str, x509.Certificate],
    pinned: bool,
    allow_unsigned: bool,
    result: VerifyResult,
) -> None:
    body = signed_body(manifest)
    signatures = manifest["signatures"] or {}
    expected = list(manifest["signers"])
    if not expected and not signatures:
        if pinned:
            result.add("signatures", False, "the manifest is not signed, but a CA was pinned")
        elif not allow_unsigned:
            result.add(
                "signatures",
                False,
                "the manifest is not signed, so nothing proves who wrote it "
                "(accept an unsigned run explicitly with --allow-unsigned)",
            )
        else:
            result.notes.append("UNSIGNED manifest: hashes checked, origin not proven")
    for signer in sorted(set(expected) | set(signatures)):
        item = f"signature {signer}"
        entry = signatures.get(signer)
        if entry is None:
            result.add(item, False, "missing (the manifest expects this member to sign)")
        elif signer not in expected:
            result.add(item, False, "from a member the manifest does not list as a signer")
        elif signer not in certificates:
            result.add(item, False, "its certificate failed its checks")
        else:
            problem = _signature_problem(entry, certificates[signer], body)
            result.add(item, problem is None, problem or f"valid ({entry.get('algorithm')})")


def _signature_problem(entry: Any, cert: x509.Certificate, body: bytes) -> str | None:
    if not isinstance(entry, dict):
        return "is not a signature entry"
    if entry.get("certificate") != cert.fingerprint(hashes.SHA256()).hex():
        return "made with a different certificate than the one in the manifest"
    try:
        signature = base64.b64decode(entry.get("value", ""), validate=True)
        _verify_signature(cert.public_key(), str(entry.get("algorithm")), signature, body)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return "does not match the manifest body (the manifest or the signature was changed)"
    return None
