"""The benchmark harness behind ``smpc-synth bench SUITE`` and ``benchmarks/``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from smpc_synth.errors import InputError
from smpc_synth.registry import resolve

# suite -> "module:function(out_dir, config, [full], [network]) -> exit code"
SUITES: dict[str, str] = {
    "quick": "smpc_synth_bench.grid:run_quick",
    "paper": "smpc_synth_bench.grid:run_paper",
    "mpc-ops": "smpc_synth_bench.mpc_ops:main",
    "he-agg": "smpc_synth_bench.he_agg:main",
    "collapse": "smpc_synth_bench.collapse:main",
    "generators": "smpc_synth_bench.generators:main",
    "network": "smpc_synth_bench.network:main",
    "scale": "smpc_synth_bench.scale:main",
    "dp": "smpc_synth_bench.dp:main",
    "dp-sgd": "smpc_synth_bench.dp_sgd:main",
    "batch-schedule": "smpc_synth_bench.batch_schedule:main",
}


def run_suite(
    suite: str,
    out: Path,
    config: Path | None = None,
    full: bool = False,
    network: str | None = None,
    **options: Any,
) -> int:
    """Run one suite, writing its files under ``out``. ``network`` (a profile name, a TOML
    file, or several comma-separated) is refused by suites that do not measure links."""
    run = resolve(SUITES, suite, "benchmark suite")
    accepted = inspect.signature(run).parameters
    extra: dict[str, Any] = {"full": True} if full else {}  # the paper-size variant
    if network is not None:
        if "network" not in accepted:
            raise InputError(
                f"--network: bench {suite} does not send anything over links between members; "
                f"suites that take it: {', '.join(networked_suites())}"
            )
        extra["network"] = network
    for key, value in options.items():
        if value is None:
            continue
        if key not in accepted:
            raise InputError(f"--{key.replace('_', '-')}: bench {suite} does not take it")
        extra[key] = value
    out.mkdir(parents=True, exist_ok=True)
    return int(run(out, config, **extra) or 0)


def networked_suites() -> list[str]:
    """Suites that run over ``--network`` profiles."""
    return [
        suite
        for suite in SUITES
        if "network" in inspect.signature(resolve(SUITES, suite, "benchmark suite")).parameters
    ]


def describe_results(suite: str, out: Path, code: int) -> str:
    """What a finished suite leaves behind: its summary table (grid suites) and where its
    files are, so nobody has to look for them."""
    lines = []
    summary = out / "summary.md"
    if summary.is_file():
        lines += [f"Summary of {suite} ({summary}):", "", summary.read_text().rstrip(), ""]
    files = []
    if out.is_dir():
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    status = "finished" if code == 0 else f"finished with failures (exit code {code})"
    lines.append(f"bench {suite} {status}; results in {out.resolve()}")
    if files:
        lines.append("  " + ", ".join(files))
    return "\n".join(lines)
