"""MPC training cost of the VAE on the 5,000-row mixed table, ours vs stock CrypTen vs torch.

    python benchmarks/mpc_train.py --out benchmarks/results/mpc_train [--epochs 8]
                                   [--network loopback,lan,wan]
    python benchmarks/mpc_train.py --network wan --schedules default,latency --pairs 2 ...

See :mod:`smpc_synth_bench.mpc_train` for what is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from smpc_synth.errors import InputError
from smpc_synth_bench.mpc_train import BenchConfig, compare_schedules, main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mpc_train"))
    p.add_argument("--rows", type=int, default=defaults.rows)
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="of ours (MPC)")
    p.add_argument(
        "--steady-epochs",
        type=int,
        default=defaults.steady_epochs,
        help="the per-epoch figure is the median of this many last epochs",
    )
    p.add_argument("--stock-steps", type=int, default=defaults.stock_steps)
    p.add_argument("--plaintext-epochs", type=int, default=defaults.plaintext_epochs)
    p.add_argument(
        "--network",
        help="loopback | lan | wan | PROFILE.toml, or several comma-separated, measured in "
        "turn in this run (default: loopback)",
    )
    p.add_argument(
        "--schedules",
        help="generator schedules to compare, comma-separated (e.g. default,latency): each "
        "in turn, --pairs times over, on one --network; stock and plaintext are skipped",
    )
    p.add_argument("--pairs", type=int, default=2, help="rounds of --schedules (default 2)")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be at least 1")  # exit 2
    if not 1 <= args.steady_epochs <= args.epochs:
        p.error(f"--steady-epochs must be between 1 and --epochs ({args.epochs})")  # exit 2
    return args


if __name__ == "__main__":
    args = parse_args()
    config = BenchConfig(
        rows=args.rows,
        epochs=args.epochs,
        steady_epochs=args.steady_epochs,
        stock_steps=args.stock_steps,
        plaintext_epochs=args.plaintext_epochs,
    )
    try:
        if args.schedules:
            config = dataclasses.replace(config, stock_steps=0, plaintext_epochs=1)
            schedules = args.schedules.split(",")
            sys.exit(compare_schedules(args.out, config, args.network, schedules, args.pairs))
        sys.exit(main(args.out, config, network=args.network))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
