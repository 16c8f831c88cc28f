"""Write ``docs/results.md`` from the committed benchmark snapshots in ``benchmarks/results/``.

Every figure in that page comes from a snapshot file, so prose and numbers cannot drift:
rerun a suite, then ``make docs`` (or ``python benchmarks/render_results.py``). A test
checks that the committed page is what this script writes. A section whose snapshot is
absent is left out.

Each section is a function ``(results_dir) -> str | None`` in :data:`SECTIONS`; add one
beside the suite that writes its snapshot.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
HEADLINE_START, HEADLINE_END = "<!-- results:headline -->", "<!-- /results:headline -->"

HEADER = """\
# Results

What the cryptography costs, measured by the benchmark suites (`benchmarks/README.md` lists
the command behind each table). This page is generated from the snapshots committed in
`benchmarks/results/` by `make docs`; do not edit it by hand. Times are for the machine
that took each snapshot (2 shared cores, loopback): compare ratios measured in the same run,
not absolute seconds across runs.
"""


def _load_json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _load_jsonl(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value / 1e6:,.2f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1e3:,.0f} ms"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rounds(value: float) -> str:
    return f"{value:,.0f} round" + ("" if round(value) == 1 else "s")


def _environment(records: list[dict]) -> str:
    env = next((r.get("environment") for r in records if r.get("environment")), None)
    if not env:
        return ""
    return (
        f"Snapshot of {env.get('date', '?')[:10]}, {env.get('cpu_model', '?')}, "
        f"{env.get('cpu_count', '?')} cores, commit {str(env.get('git_commit', '?'))[:7]}."
    )


def _quick_table(records: list[dict]) -> str:
    base: dict[str, float] = {}
    for r in records:
        if r["run"]["mode"] == "plaintext":
            base[r["run"]["generator"]] = r["metrics"]["train_seconds"]
    rows = []
    for r in records:
        run, m = r["run"], r["metrics"]
        plain = base.get(run["generator"])
        ratio = m["train_seconds"] / plain if plain else None
        rows.append(
            [
                run["mode"],
                run["generator"],
                _num(m.get("quality_score")),
                _num(m.get("tstr_auc")),
                _num(m["train_seconds"], 2),
                "–" if ratio is None else f"{ratio:.1f}",
                _mb(m.get("bytes_per_party")),
                f"{m.get('rounds_per_party', 0):,.0f}",
            ]
        )
    return _table(
        [
            "mode",
            "generator",
            "quality",
            "TSTR AUC",
            "train s",
            "× plaintext",
            "MB sent / party",
            "rounds",
        ],
        rows,
    )


def _quick_intro(records: list[dict]) -> str:
    first = records[0]["run"]
    return (
        f"`smpc-synth bench quick`: {first['parties']} parties, `{first['dataset']}`, "
        f"seed {first['seed']}; every run is a real session of separate processes over "
        "gRPC with mutual TLS. Neural generators run a few epochs: this compares cost, "
        "not final quality. " + _environment(records)
    )


def quick(results: Path) -> str | None:
    """Each mode against plaintext on one table (``bench quick``)."""
    records = _load_jsonl(results / "quick" / "runs.jsonl")
    if not records:
        return None
    return "\n\n".join(
        [
            "## What each mode costs",
            _quick_intro(records),
            _quick_table(records),
            "The gaussian needs only secure sums, so privacy costs little. Training a neural "
            "network on secret shares costs orders of magnitude more traffic and rounds.",
        ]
    )


def generators(results: Path) -> str | None:
    """Plaintext generators: quality, utility and time (``bench generators``)."""
    records = _load_json(results / "generators" / "generators.json")
    if not records:
        return None
    rows = [
        [
            r["generator"],
            _num(r["quality_score"]),
            _num(r["tstr_auc"]),
            _num(r["trtr_auc"]),
            f"{r['total_s']:.1f} s",
        ]
        for r in records
    ]
    first = records[0]
    return "\n\n".join(
        [
            "## Plaintext generators",
            f"`smpc-synth bench generators` on `{first['dataset']}` ({first['rows']:,} "
            f"training rows), seed {first['seed']}. TRTR is a classifier trained on the real "
            "training rows; TSTR one trained on the synthetic rows, both scored on the holdout.",
            _table(
                ["generator", "quality score", "TSTR AUC", "TRTR AUC", "train + sample + evaluate"],
                rows,
            ),
        ]
    )


_OPS_LABEL = {"matmul": "matmul 256×256", "relu": "relu 65,536", "train_step": "training step"}
_TRANSPORTS = [
    ("grpc+tls", "ours: gRPC + mutual TLS, our dealer"),
    ("gloo", "CrypTen's gloo, our dealer"),
    ("stock", "stock CrypTen (gloo, TFP, as shipped)"),
    ("theory", "lower bound"),
]


def mpc_ops(results: Path) -> str | None:
    """CrypTen operations and one SGD step (``bench mpc-ops``)."""
    records = _load_json(results / "mpc-ops" / "mpc_ops.json")
    if not records:
        return None
    by = {(r["op"], r["transport"]): r for r in records}
    rows = []
    for op, label in _OPS_LABEL.items():
        row = [label]
        for transport, _ in _TRANSPORTS:
            r = by.get((op, transport))
            if r is None:
                row.append("–")
            elif r["seconds"] is None:
                row.append(f"{_mb(r['bytes_per_party'])} MB")
            else:
                row.append(
                    f"{_ms(r['seconds'])}, {_mb(r['bytes_per_party'])} MB, {_rounds(r['rounds'])}"
                )
        rows.append(row)
    cpu_row = ["CPU of the step, all members"]
    for transport, _ in _TRANSPORTS:
        r = by.get(("train_step", transport))
        cpu_row.append(_ms(r.get("cpu_seconds")) if r else "–")
    rows.append(cpu_row)
    ours, stock = by.get(("train_step", "grpc+tls")), by.get(("train_step", "stock"))
    ratio = ""
    if ours and stock and ours["seconds"]:
        slower = stock["seconds"] / ours["seconds"]
        ratio = (
            f" In this snapshot stock CrypTen's step took {slower:.1f}× "
            f"ours, in {stock['rounds'] / ours['rounds']:.1f}× the rounds and "
            f"{stock['bytes_per_party'] / ours['bytes_per_party']:.1f}× the bytes."
        )
    return "\n\n".join(
        [
            "## CrypTen operations and one training step",
            "`smpc-synth bench mpc-ops`: 2 parties, per party; the training step is an MLP "
            "64-128-128-64, batch 256, SGD. The lower bound counts only the Beaver openings of "
            "the products (8 bytes a word)." + ratio,
            _table(["op", *(label for _, label in _TRANSPORTS)], rows),
            "How our protocols get there (the dealer's comparison, products that share a "
            "round, masks reused in the backward pass, ring products on float64 BLAS): "
            "[mpc-protocols.md](mpc-protocols.md).",
        ]
    )


def mpc_train(results: Path) -> str | None:
    """MPC training of the VAE against plaintext and stock crypten.nn."""
    r = _load_json(results / "mpc_train" / "mpc_train.json")
    if not r:
        return None
    cfg = r["config"]
    table = _table(
        ["", "seconds an epoch", "MB sent / party", "rounds"],
        [
            [
                "ours",
                f"{r['ours_seconds_per_epoch']:.2f}",
                f"{r['ours_bytes_per_epoch'] / 1e6:,.0f}",
                f"{r['ours_rounds_per_epoch']:,}",
            ],
            [
                "the same network in stock crypten.nn (same transport and dealer)",
                f"{r['stock_seconds_per_epoch']:.1f}",
                f"{r['stock_bytes_per_epoch'] / 1e6:,.0f}",
                f"{r['stock_rounds_per_epoch']:,.0f}",
            ],
            ["plaintext torch", f"{r['plaintext_seconds_per_epoch']:.3f}", "–", "–"],
        ],
    )
    alice = r["parties"].get("alice", {})
    phases = alice.get("ours_phases", {})
    steps = r["steps_per_epoch"]
    phase_rows = [
        [name, f"{p['seconds']:.2f}", f"{p['bytes_sent'] / 1e6:,.0f}", f"{p['rounds'] / steps:.0f}"]
        for name, p in phases.items()
        if p["seconds"] >= 0.01
    ]
    cpu = r.get("ours_cpu_seconds_per_epoch") or {}
    cpu_text = ""
    if cpu:
        total = sum(cpu.values())
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
        cpu_text = (
            f" An epoch used {total:.1f} s of CPU ({parts}); on {r.get('cores', 2)} cores no "
            f"epoch can take less than {total / r.get('cores', 2):.1f} s."
        )
    epochs = r.get("ours_epoch_seconds") or []
    first = ", ".join(f"{s:.1f}" for s in epochs[: cfg["epochs"]])
    return "\n\n".join(
        [
            "## Training the VAE in MPC",
            f"`python benchmarks/mpc_train.py`: `fair`, {cfg['rows']:,} rows, 2 parties and a "
            f"dealer, {steps} steps an epoch, the plaintext architecture. Ours is the median "
            f"of the last {cfg['steady_epochs']} of {cfg['epochs']} epochs (Adam's first steps "
            f"cost more; the epochs took {first} s).",
            table,
            f"Ours is {r['mpc_over_plaintext']:.0f}× a plaintext epoch and "
            f"{r['stock_over_ours']:.1f}× faster than stock crypten.nn. A {r['run_epochs']}-epoch "
            f"run averages {r['ours_run_mean_seconds_per_epoch']:.2f} s an epoch "
            f"({r['run_mean_over_plaintext']:.0f}× plaintext)." + cpu_text,
            "Where an epoch goes (party 0; rounds a step):",
            _table(["phase", "seconds", "MB sent", "rounds"], phase_rows),
        ]
    )


def he_agg(results: Path) -> str | None:
    """Encrypted aggregation (``bench he-agg``)."""
    records = _load_json(results / "he-agg" / "he_agg.json")
    if not records:
        return None
    largest = max(r["params"] for r in records)
    rows = []
    for r in sorted(
        (r for r in records if r["params"] == largest), key=lambda r: (r["scheme"], r["parties"])
    ):
        rows.append(
            [
                r["scheme"],
                str(r["parties"]),
                f"{r['wire_bytes_per_param']:.1f} B ({r['wire_bytes_per_param'] / 4:.1f}× float32)",
                f"{r['encrypt_s']:.2f} s",
                f"{r['aggregate_s']:.2f} s",
                f"{r['max_abs_error']:.1e}",
            ]
        )
    return "\n\n".join(
        [
            "## Encrypted aggregation",
            f"`smpc-synth bench he-agg`: one update of {largest:,} values. Ours packs two "
            "fixed-point lanes per CKKS slot and adds pairwise masks; the NVFlare-like "
            "setting is CKKS 8192, [60,40,40], 2^40 with a vector per layer.",
            _table(
                ["scheme", "parties", "wire / value", "encrypt", "aggregate", "max abs error"], rows
            ),
        ]
    )


def collapse(results: Path) -> str | None:
    """Model collapse (``bench collapse``): last generation against the first."""
    records = _load_jsonl(results / "collapse" / "collapse.jsonl")
    cfg = _load_json(results / "collapse" / "collapse_config.json")
    if not records or not cfg:
        return None
    last: dict[tuple, dict] = {}
    for r in records:
        key = (r.get("mode"), r.get("generator"), r.get("regime"))
        if key not in last or r.get("generation", 0) > last[key].get("generation", 0):
            last[key] = r
    metrics = [
        ("prdc_coverage", "PRDC coverage"),
        ("category_coverage", "category coverage"),
        ("variance_ratio_min", "min variance ratio"),
        ("prdc_recall", "PRDC recall"),
    ]
    rows = []
    for (mode, generator, regime), r in last.items():
        rel = r.get("relative") or {}
        rows.append([mode, generator, regime, *(_num(rel.get(k)) for k, _ in metrics)])
    if not rows:
        return None
    return "\n\n".join(
        [
            "## Model collapse",
            f"`smpc-synth bench collapse` on `{cfg['dataset']}`: each generation trains on the "
            "previous generation's samples (replace), on the real rows plus every earlier "
            f"sample (accumulate), or on samples plus {cfg['fresh_fraction']:.0%} fresh real "
            f"rows (fresh), with the same budget every generation. Generation "
            f"{cfg['generations']} as a ratio to generation 1:",
            _table(["mode", "generator", "regime", *(label for _, label in metrics)], rows),
            "Replace loses coverage and rare categories fastest; accumulating keeps most of it.",
        ]
    )


def dp_marginal(results: Path) -> str | None:
    """AIM and MST under a privacy budget (``bench dp``): the suite's own table."""
    records = _load_jsonl(results / "dp" / "dp.jsonl")
    table = results / "dp" / "dp.md"
    if not records or not table.is_file():
        return None
    return "\n\n".join(
        [
            "## Differentially private synthesis: AIM and MST",
            "`smpc-synth bench dp` (the configs in `benchmarks/configs/dp-*.toml` narrow it); "
            "wall seconds run from the members' start to `synthetic.csv`, evaluation excluded; "
            "`docs/marginal-generators.md` explains the mechanisms. " + _environment(records),
            table.read_text().strip(),
        ]
    )


def dp_sgd(results: Path) -> str | None:
    """DP-SGD for the VAE: utility against epsilon and the MPC epoch's cost (``bench dp-sgd``)."""
    records = _load_jsonl(results / "dp-sgd" / "dp_sgd.jsonl")
    table = results / "dp-sgd" / "dp_sgd.md"
    if not records or not table.is_file():
        return None
    spec = records[0]["spec"]
    return "\n\n".join(
        [
            "## DP-SGD: utility against epsilon",
            f"`smpc-synth bench dp-sgd`: the {spec['generator']} on `{spec['dataset']}`, "
            f"{spec['parties']} parties, {spec['epochs']} epochs, delta {spec['delta']:g}, "
            f"seed {spec['seed']}; `docs/privacy.md` explains the mechanisms.",
            table.read_text().strip(),
        ]
    )


SECTIONS: list[Callable[[Path], str | None]] = [
    quick,
    generators,
    mpc_ops,
    mpc_train,
    he_agg,
    collapse,
    dp_marginal,
    dp_sgd,
]


def render(results: Path = RESULTS) -> str:
    """The whole page, from the snapshots under ``results``."""
    parts = [HEADER.rstrip()]
    parts += [text for section in SECTIONS if (text := section(results))]
    return "\n\n".join(parts) + "\n"


def render_readme(readme: str, results: Path = RESULTS) -> str:
    """``readme`` with the headline table between its markers taken from the snapshot."""
    if HEADLINE_START not in readme or HEADLINE_END not in readme:
        return readme
    records = _load_jsonl(results / "quick" / "runs.jsonl")
    block = f"{_quick_intro(records)}\n\n{_quick_table(records)}" if records else ""
    head, rest = readme.split(HEADLINE_START, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    return f"{head}{HEADLINE_START}\n{block}\n{HEADLINE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    pages = {args.output: render(args.results)}
    if args.readme.is_file():
        pages[args.readme] = render_readme(args.readme.read_text(), args.results)
    stale = [p for p, text in pages.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run `make docs`")
        return 1 if stale else 0
    for path in stale:
        path.write_text(pages[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
