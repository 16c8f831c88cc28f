"""The provenance manifest: a fresh one verifies; one changed byte anywhere is named."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from signed_runs import MEMBERS, SIGNERS, release_signed_run

from smpc_synth import __version__
from smpc_synth.config import RunConfig
from smpc_synth.errors import InputError
from smpc_synth.net.certs import fingerprint, write_certificates
from smpc_synth.release import (
    build_manifest,
    load_manifest,
    release_run,
    sign_manifest,
    verify_main,
    verify_manifest,
    write_manifest,
)
from smpc_synth.release.manifest import signed_body


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run: real files, certificates from net/certs, a manifest signed by two."""
    run = tmp_path / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=50), "y": rng.integers(0, 3, 50)})
    config = tomli_w.dumps({"mode": RunConfig().mode, "seed": RunConfig().seed})
    decision = release_signed_run(run, frame, config)
    assert decision.released
    return run


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _failed(run: Path, **kwargs) -> list[str]:
    return [c.item for c in verify_manifest(run / "manifest.json", **kwargs).failures]


def test_fresh_manifest_verifies(run_dir, capsys):
    manifest = load_manifest(run_dir / "manifest.json")
    assert set(manifest["files"]) == {
        "config.toml",
        "schema",
        "generator.pt",
        "synthetic.csv",
        "metrics.json",
    }
    assert (
        manifest["config"]["sha256"]
        == replace(RunConfig(), gate=replace(RunConfig().gate, enabled=False)).fingerprint()
    )
    assert manifest["package"]["version"] == __version__
    assert manifest["certificates"]["bob"]["fingerprint"] == fingerprint(
        run_dir / "certs" / "bob.pem"
    )
    assert sorted(manifest["signatures"]) == SIGNERS
    result = verify_manifest(run_dir / "manifest.json", ca_path=run_dir / "certs" / "ca.pem")
    assert result.ok, result.describe()
    assert verify_main(run_dir) == 0
    assert "manifest verified" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "item"),
    [
        ("synthetic.csv", "file synthetic.csv"),
        ("config.toml", "file config.toml"),
        ("generator.pt", "file generator.pt"),
        ("schema.toml", "file schema"),
    ],
)
def test_one_changed_byte_in_a_file_is_named(run_dir, name, item, capsys):
    _flip_byte(run_dir / name)
    assert _failed(run_dir) == [item]
    assert verify_main(run_dir / "manifest.json") == 1
    assert item in capsys.readouterr().out


def test_changed_config_in_manifest_breaks_hash_and_every_signature(run_dir):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["value"]["seed"] += 1
    path.write_text(json.dumps(manifest))
    assert _failed(run_dir) == ["config", "signature alice", "signature bob"]


def test_rehashed_config_still_breaks_every_signature(run_dir):
    from smpc_synth.release.manifest import sha256_json

    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["gate"]["enabled"] = True
    manifest["config"]["value"]["gate"]["enabled"] = True
    manifest["config"]["sha256"] = sha256_json(manifest["config"]["value"])
    path.write_text(json.dumps(manifest))
    assert _failed(run_dir) == ["signature alice", "signature bob"]


def test_one_changed_byte_in_a_signature_is_named(run_dir):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(manifest["signatures"]["bob"]["value"]))
    raw[len(raw) // 2] ^= 0x01
    manifest["signatures"]["bob"]["value"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(manifest))
    assert _failed(run_dir) == ["signature bob"]


def test_removed_signature_and_foreign_ca_are_named(run_dir, tmp_path):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["signatures"]["alice"]
    path.write_text(json.dumps(manifest))
    assert _failed(run_dir) == ["signature alice"]

    other = tmp_path / "other-ca"
    write_certificates(["alice"], other)
    failed = _failed(run_dir, ca_path=other / "ca.pem")
    assert failed[0] == "ca"
    assert {f"certificate {m}" for m in MEMBERS} <= set(failed)


def test_refused_run_with_stray_synthetic_csv_fails(run_dir):
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["gate"]["released"] = False
    path.write_text(json.dumps(manifest))
    failed = _failed(run_dir)
    assert "gate" in failed and "signature alice" in failed


def test_key_must_match_the_signers_certificate(run_dir):
    manifest = load_manifest(run_dir / "manifest.json")
    with pytest.raises(InputError, match="does not belong"):
        sign_manifest(manifest, "alice", run_dir / "certs" / "bob.key")
    with pytest.raises(InputError, match="no certificate"):
        sign_manifest(manifest, "mallory", run_dir / "certs" / "bob.key")


def test_unreadable_manifest_exits_2(tmp_path, capsys):
    assert verify_main(tmp_path / "absent.json") == 2
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    assert verify_main(bad) == 2
    bad.write_text(json.dumps({"format": "something-else"}))
    assert verify_main(bad) == 2
    assert "not a smpc-synth manifest" in capsys.readouterr().err


def _ed25519_member(out: Path, name: str) -> tuple[Path, Path, Path]:
    """An Ed25519 CA and member certificate, as another deployment might issue them."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    ca_key, key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed-ca")])

    def issue(subject: x509.Name, public, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        return builder.sign(ca_key, None)

    member = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    paths = out / "ca.pem", out / f"{name}.pem", out / f"{name}.key"
    paths[0].write_bytes(issue(ca_name, ca_key.public_key(), True).public_bytes(_PEM))
    paths[1].write_bytes(issue(member, key.public_key(), False).public_bytes(_PEM))
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


_PEM = serialization.Encoding.PEM


def test_ed25519_certificates_sign_and_verify(tmp_path):
    ca, cert, key = _ed25519_member(tmp_path, "erin")
    (tmp_path / "synthetic.csv").write_text("x\n1\n2\n")
    manifest = build_manifest(
        tmp_path,
        config={"seed": 1},
        schema_path=None,
        version=__version__,
        artifacts={"synthetic.csv": tmp_path / "synthetic.csv"},
        certificates={"erin": cert},
        metrics={},
        gate={"released": True},
        ca_path=ca,
    )
    sign_manifest(manifest, "erin", key)
    assert manifest["signatures"]["erin"]["algorithm"] == "ed25519"
    body = signed_body(manifest)
    write_manifest(manifest, tmp_path / "manifest.json")
    assert signed_body(load_manifest(tmp_path / "manifest.json")) == body
    assert verify_manifest(tmp_path / "manifest.json", ca_path=ca).ok
    _flip_byte(tmp_path / "synthetic.csv", offset=2)
    assert _failed(tmp_path) == ["file synthetic.csv"]


def test_relative_run_directory_records_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("run")
    run.mkdir()
    (run / "synthetic.pending.csv").write_text("x\n1\n")
    cfg = RunConfig()
    release_run(
        run,
        candidate=run / "synthetic.pending.csv",
        report={},
        policy=replace(cfg.gate, enabled=False),
        config=cfg.to_dict(),
        metrics={},
    )
    manifest = load_manifest(run / "manifest.json")
    assert manifest["files"]["synthetic.csv"]["path"] == "synthetic.csv"
    assert verify_manifest(tmp_path / "run" / "manifest.json", allow_unsigned=True).ok


def _edit(run: Path, change) -> Path:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../../../../../../etc/passwd", "no '..'"),
        ("/etc/passwd", "relative path"),
        ("certs/../../outside.txt", "no '..'"),
        ("", "relative path"),
    ],
)
def test_file_paths_outside_the_run_are_refused_naming_the_key(run_dir, path, why, capsys):
    """A path out of the run directory was hashed (a verifier could be made to read any
    file, and to pass a manifest that vouches for it)."""

    def change(manifest):
        manifest["files"]["synthetic.csv"]["path"] = path

    assert verify_main(_edit(run_dir, change)) == 2
    err = capsys.readouterr().err
    assert "key 'files.synthetic.csv.path'" in err and why in err


def test_symbolic_link_out_of_the_run_fails_its_check(run_dir, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_bytes((run_dir / "synthetic.csv").read_bytes())
    (run_dir / "synthetic.csv").unlink()
    (run_dir / "synthetic.csv").symlink_to(outside)
    assert _failed(run_dir) == ["file synthetic.csv"]
    result = verify_manifest(run_dir / "manifest.json")
    assert "leads outside" in result.describe()


def test_stripped_signatures_fail_unless_unsigned_is_accepted(run_dir, capsys):
    """Removing every signature and signer used to verify (the certificates were embedded,
    but nothing required them to have signed)."""

    def strip(manifest):
        manifest["signatures"] = {}
        manifest["signers"] = []

    path = _edit(run_dir, strip)
    assert _failed(run_dir) == ["signatures"]
    assert verify_main(path) == 1
    assert "--allow-unsigned" in capsys.readouterr().out
    assert verify_manifest(path, allow_unsigned=True).ok  # hashes still hold
    assert _failed(run_dir, ca_path=run_dir / "certs" / "ca.pem", allow_unsigned=True) == [
        "signatures"
    ]


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda m: m["files"]["generator.pt"].update(sha256=5), "files.generator.pt.sha256"),
        (lambda m: m["files"]["schema"].update(bytes=-1), "files.schema.bytes"),
        (lambda m: m["files"].update({"x": "a.csv"}), "files.x"),
        (lambda m: m["certificates"].update(alice="pem"), "certificates.alice"),
        (lambda m: m.update(signers=[{"a": 1}]), "signers[0]"),
        (lambda m: m.update(signers=["alice", "alice"]), "signers"),
        (lambda m: m.update(ca=[]), "ca"),
        (lambda m: m.update(created="yesterday"), "created"),
        (lambda m: m.update(config=[1]), "config"),
        (lambda m: m["signatures"]["bob"].update(algorithm="md5"), "signatures.bob.algorithm"),
        (lambda m: m["gate"].update(released="no"), "gate.released"),
        (lambda m: m.pop("metrics"), "metrics"),
        (lambda m: m.update(extra=1), "extra"),
    ],
)
def test_malformed_field_exits_2_naming_the_key(run_dir, change, key, capsys):
    assert verify_main(_edit(run_dir, change)) == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err, err


def test_pinned_ca_that_is_not_a_certificate_exits_2(run_dir, tmp_path, capsys):
    not_a_cert = tmp_path / "key.pem"
    not_a_cert.write_bytes((run_dir / "certs" / "alice.key").read_bytes())
    assert verify_main(run_dir, ca=not_a_cert) == 2
    assert "--ca" in capsys.readouterr().err
