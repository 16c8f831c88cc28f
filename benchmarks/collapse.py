"""Model-collapse experiment: recursive generations under replace / accumulate / fresh-real.

    python benchmarks/collapse.py --out benchmarks/results/collapse [--generations 10]

Same as ``smpc-synth bench collapse``; the options override the defaults of
``smpc_synth_bench.collapse.CollapseConfig`` (and of ``--config FILE.toml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smpc_synth.errors import SmpcSynthError
from smpc_synth_bench.collapse import REGIMES, main


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/collapse"))
    p.add_argument("--config", type=Path, help="TOML file of CollapseConfig keys")
    p.add_argument("--dataset", help="built-in table (default: fair)")
    p.add_argument("--rows", type=int, help="subsample of the table")
    p.add_argument("--generations", type=int, help="generations per series (default 10)")
    p.add_argument("--generators", type=_list, help="comma-separated, e.g. gaussian,vae")
    p.add_argument("--regimes", type=_list, help=f"comma-separated subset of {','.join(REGIMES)}")
    p.add_argument("--fresh-fraction", type=float, help="real share in 'fresh' (default 0.1)")
    p.add_argument("--secure-modes", type=_list, help="also run e.g. federated or mpc (slow)")
    p.add_argument("--secure-generations", type=int, help="generations per secure series")
    p.add_argument("--seed", type=int)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    options = {k: v for k, v in vars(args).items() if k not in ("out", "config")}
    try:
        sys.exit(main(args.out, args.config, **options))
    except SmpcSynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
