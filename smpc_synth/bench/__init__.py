"""The benchmark harness behind ``smpc-synth bench SUITE`` and ``benchmarks/``."""

from __future__ import annotations

from pathlib import Path

from smpc_synth.registry import resolve

# suite -> "module:function(out_dir, config, [full]) -> exit code"
SUITES: dict[str, str] = {
    "quick": "smpc_synth.bench.grid:run_quick",
    "paper": "smpc_synth.bench.grid:run_paper",
    "mpc-ops": "smpc_synth.bench.mpc_ops:main",
    "he-agg": "smpc_synth.bench.he_agg:main",
    "collapse": "smpc_synth.bench.collapse:main",
    "generators": "smpc_synth.bench.generators:main",
    "dp": "smpc_synth.bench.dp:main",
    "dp-sgd": "smpc_synth.bench.dp_sgd:main",
}


def run_suite(suite: str, out: Path, config: Path | None = None, full: bool = False) -> int:
    """Run one suite, writing its files under ``out``."""
    run = resolve(SUITES, suite, "benchmark suite")
    out.mkdir(parents=True, exist_ok=True)
    extra = {"full": True} if full else {}  # the paper-size variant, where a suite has one
    return int(run(out, config, **extra) or 0)


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
