"""MPC vs plaintext training on a mixed table with wide categoricals and heavy tails.

    python benchmarks/mixed_table.py --out benchmarks/results/mixed_table [--epochs 3]

See :mod:`smpc_synth_bench.mixed_table` for what is measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smpc_synth_bench.mixed_table import MixedConfig, main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = MixedConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mixed_table"))
    p.add_argument("--rows", type=int, default=defaults.rows)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--generator", default=defaults.generator)
    p.add_argument("--parties", type=int, nargs="+", default=defaults.parties)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    config = MixedConfig(args.rows, args.epochs, args.seed, args.generator, args.parties)
    sys.exit(main(args.out, config))
