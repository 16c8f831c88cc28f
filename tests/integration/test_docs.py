"""The documentation keeps up with the code it describes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from smpc_synth.config import RunConfig, sections
from smpc_synth.config_reference import DOCS_PAGE, reference, render_page
from smpc_synth.runtime.party_config import PARTY_FILE_TABLES


def test_configuration_reference_is_generated_from_the_schema():
    """docs/configuration.md's tables are exactly what the config schema generates."""
    page = DOCS_PAGE.read_text(encoding="utf-8")
    assert render_page(page) == page, "docs/configuration.md is stale: run `make docs`"


def test_the_reference_lists_every_key_of_every_table():
    text = reference()
    tables = [RunConfig, *sections(RunConfig).values(), *PARTY_FILE_TABLES.values()]
    nested = set(sections(RunConfig))
    keys = [f.name for t in tables for f in dataclasses.fields(t) if f.name not in nested]
    assert [k for k in keys if f"| `{k}` |" not in text] == []
    assert all(f"`[run.{name}]`" in text for name in nested)


def test_the_local_party_configs_load_and_agree(tmp_path):
    """parties/local/*/*.toml parse (with certificates and data files in place) and each
    setup shares one [run], distinct ports and consistent peers."""
    import shutil

    from smpc_synth.net import write_certificates
    from smpc_synth.runtime.party_config import load_party_config

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "parties" / "local", tmp_path / "local", ignore=_generated)
    write_certificates(["alice", "bob", "dealer", "aggregator"], tmp_path / "local" / "certs")
    data = tmp_path / "local" / "data"
    data.mkdir()
    for name in ("alice", "bob"):
        (data / f"{name}.csv").write_text("x\n1\n")
    (data / "schema.toml").write_text("")
    services = {"mpc": "dealer", "federated": "aggregator"}
    for setup, service in services.items():
        loaded = [load_party_config(p) for p in sorted((tmp_path / "local" / setup).glob("*.toml"))]
        assert {c.name for c in loaded} == {"alice", "bob", service}
        assert len({c.run.fingerprint() for c in loaded}) == 1  # the same [run] everywhere
        assert {c.run.mode for c in loaded} == {setup}
        assert all(c.data_parties == ("alice", "bob") for c in loaded)
        listen = {c.name: c.listen for c in loaded}
        assert len(set(listen.values())) == 3  # one port each
        for c in loaded:
            assert {m.name: m.address for m in c.peers} == {
                n: a for n, a in listen.items() if n != c.name
            }


def _generated(folder, names):
    return [n for n in names if n in {"data", "certs", "out"}]


def test_results_page_and_readme_headline_match_the_snapshots():
    """docs/results.md and the README's headline table are generated: `make results`."""
    import importlib.util

    repo = Path(__file__).resolve().parents[2]
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

    repo = Path(__file__).resolve().parents[2]
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
