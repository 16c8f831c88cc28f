"""The benchmark harness behind ``smpc-synth bench SUITE`` and ``benchmarks/``."""

from __future__ import annotations

import importlib
from pathlib import Path

from smpc_synth.errors import InputError

# suite -> "module:function(out_dir, config, [full]) -> exit code"
SUITES: dict[str, str] = {
    "quick": "smpc_synth.bench.grid:run_quick",
    "paper": "smpc_synth.bench.grid:run_paper",
    "mpc-ops": "smpc_synth.bench.mpc_ops:main",
    "he-agg": "smpc_synth.bench.he_agg:main",
    "collapse": "smpc_synth.bench.collapse:main",
    "generators": "smpc_synth.bench.generators:main",
}


def run_suite(suite: str, out: Path, config: Path | None = None, full: bool = False) -> int:
    """Run one suite, writing its files under ``out``."""
    if suite not in SUITES:
        raise InputError(f"unknown benchmark suite {suite!r}; choose one of {', '.join(SUITES)}")
    module_name, func_name = SUITES[suite].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise InputError(
                f"benchmark suite {suite!r} is not available in this version"
            ) from None
        raise
    out.mkdir(parents=True, exist_ok=True)
    extra = {"full": True} if full else {}  # the paper-size variant, where a suite has one
    return int(getattr(module, func_name)(out, config, **extra) or 0)
