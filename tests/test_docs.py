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


def test_results_page_and_readme_headline_match_the_snapshots():
    """docs/results.md and the README's headline table are generated: `make results`."""
    import importlib.util

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(
        "render_results", repo / "benchmarks" / "render_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (repo / "docs" / "results.md").read_text()
    readme = (repo / "README.md").read_text()
    assert module.render_readme(readme) == readme


# Product text speaks of the product only: no development history, no files outside the
# repository. Built from pieces so this file does not match itself.
_FORBIDDEN = [
    r"\bDESIGN" + r"\.md",
    r"\bANCHORS" + r"\.md",
    r"(?i)\bthe " + r"issue\b",
    r"(?i)\b\d+(st|nd|rd|th) " + r"session",
    r"(?i)\bearlier " + r"host",
]


def test_product_text_cites_nothing_outside_the_repository():
    import re
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    patterns = [re.compile(p) for p in _FORBIDDEN]
    hits = []
    for name in files:
        path = repo / name
        if name == "CHANGELOG.md" or not path.is_file() or path.suffix in {".png", ".pt"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [
            f"{name}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if any(p.search(line) for p in patterns)
        ]
    assert not hits, "product text narrates development:\n" + "\n".join(hits[:20])
