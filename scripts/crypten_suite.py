#!/usr/bin/env python
"""Run CrypTen's own test suite against smpc-synth's patches and communicators.

CrypTen's ``test/`` folder, pinned at commit ``891fa47`` (the code of the crypten 0.4.1
wheel), is fetched into a cache directory outside the repository and run three ways
(see ``scripts/crypten_suite_plugin.py``): ``stock`` (CrypTen as shipped, with only the
fixes it needs on this torch), ``gloo`` (every patch, our protocols and the dealer, over
CrypTen's gloo communicator) and ``grpc`` (the same over our gRPC communicator).

Every test that passes on stock must pass in the other configurations, except the
differences listed, each with its reason, in ``docs/crypten-compat.md`` (the table under
"Known differences"). The command prints pass/fail/skip counts per file and
configuration and exits 1 if a test fails where stock passes without being listed there.

Sources for ``test/`` (``--source``):

- ``wheel`` (default): the copy the crypten 0.4.1 wheel installs (it ships ``test/`` as a
  top-level package, shadowed by the standard library's ``test``), checked file by file
  against the wheel's RECORD hashes;
- a git URL or a local clone of github.com/facebookresearch/CrypTen: ``test/`` at the
  pinned commit (``git archive``).

Usage::

    python scripts/crypten_suite.py                     # all files, all configurations
    python scripts/crypten_suite.py --files test_nn.py --configs grpc
    python scripts/crypten_suite.py --source https://github.com/facebookresearch/CrypTen.git
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
DOC = ROOT / "docs" / "crypten-compat.md"
COMMIT = "891fa4709e4849ff50ace6933f20375b04b3f722"
CONFIGS = ("stock", "gloo", "grpc")
# The 2-party trusted-first-party classes (the dealer takes their place) and test_mpc's
# 3-party class. TTP classes need CrypTen's TTP server, RSS its replicated protocol, CUDA
# a GPU: none of them runs our code.
FILES = {
    "test_mpc.py": "TestTFP or Test3PC",
    "test_arithmetic.py": None,
    "test_binary.py": None,
    "test_autograd.py": "TestTFP",
    "test_gradients.py": "TestTFP",
    "test_optim.py": "TestTFP",
    "test_nn.py": "TestTFP",
    "test_crypten.py": None,
    "test_communicator.py": "TestCommunicatorMultiProcess",
    "test_distributions.py": "TestTFP",
}
FILE_TIMEOUT_S = 4 * 3600


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smpc-synth" / "crypten-suite"


# --- fetching test/ ---------------------------------------------------------------------------


def fetch(source: str, cache: Path) -> Path:
    """CrypTen's ``test/`` at the pinned commit in ``cache/<commit>/``; returns that folder
    (the parent of ``test/``, to put first on ``sys.path``)."""
    target = cache / COMMIT[:12]
    if (target / "test" / "__init__.py").exists() and (target / "SOURCE").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fetching-", dir=cache))
    try:
        if source == "wheel":
            _copy_from_wheel(staging)
        else:
            _export_from_git(source, staging)
        (staging / "SOURCE").write_text(f"{source} {COMMIT}\n")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _copy_from_wheel(out: Path) -> None:
    dist = importlib.metadata.distribution("crypten")
    if dist.version != "0.4.1":
        raise SystemExit(f"the installed crypten is {dist.version}, not 0.4.1: use --source")
    files = [f for f in dist.files or [] if f.parts[0] == "test" and f.suffix == ".py"]
    if not files:
        raise SystemExit("the installed crypten wheel carries no test/: use --source")
    for entry in files:
        path = Path(dist.locate_file(entry))
        data = path.read_bytes()
        if entry.hash is None or _record_hash(entry.hash.mode, data) != entry.hash.value:
            raise SystemExit(f"{path} differs from the crypten 0.4.1 wheel's RECORD")
        dest = out / Path(*entry.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def _record_hash(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm, data).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _export_from_git(source: str, out: Path) -> None:
    repo = Path(source)
    if not repo.exists():  # a URL: clone just enough
        clone = out / "clone"
        _git("clone", "--filter=blob:none", "--no-checkout", source, str(clone))
        repo = clone
    archive = _git("-C", str(repo), "archive", "--format=tar", COMMIT, "test", binary=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    shutil.rmtree(out / "clone", ignore_errors=True)


def _git(*args: str, binary: bool = False):
    proc = subprocess.run(["git", *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout if binary else proc.stdout.decode()


# --- running ----------------------------------------------------------------------------------


def run_file(suite: Path, name: str, config: str, out: Path, timeout: float) -> Path:
    """Run one test file in one configuration; returns its JUnit XML report."""
    report = out / config / f"{name}.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join([str(suite), str(ROOT), str(SCRIPTS)])
    env = {
        **os.environ,
        "CRYPTEN_SUITE_CONFIG": config,
        "PYTHONPATH": pythonpath,
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"test/{name}",
        "-p",
        "crypten_suite_plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(suite),
        "-q",
        f"--junitxml={report}",
        f"--timeout={int(timeout)}",
    ]
    if FILES.get(name):
        command += ["-k", FILES[name]]
    log = report.with_suffix(".log")
    with log.open("w") as stream:
        try:
            subprocess.run(
                command,
                cwd=suite,
                env=env,
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            stream.write(f"\n*** timed out after {timeout:g} s\n")
    return report


def outcomes(report: Path) -> dict[str, str]:
    """``{"Class::test": "passed" | "failed" | "skipped"}`` from a JUnit XML report."""
    if not report.exists():
        return {}
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("skipped") is not None:
            results[name] = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            results[name] = "failed"
        else:
            results[name] = "passed"
    return results


# --- the documented differences ----------------------------------------------------------------

_ROW = re.compile(r"^\|\s*`(test_\w+\.py)::(\w+)::(\w+)`\s*\|\s*([^|]+)\|")


def documented(doc: Path = DOC) -> dict[str, set[str]]:
    """``{"file::Class::test": configurations}`` from the "Known differences" table."""
    listed: dict[str, set[str]] = {}
    for line in doc.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            file, cls, test, configs = match.groups()
            listed[f"{file}::{cls}::{test}"] = {c.strip() for c in configs.split(",")}
    return listed


def compare(results: dict[str, dict[str, dict[str, str]]], listed: dict[str, set[str]]):
    """Tests that pass on stock and not in another configuration that ran their file
    (failed, skipped or missing from its report): (documented, not documented)."""
    known, unknown = [], []
    for config in CONFIGS[1:]:
        for file, stock in results.get("stock", {}).items():
            if file not in results.get(config, {}):
                continue  # not run in this configuration
            other = results[config][file]
            for test, outcome in stock.items():
                if outcome != "passed" or other.get(test) == "passed":
                    continue
                key = f"{file}::{test}"
                (known if config in listed.get(key, set()) else unknown).append((config, key))
    return known, unknown


def table(results: dict[str, dict[str, dict[str, str]]], files: Iterable[str]) -> str:
    """Markdown: pass / fail / skip per file and configuration."""
    lines = [
        "| file | " + " | ".join(CONFIGS) + " |",
        "|---|" + "---|" * len(CONFIGS),
    ]
    totals = {c: [0, 0, 0] for c in CONFIGS}
    for file in files:
        cells = []
        for config in CONFIGS:
            got = results.get(config, {}).get(file)
            if not got:
                cells.append("–" if got is None else "no report")
                continue
            counts = [sum(v == k for v in got.values()) for k in ("passed", "failed", "skipped")]
            totals[config] = [a + b for a, b in zip(totals[config], counts)]
            cells.append("/".join(map(str, counts)))
        lines.append(f"| {file} | " + " | ".join(cells) + " |")
    total = " | ".join("/".join(map(str, totals[c])) for c in CONFIGS)
    lines.append(f"| **total** | {total} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="wheel", help="'wheel', a git URL or a local clone")
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--out", type=Path, help="where reports go (default: in the cache)")
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--timeout", type=float, default=FILE_TIMEOUT_S, help="per file, s")
    parser.add_argument("--report-only", action="store_true", help="tabulate earlier runs")
    args = parser.parse_args(argv)

    suite = fetch(args.source, args.cache)
    out = args.out or suite / "reports"
    print(f"CrypTen {COMMIT[:7]} test/ from {args.source}: {suite}", flush=True)
    results: dict[str, dict[str, dict[str, str]]] = {}
    for name in args.files:
        for config in CONFIGS:
            report = out / config / f"{name}.xml"
            if config in args.configs and not args.report_only:
                print(f"running {name} ({config}) ...", flush=True)
                run_file(suite, name, config, out, args.timeout)
            ran = config in args.configs and not args.report_only
            if ran or report.exists():  # a run that left no report counts as all failed
                results.setdefault(config, {})[name] = outcomes(report)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    print(table(results, args.files))
    known, unknown = compare(results, documented())
    for config, key in known:
        print(f"documented difference ({config}): {key}")
    for config, key in unknown:
        print(f"UNEXPLAINED: passes on stock, fails with {config}: {key}")
    return 1 if unknown else 0


if __name__ == "__main__":
    sys.exit(main())
