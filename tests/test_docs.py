"""The documentation keeps up with the code it describes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from smpc_synth.config import RunConfig

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def _keys(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def test_every_run_setting_is_documented():
    text = DOCS.read_text()
    cfg = RunConfig()
    sections = [k for k in _keys(cfg) if dataclasses.is_dataclass(getattr(cfg, k))]
    missing = [k for k in _keys(cfg) if k not in sections and f"`{k}`" not in text]
    missing += [f"[run.{k}]" for k in sections if f"`[run.{k}]`" not in text]
    for section in sections:
        missing += [f"{section}.{k}" for k in _keys(getattr(cfg, section)) if f"`{k}`" not in text]
    assert not missing, f"undocumented in docs/configuration.md: {missing}"


def test_example_party_configs_load(tmp_path):
    """parties/*.toml parse with certificates and data files in place."""
    import shutil

    from smpc_synth.net import write_certificates
    from smpc_synth.runtime.party_config import load_party_config

    repo = Path(__file__).resolve().parent.parent
    for src in (repo / "parties").glob("*.toml"):
        shutil.copy(src, tmp_path / src.name)
    write_certificates(["alice", "bob", "carol", "dealer"], tmp_path / "certs")
    loaded = [load_party_config(p) for p in sorted(tmp_path.glob("*.toml"))]
    assert {c.name for c in loaded} == {"alice", "bob", "carol", "dealer"}
    assert len({c.run.fingerprint() for c in loaded}) == 1  # the same [run] everywhere
    assert all(c.data_parties == ("alice", "bob", "carol") for c in loaded)
