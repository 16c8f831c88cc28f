"""The ``smpc-synth`` command: a thin layer over the Python API.

Exit codes: 0 success, 2 bad input or config (the message names the file, column, row or
key), 3 release refused by the quality gate, 1 anything else (the message names the party).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from smpc_synth.errors import InputError, SmpcSynthError
from smpc_synth.version import __version__

log = logging.getLogger("smpc_synth")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # gRPC's C core prints refused TLS handshakes itself; our own messages name the peer.
    os.environ.setdefault("GRPC_VERBOSITY", "DEBUG" if args.verbose else "NONE")
    _configure_logging(args.verbose)
    code = _run(args)
    if args.handler is _cmd_member and argv is None:  # the process itself, not a caller
        _exit_now(code)
    return code


def _run(args) -> int:
    try:
        return int(args.handler(args) or 0)
    except SmpcSynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: say what happened, keep the trace for -v
        if args.verbose:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with -v for details)",
            file=sys.stderr,
        )
        return 1


def _exit_now(code: int) -> NoReturn:
    """End a session member's process at once: exit handlers run and every stream is
    flushed (files are closed by then), but the interpreter's final garbage collection is
    skipped. With torch and CrypTen loaded it takes seconds, 20 s on a loaded machine: time
    the promise to stop within peer_timeout_s does not have."""
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smpc-synth",
        description="Jointly train synthetic-data generators without sharing rows.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"smpc-synth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "simulate", _cmd_simulate, "run a whole session on this machine")
    p.add_argument("--parties", type=int, default=3, help="number of data parties (1-8)")
    p.add_argument(
        "--mode", choices=_MODES, metavar="MODE", default="mpc", help="one of %(choices)s"
    )
    p.add_argument(
        "--generator",
        choices=_GENERATORS,
        metavar="GENERATOR",
        default="gaussian",
        help="one of %(choices)s",
    )
    _add_shared_table(p, "a CSV or Parquet file to split among parties")
    p.add_argument("--split", default="iid", help="how rows are shared: iid | noniid:COLUMN")
    _add_epochs(p)
    p.add_argument(
        "--schedule",
        choices=_SCHEDULES,
        metavar="SCHEDULE",
        help="vae or gan: %(choices)s; 'latency' trains in batches 5x the default with 5x "
        "the learning rate, for fewer rounds over a long round trip (default: "
        "default; generator_params.schedule in config files)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="rows kept out for evaluation"
    )
    _add_target(p)
    p.add_argument(
        "--sample-rows",
        type=int,
        help="rows of synthetic.csv (default: as many as trained on; under DP its noisy count)",
    )
    p.add_argument("--out", type=Path, help="run directory (default: runs/simulate-TIME)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    p.add_argument("--he", choices=_HE_SCHEMES, default="ckks", help="federated: encryption")
    _add_dp(p)
    p.add_argument(
        "--dp-unit",
        choices=("record", "party"),
        help="what DP protects: one record (default) or, federated only, one party (DP-FedAvg)",
    )
    p.add_argument("--dp", action="store_true", help="older spelling: --dp --target-epsilon E")
    p.add_argument(
        "--target-epsilon", type=float, help="with --dp: same as --epsilon (default: none)"
    )
    p.add_argument("--transport", choices=_TRANSPORTS, default="grpc", help="mpc transport")
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="mpc: allow CrypTen's trusted-first-party provider (party 0 sees everything)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    _add_network(p)
    _add_override_gate(p)

    from smpc_synth.runtime.roles import ROLES

    for role in ROLES.values():
        p = _add(
            sub,
            role.command,
            _cmd_member,
            f"run one {role.command} of a session from its config file",
        )
        p.add_argument("--config", type=Path, required=True, help="this member's TOML file")
        p.add_argument("--resume", action="store_true", help="continue from its checkpoints")
        p.add_argument(
            "--quiet", action="store_true", help="no progress bar; log warnings and errors only"
        )
        p.set_defaults(role=None if role.name == "data" else role.name)
        if role.name == "data":
            _add_override_gate(p)

    p = _add(sub, "split", _cmd_split, "write one CSV per party from a table, for a local test")
    _add_shared_table(p, "a CSV or Parquet file to split")
    p.add_argument("--parties", type=int, default=3, help="number of data parties (1-8)")
    p.add_argument("--split", default="iid", help="how rows are shared: iid | noniid:COLUMN")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="rows written to holdout.csv instead"
    )
    _add_target(p)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for NAME.csv per party, holdout.csv and schema.toml (existing files are "
        "never overwritten)",
    )

    p = _add(sub, "certs", _cmd_certs, "create a CA and one certificate per member")
    p.add_argument("--names", required=True, help="comma-separated member names")
    p.add_argument("--out", type=Path, required=True, help="folder for ca.pem, NAME.pem, NAME.key")

    p = _add(sub, "schema", None, "draft or check the public schema")
    schema_sub = p.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    q = _add(schema_sub, "infer", _cmd_schema_infer, "draft a schema from a table")
    q.add_argument("file", type=Path, help="a CSV or Parquet file")
    q.add_argument("-o", "--out", type=Path, required=True, help="the schema TOML to write")
    q.add_argument(
        "--target",
        help="the column models predict, kept categorical if discrete (default: none)",
    )
    q.add_argument(
        "--max-categories",
        type=int,
        help="most distinct values a text column may have; more is refused as free text or "
        "identifiers (default: MAX_CATEGORIES in smpc_synth/data/defaults.py)",
    )

    p = _add(sub, "train", _cmd_train, "train a generator on one table in the clear")
    p.add_argument("--mode", choices=("plaintext",), default="plaintext", help="only plaintext")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a CSV or Parquet file")
    src.add_argument(
        "--dataset", choices=_DATASETS, metavar="NAME", help="a built-in data set: %(choices)s"
    )
    p.add_argument("--schema", type=Path, help="public schema (default: inferred from the data)")
    p.add_argument(
        "--generator",
        choices=_GENERATORS,
        metavar="GENERATOR",
        default="gaussian",
        help="one of %(choices)s",
    )
    _add_epochs(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the holdout and of training")
    p.add_argument(
        "--holdout-fraction", type=float, default=0.2, help="rows kept out for evaluation"
    )
    _add_target(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    _add_dp(p)
    _add_override_gate(p)

    p = _add(sub, "sample", _cmd_sample, "draw synthetic rows from generator.pt")
    p.add_argument("--model", type=Path, required=True, help="a generator.pt file")
    p.add_argument("-n", "--rows", type=int, required=True, help="how many rows")
    p.add_argument("-o", "--out", type=Path, required=True, help="the CSV to write")
    p.add_argument("--seed", type=int, default=0, help="same seed, same rows")

    p = _add(sub, "evaluate", _cmd_evaluate, "score synthetic data against real data")
    p.add_argument("--real", type=Path, required=True, help="the rows the generator learnt from")
    p.add_argument("--synthetic", type=Path, required=True, help="the synthetic rows")
    p.add_argument(
        "--holdout", type=Path, help="real rows not trained on (default: none; no TSTR, no DCR)"
    )
    _add_target(p)
    p.add_argument("--schema", type=Path, help="public schema (default: inferred from --real)")
    p.add_argument("-o", "--out", type=Path, help="write the report as JSON (default: print only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation models")

    p = _add(sub, "verify", _cmd_verify, "check the hashes and signatures of a run's manifest")
    p.add_argument("manifest", type=Path, help="DIR/manifest.json or the run directory")
    p.add_argument(
        "--ca",
        type=Path,
        help="pin the session CA (ca.pem) as the trust anchor (default: the embedded one)",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept a manifest without signatures (smpc-synth train writes one); "
        "hashes are still checked, origin is not",
    )

    p = _add(sub, "bench", _cmd_bench, "run a benchmark suite")
    p.add_argument("suite", choices=_SUITES, metavar="SUITE", help="which suite: %(choices)s")
    p.add_argument(
        "--out", type=Path, default=None, help="results folder (default: benchmarks/results/SUITE)"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="quick, paper: a grid file (default: quick's built-in grid; paper needs one); "
        "dp, dp-sgd: their settings (TOML)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="he-agg: include the 1e7-parameter cases; dp: seeds 0, 1, 2",
    )
    p.add_argument(
        "--network",
        help="loopback | lan | wan | PROFILE.toml, or several comma-separated, measured in "
        "turn: members run over emulated links of that RTT, bandwidth and jitter (suites "
        "quick, paper, scale, mpc-ops, network; needs root, iproute2, /dev/net/tun; default: "
        "loopback, or a grid file's networks)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="quick, paper, scale: run each grid cell as a Ray task on the cluster at ADDRESS "
        "(host:port), or 'local' for one on this machine (default: no Ray, cells run here "
        "one after another; needs pip install 'smpc-synth[ray]')",
    )
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds '(default: X)' to every option that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or not action.option_strings
        ):
            return text
        return text + " (default: %(default)s)"


class _Choices:
    """Choices read from their registry only when argparse needs them (a help text, a value
    to check), so that light commands such as ``certs`` never import torch or pandas."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load = load
        self._values: tuple[str, ...] | None = None

    def _get(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __iter__(self):
        return iter(self._get())

    def __contains__(self, value: object) -> bool:
        return value in self._get()

    def __len__(self) -> int:
        return len(self._get())


def _generators() -> Sequence[str]:
    from smpc_synth.models import available_generators

    return available_generators()


def _datasets() -> Sequence[str]:
    from smpc_synth.data.datasets import list_builtin

    return list_builtin()


def _add_shared_table(p: argparse.ArgumentParser, data_help: str) -> None:
    """--dataset | --data, and --schema: the table a local session shares among parties."""
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--dataset",
        choices=_DATASETS,
        metavar="NAME",
        help="a built-in data set: %(choices)s (default: fair, unless --data is given)",
    )
    src.add_argument("--data", type=Path, help=data_help)
    p.add_argument("--schema", type=Path, help="public schema (default: inferred from the data)")


def _listed(module: str, name: str) -> _Choices:
    """Choices read, on first use, from the one place that lists them."""
    return _Choices(lambda: tuple(getattr(importlib.import_module(module), name)))


_GENERATORS = _Choices(_generators)
_DATASETS = _Choices(_datasets)
_MODES = _listed("smpc_synth.config", "MODES")
_HE_SCHEMES = _listed("smpc_synth.config", "HE_SCHEMES")
_TRANSPORTS = _listed("smpc_synth.config", "TRANSPORTS")
_SCHEDULES = _listed("smpc_synth.models.schedule", "SCHEDULES")
BENCH_HINT = (
    "`make install` in a clone of the repository, or `pip install -e benchmarks` from its root"
)
BENCH_MISSING = (
    "the benchmark suites are a package of their own (benchmarks/smpc_synth_bench), not "
    f"installed here: run {BENCH_HINT}"
)


class _Suites(_Choices):
    """The benchmark suites; without the benchmark package any name is accepted (so that
    ``bench`` can say how to install it instead of calling the name invalid) and the help
    lists that hint in place of the suites."""

    def _get(self) -> tuple[str, ...]:
        values = super()._get()
        if not values:  # absent: look again next time (it may be installed meanwhile)
            self._values = None
        return values

    def __contains__(self, value: object) -> bool:
        return not self._get() or value in self._get()

    def __iter__(self):
        return iter(self._get() or (f"none installed ({BENCH_HINT})",))


def _suites() -> Sequence[str]:
    try:
        from smpc_synth_bench import SUITES
    except ModuleNotFoundError as exc:
        if exc.name != "smpc_synth_bench":
            raise
        return ()
    return tuple(SUITES)


_SUITES = _Suites(_suites)


def _add(sub, name: str, handler: Callable | None, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
    if handler is not None:
        p.set_defaults(handler=handler)
    return p


def _add_epochs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--epochs",
        type=int,
        help="training epochs of vae or gan (default: the generator's own); refused for "
        "gaussian, aim and mst, which are not trained in epochs",
    )


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        help="column for utility (TSTR) evaluation (default: a built-in data set's own)",
    )


def _add_network(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--network",
        default="loopback",
        help="loopback | lan (1 Gbit/s, 0.5 ms RTT) | wan (100 Mbit/s, 50 ms RTT) | "
        "PROFILE.toml (rtt_ms, bandwidth_mbit, jitter_ms): every member in its own network "
        "namespace over emulated links (needs root, iproute2 and /dev/net/tun)",
    )


def _add_dp(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--epsilon",
        type=float,
        help="differential privacy: the run's whole budget, bounding everything the run "
        "releases, for any generator (default: no DP; aim and mst need it)",
    )
    p.add_argument(
        "--delta",
        type=float,
        help="with --epsilon: DP delta (default 1e-6; keep it well below 1 / rows)",
    )


def _dp_options(args) -> dict:
    """The ``[dp]`` table from --epsilon/--delta/--dp-unit, or the older --dp --target-epsilon
    (an error names the command line and the flag)."""
    try:
        return _dp_table(args)
    except InputError as exc:
        raise InputError(f"command line: {exc}") from None


def _dp_table(args) -> dict:
    from smpc_synth.config import DpConfig
    from smpc_synth.dp.budget import check_budget

    epsilon = args.epsilon
    legacy = getattr(args, "dp", False)
    target = getattr(args, "target_epsilon", None)
    if target is not None and not legacy:
        raise InputError("--target-epsilon needs --dp (or give the budget as --epsilon)")
    if legacy:
        if target is None and epsilon is None:
            raise InputError("--dp needs --target-epsilon E (or give the budget as --epsilon E)")
        if target is not None and epsilon is not None and target != epsilon:
            raise InputError(f"--epsilon {epsilon} and --target-epsilon {target} disagree")
        epsilon = epsilon if epsilon is not None else target
    unit = getattr(args, "dp_unit", None)
    if epsilon is None and (args.delta is not None or unit is not None):
        raise InputError("--delta and --dp-unit need --epsilon")
    if epsilon is not None:  # NaN, infinity, 0 and negatives are refused naming the flag
        flag = "--epsilon" if args.epsilon is not None else "--target-epsilon"
        delta = DpConfig().delta if args.delta is None else args.delta
        check_budget(epsilon, delta, epsilon_name=flag, delta_name="--delta")
    return {"epsilon": epsilon, "delta": args.delta, "unit": unit}


def _add_override_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override-gate",
        action="store_true",
        help="write synthetic.csv even if the release gate refuses it (recorded in the manifest)",
    )


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("sdmetrics", "matplotlib", "PIL", "crypten", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- commands ---------------------------------------------------------------------------


def _cmd_simulate(args) -> int:
    from smpc_synth.config import RunConfig, drop_none
    from smpc_synth.dp.budget import describe_record
    from smpc_synth.models import check_epochs_apply

    raw = {
        "mode": args.mode,
        "generator": args.generator,
        "epochs": args.epochs,
        "seed": args.seed,
        "holdout_fraction": args.holdout_fraction,
        "split": args.split,
        "target": args.target,
        "sample_rows": args.sample_rows,
        "federated": {"he": args.he},
        "dp": _dp_options(args),
        "mpc": {"transport": args.transport, "insecure_dev": args.insecure_dev},
    }
    if args.schedule is not None:
        raw["generator_params"] = {"schedule": args.schedule}
    if args.insecure_dev:
        raw["mpc"]["provider"] = "tfp"
    cfg = RunConfig.from_dict(drop_none(raw), source="command line")
    check_epochs_apply(args.generator, args.epochs, "--epochs")
    # the heavy imports only once the settings are known to be good: a refusal is quick
    from smpc_synth.eval import format_report
    from smpc_synth.release import enforce
    from smpc_synth.runtime.simulate import simulate

    result = simulate(
        args.parties,
        dataset=args.dataset,
        data=args.data,
        schema=args.schema,
        out=args.out,
        config=cfg,
        resume=args.resume,
        show_progress=not args.quiet,
        override_gate=args.override_gate,
        network=args.network,
    )
    if "evaluation" in result.metrics:
        print(format_report(result.metrics["evaluation"]))
    if "privacy" in result.metrics:
        print(describe_record(result.metrics["privacy"]))
    if result.gate is not None:
        print(result.gate.describe())
    status = "finished" if result.exit_code == 0 else f"failed (exit code {result.exit_code})"
    ran = f"{cfg.mode} mode, generator {cfg.generator}, data {result.metrics.get('data')}"
    print(f"run {status} ({ran}): {result.run_dir}")
    if result.exit_code == 0 and result.gate is not None:
        enforce(result.gate)
    return result.exit_code


def _cmd_member(args) -> int:
    from smpc_synth.runtime.party import run_member
    from smpc_synth.runtime.party_config import load_party_config

    cfg = load_party_config(args.config, role=args.role)
    root = logging.getLogger()
    root.handlers[0].setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-7s [{cfg.name}] %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
    )
    if args.quiet and not args.verbose:
        root.setLevel(logging.WARNING)
    override = getattr(args, "override_gate", False)
    result = run_member(
        cfg, resume=args.resume, override_gate=override, show_progress=not args.quiet
    )
    log.info("%s done in %.1f s", cfg.name, result.get("wall_seconds", 0.0))
    return 0


def _cmd_split(args) -> int:
    from smpc_synth.config import RunConfig, drop_none
    from smpc_synth.runtime.simulate import split_table

    raw = {
        "seed": args.seed,
        "holdout_fraction": args.holdout_fraction,
        "split": args.split,
        "target": args.target,
    }
    cfg = RunConfig.from_dict(drop_none(raw), source="command line")
    table = split_table(
        args.parties, dataset=args.dataset, data=args.data, schema=args.schema, config=cfg
    )
    files = {args.out / f"{name}.csv": share for name, share in zip(table.names, table.shares)}
    files[args.out / "holdout.csv"] = table.holdout
    existing = [str(path) for path in [*files, args.out / "schema.toml"] if path.exists()]
    if existing:
        raise InputError(f"{existing[0]} already exists; choose another --out or remove it")
    args.out.mkdir(parents=True, exist_ok=True)
    for path, frame in files.items():
        frame.to_csv(path, index=False)
    table.schema.save(args.out / "schema.toml")
    print(f"split {table.source} ({len(table.train)} training rows) into {args.out}:")
    for name, share in zip(table.names, table.shares):
        print(f"  {name}.csv: {len(share)} rows (give it to {name} only)")
    print(f"  holdout.csv: {len(table.holdout)} rows no party trains on (for evaluate)")
    print(f"  schema.toml: the public schema every member loads (target: {cfg.target})")
    return 0


def _cmd_certs(args) -> int:
    from smpc_synth.net import write_certificates

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    if not names:
        raise InputError("--names: give at least one member name, e.g. alice,bob,dealer")
    written = write_certificates(names, args.out)
    print(f"wrote a CA and {len(names)} certificates to {args.out}")
    for name, files in sorted(written.items()):
        print(f"  {name}: {files.cert}, {files.key} (private: hand it to {name} only)")
    return 0


def _cmd_schema_infer(args) -> int:
    from smpc_synth.data import infer_schema, read_table
    from smpc_synth.runtime.outdir import check_output_file

    if args.max_categories is not None and args.max_categories < 1:
        raise InputError(f"--max-categories must be at least 1, got {args.max_categories}")
    check_output_file(args.out, "-o/--out")
    frame = read_table(args.file)
    limit = {} if args.max_categories is None else {"max_categories": args.max_categories}
    schema = infer_schema(frame, target=args.target, source=str(args.file), **limit)
    dataclasses.replace(schema, drafted_from_data=True).save(args.out)
    print(
        f"wrote {args.out} ({len(schema.columns)} columns); review bounds and categories: "
        "they are public to every party. It is marked drafted_from_data = true: a DP run "
        "(--epsilon) refuses it until you replace what came from the rows and delete the key"
    )
    return 0


def _cmd_train(args) -> int:
    import tomli_w

    from smpc_synth.api import evaluate, train
    from smpc_synth.config import RunConfig, drop_none
    from smpc_synth.data import (
        Schema,
        holdout_split,
        infer_schema,
        load_builtin,
        read_table,
        validate,
    )
    from smpc_synth.dp.budget import describe_record
    from smpc_synth.dp.support import PUBLIC_SCHEMA_NEEDED, refuse_drafted_schema
    from smpc_synth.eval import format_report
    from smpc_synth.models import check_epochs_apply, planned_epochs
    from smpc_synth.release import PENDING_NAME, enforce, release_run
    from smpc_synth.runtime.outdir import check_output_dir, claim_output_dir
    from smpc_synth.runtime.progress import ProgressView, RunProgress

    config = RunConfig.from_dict(
        drop_none(
            {
                "generator": args.generator,
                "epochs": args.epochs,
                "seed": args.seed,
                "holdout_fraction": args.holdout_fraction,
                "target": args.target,
                "dp": _dp_options(args),
            }
        ),
        source="command line",
    )
    check_epochs_apply(args.generator, args.epochs, "--epochs")
    check_output_dir(args.out)  # before the work, not after it
    given = Schema.load(args.schema) if args.schema else None
    if config.dp.enabled and given is None and args.data is not None:
        raise InputError(f"--epsilon: {PUBLIC_SCHEMA_NEEDED}")
    if config.dp.enabled:
        refuse_drafted_schema(given, str(args.schema))
    if args.data is not None:
        frame, target, source = read_table(args.data, given), args.target, str(args.data)
    else:
        builtin = load_builtin(args.dataset)
        frame, target, source = builtin.frame, args.target or builtin.target, args.dataset
    schema = given or infer_schema(frame, target=target, source=source)
    if given is None and args.data is not None:  # says so in the run's schema.toml
        schema = dataclasses.replace(schema, drafted_from_data=True)
    if target is not None and target not in frame.columns:
        raise InputError(f"{source}: --target column {target!r} not found")
    frame = validate(frame, schema, source=source)  # before the split: row numbers stay true
    discrete = target is not None and schema.column(target).kind in ("categorical", "boolean")
    fit_rows, holdout = holdout_split(
        frame, args.holdout_fraction, args.seed, stratify=target if discrete else None
    )
    title = f"plaintext · {args.generator} · {Path(source).name}"
    total = planned_epochs(args.generator, args.epochs, None)
    print(
        f"train: plaintext mode, generator {args.generator}, data {source} "
        f"({len(fit_rows)} training rows, {len(holdout)} held out) -> {args.out}",
        flush=True,
    )
    with ProgressView(RunProgress(title, total), "off" if args.quiet else "auto") as view:
        model = train(
            fit_rows,
            generator=args.generator,
            schema=schema,
            epochs=args.epochs,
            seed=args.seed,
            source=source,
            progress=view,
            dp=config.dp,
            params=config.generator_params,
        )
    claim_output_dir(args.out)
    model.save(args.out / "generator.pt")
    candidate = args.out / PENDING_NAME
    rows = model.meta["train_rows"] if model.privacy is not None else len(fit_rows)
    synthetic = model.sample(rows, seed=args.seed)
    synthetic.to_csv(candidate, index=False)
    schema.save(args.out / "schema.toml")
    config.target = target
    (args.out / "config.toml").write_text(tomli_w.dumps(config.to_toml_dict()))
    report = evaluate(
        fit_rows, synthetic, holdout=holdout, target=target, schema=schema, seed=args.seed
    )
    metrics = {
        "mode": "plaintext",
        "generator": args.generator,
        "source": source,
        "progress": view.progress.summary(),
        "evaluation": report,
    }
    if model.privacy is not None:
        metrics["rows_released"] = model.meta["train_rows"]
    decision = release_run(
        args.out,
        candidate=candidate,
        report=report,
        policy=config.gate,
        config=config.to_dict(),
        metrics=metrics,
        override=args.override_gate,
        privacy=model.privacy,
    )
    print(format_report(report))
    if model.privacy is not None:
        print(describe_record(model.privacy))
    print(decision.describe())
    written = "generator.pt, metrics.json, manifest.json (unsigned: verify --allow-unsigned)"
    print(f"wrote {args.out}: {written}" + (", synthetic.csv" if decision.released else ""))
    enforce(decision)
    return 0


def _cmd_verify(args) -> int:
    from smpc_synth.release import verify_main

    return verify_main(args.manifest, ca=args.ca, allow_unsigned=args.allow_unsigned)


def _cmd_sample(args) -> int:
    from smpc_synth.models import Synthesizer
    from smpc_synth.runtime.outdir import check_output_file

    if args.rows < 1:
        raise InputError(f"-n/--rows must be at least 1, got {args.rows}")
    check_output_file(args.out, "-o/--out")
    model = Synthesizer.load(args.model)
    if args.rows > model.max_sample_rows:
        raise InputError(
            f"-n/--rows: {args.rows:,} rows exceed the limit of {model.max_sample_rows:,} "
            f"for {args.model} ({len(model.schema.columns)} columns); write several files "
            "with different --seed"
        )
    frame = model.sample(args.rows, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} rows to {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    from smpc_synth.api import evaluate
    from smpc_synth.data import Schema, read_table
    from smpc_synth.eval import format_report
    from smpc_synth.runtime.outdir import check_output_file

    if args.out:
        check_output_file(args.out, "-o/--out")
    schema = Schema.load(args.schema) if args.schema else None
    real = read_table(args.real, schema)
    synthetic = read_table(args.synthetic, schema)
    holdout = read_table(args.holdout, schema) if args.holdout else None
    if args.target and args.target not in real.columns:
        raise InputError(f"{args.real}: --target column {args.target!r} not found")
    report = evaluate(
        real, synthetic, holdout=holdout, target=args.target, schema=schema, seed=args.seed
    )
    print(format_report(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


def _cmd_bench(args) -> int:
    try:
        from smpc_synth_bench import describe_results, run_suite
    except ModuleNotFoundError as exc:
        if exc.name != "smpc_synth_bench":
            raise
        raise InputError(f"bench {args.suite}: {BENCH_MISSING}") from None
    out = args.out or Path("benchmarks/results") / args.suite
    code = run_suite(
        args.suite, out, config=args.config, full=args.full, network=args.network, ray=args.ray
    )
    print(describe_results(args.suite, out, code))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
