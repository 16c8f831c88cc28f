"""``smpc-synth bench collapse``: recursive training on synthetic data, and how it collapses.

Generation 1 is trained on the real training rows; generation t+1 on data built from earlier
generations under one of three regimes (Shumailov et al. 2024; Gerstgrasser et al. 2024):

- ``replace``: only generation t's samples;
- ``accumulate``: the real rows plus every earlier generation's samples;
- ``fresh``: generation t's samples with a fixed fraction swapped for real rows.

Every generation gets the same training budget: the same number of row visits (so the same
number of optimiser steps) as generation 1, however large its training set. Each
generation's sample is evaluated against the *real* training rows and holdout, and every
indicator is also reported relative to generation 1, since an under-trained generator
already looks collapsed there. Training is a pluggable :data:`Trainer`: plaintext fits
in-process; the secure modes run a whole simulated session per generation.

Writes ``collapse.jsonl`` (one line per mode, generator, regime and generation),
``collapse.md`` and ``collapse_MODE_GENERATOR.png``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from smpc_synth.config import MODES, RunConfig
from smpc_synth.errors import InputError, SmpcSynthError

REGIMES = ("replace", "accumulate", "fresh")
# (report section, metric, label): the indicators recorded per generation, in table order.
INDICATORS: tuple[tuple[str, str, str], ...] = (
    ("collapse", "variance_ratio_min", "variance ratio (min)"),
    ("collapse", "variance_ratio_median", "variance ratio (median)"),
    ("collapse", "tail_mass", "tail mass"),
    ("collapse", "category_coverage", "category coverage"),
    ("collapse", "range_coverage", "range coverage"),
    ("collapse", "prdc_coverage", "PRDC coverage"),
    ("collapse", "prdc_recall", "PRDC recall"),
    ("collapse", "correlation_error", "correlation error"),
    ("utility", "tstr_auc", "TSTR AUC"),
    ("fidelity", "quality_score", "quality score"),
)
# The indicators that show whether the real table's support is still covered.
COVERAGE = ("prdc_coverage", "category_coverage")


@dataclass
class CollapseConfig:
    """The experiment; every default is the quick run of ``smpc-synth bench collapse``."""

    dataset: str = "fair"
    rows: int | None = 2000  # seeded subsample of the built-in table (None: every row)
    holdout_fraction: float = RunConfig().holdout_fraction
    generators: list[str] = field(default_factory=lambda: ["gaussian", "vae"])
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    generations: int = 10
    fresh_fraction: float = 0.1  # share of real rows in each 'fresh' training set
    epochs: dict[str, int] = field(default_factory=lambda: {"vae": 100, "gan": 100})
    seed: int = 0
    # Secure mode(s): one simulated session per generation, so kept short by default.
    secure_modes: list[str] = field(default_factory=lambda: ["mpc"])  # [] to skip
    secure_parties: int = 3
    secure_generators: list[str] = field(default_factory=lambda: ["gaussian"])
    secure_regimes: list[str] = field(default_factory=lambda: ["replace", "accumulate"])
    secure_generations: int = 10

    def validate(self, source: str = "collapse config") -> None:
        if self.generations < 2 or self.secure_generations < 2:
            raise InputError(f"{source}: generations must be at least 2")
        for key in ("regimes", "secure_regimes"):
            unknown = [r for r in getattr(self, key) if r not in REGIMES]
            if unknown:
                raise InputError(f"{source}: key '{key}': {unknown[0]!r} is not in {REGIMES}")
        secure = [m for m in self.secure_modes if m == "plaintext" or m not in MODES]
        if secure:
            raise InputError(f"{source}: key 'secure_modes': {secure[0]!r} is not federated|mpc")
        if not 0.0 < self.fresh_fraction < 1.0:
            raise InputError(f"{source}: key 'fresh_fraction' must be in (0, 1)")

    @classmethod
    def load(cls, path: Path | None, **overrides: Any) -> CollapseConfig:
        """Defaults, then the TOML file (top level or a [collapse] table), then ``overrides``."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                raw = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InputError(f"{path}: cannot read the collapse config: {exc}") from None
            raw = raw.get("collapse", raw)
        raw.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"{path or 'options'}: unknown key {unknown[0]!r}")
        cfg = cls(**raw)
        cfg.validate(str(path or "options"))
        return cfg


class Model(Protocol):
    def sample(self, n: int, seed: int = 0) -> pd.DataFrame: ...


# A trainer fits one generator on one table with a fixed budget and returns something that
# samples: plaintext is Synthesizer.fit; the secure modes train through a simulated session.
Trainer = Callable[..., Model]  # (frame, schema, *, generator, epochs, seed) -> Model


def plaintext_trainer(frame: pd.DataFrame, schema, *, generator: str, epochs, seed: int) -> Model:
    """Fit in this process, in the clear."""
    from smpc_synth.models import Synthesizer

    return Synthesizer.fit(frame, schema, generator=generator, epochs=epochs, seed=seed)


def simulated_trainer(mode: str, parties: int) -> Trainer:
    """A trainer that runs one whole ``simulate`` session (``mode``: federated or mpc).

    The session's own holdout is off (the experiment keeps its own) and so is its release
    gate (collapsed generations are what is being measured).
    """

    def train(frame: pd.DataFrame, schema, *, generator: str, epochs, seed: int) -> Model:
        from smpc_synth.config import GateConfig
        from smpc_synth.models import Synthesizer
        from smpc_synth.runtime.simulate import simulate

        cfg = RunConfig(
            mode=mode,  # type: ignore[arg-type]
            generator=generator,
            epochs=epochs,
            seed=seed,
            holdout_fraction=0.0,
            gate=GateConfig(enabled=False),
        )
        with tempfile.TemporaryDirectory(prefix="collapse-") as tmp:
            run = Path(tmp) / "run"
            data, schema_path = Path(tmp) / "train.csv", Path(tmp) / "schema.toml"
            frame.to_csv(data, index=False)
            schema.save(schema_path)
            try:
                code = simulate(
                    parties, data=data, schema=schema_path, out=run, config=cfg, show_progress=False
                ).exit_code
            except SmpcSynthError:
                # The launcher copies generator.pt only after every member succeeded; its own
                # evaluation then refuses the empty holdout, which this experiment replaces.
                code = 0 if (run / "generator.pt").is_file() else 1
            if code != 0 or not (run / "generator.pt").is_file():
                raise SmpcSynthError(
                    f"collapse: the {mode} session failed (exit code {code}): {_last_errors(run)}"
                )
            return Synthesizer.load(run / "generator.pt")

    return train


def _last_errors(run: Path) -> str:
    """The last ERROR line of each member's log, to say why a session failed."""
    found = []
    for log_file in sorted((run / "logs").glob("*.log")):
        errors = [ln for ln in log_file.read_text().splitlines() if "ERROR" in ln or "error:" in ln]
        if errors:
            found.append(f"{log_file.stem}: {errors[-1].strip()}")
    return "; ".join(found) or "no error in the logs"


def trainer_for(mode: str, cfg: CollapseConfig) -> Trainer:
    """The hook: plaintext in-process, anything else through a simulated session."""
    return plaintext_trainer if mode == "plaintext" else simulated_trainer(mode, cfg.secure_parties)


# -- the experiment -----------------------------------------------------------------------


@dataclass
class Table:
    """The real rows of the experiment and what evaluating against them needs."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    schema: Any
    target: str | None
    name: str


def load_table(cfg: CollapseConfig) -> Table:
    from smpc_synth.data import holdout_split, infer_schema, load_builtin

    data = load_builtin(cfg.dataset)
    schema = infer_schema(data.frame, target=data.target)  # public: bounds from the full table
    frame = data.frame
    if cfg.rows is not None and cfg.rows < len(frame):
        frame = frame.sample(cfg.rows, random_state=cfg.seed).reset_index(drop=True)
    discrete = schema.column(data.target).kind in ("categorical", "boolean")
    train, holdout = holdout_split(
        frame, cfg.holdout_fraction, cfg.seed, stratify=data.target if discrete else None
    )
    return Table(train, holdout, schema, data.target, cfg.dataset)


def training_set(
    regime: str, table: Table, history: list[pd.DataFrame], fraction: float, seed: int
) -> pd.DataFrame:
    """The rows the next generation trains on, given every earlier generation's sample."""
    if regime == "replace":
        return history[-1]
    if regime == "accumulate":
        return pd.concat([table.train, *history], ignore_index=True)
    n_real = max(1, round(fraction * len(history[-1])))
    synthetic = history[-1].sample(len(history[-1]) - n_real, random_state=seed)
    real = table.train.sample(n_real, random_state=seed)
    return pd.concat([synthetic, real], ignore_index=True)


def budget_epochs(generator: str, cfg: CollapseConfig, real_rows: int, rows: int) -> int | None:
    """Epochs that give ``rows`` training rows as many row visits as generation 1 had."""
    base = cfg.epochs.get(generator)
    if base is None:
        return None  # closed-form generators (gaussian) have no budget to fix
    return max(1, round(base * real_rows / rows))


def indicators(report: dict[str, Any]) -> dict[str, float | None]:
    return {metric: (report.get(section) or {}).get(metric) for section, metric, _ in INDICATORS}


def relative(values: dict[str, Any], first: dict[str, Any]) -> dict[str, float | None]:
    """Each indicator divided by its generation-1 value (None when that is missing or 0)."""
    return {
        k: (v / first[k] if v is not None and first.get(k) not in (None, 0) else None)
        for k, v in values.items()
    }


def run_series(
    mode: str,
    generator: str,
    regimes: list[str],
    generations: int,
    table: Table,
    cfg: CollapseConfig,
    trainer: Trainer,
) -> Iterator[dict[str, Any]]:
    """One record per regime and generation; generation 1 is trained once and shared."""
    from smpc_synth.eval import evaluate

    n = len(table.train)

    def generation(frame: pd.DataFrame, t: int) -> tuple[pd.DataFrame, dict[str, Any]]:
        epochs = budget_epochs(generator, cfg, n, len(frame))
        started = time.perf_counter()
        model = trainer(frame, table.schema, generator=generator, epochs=epochs, seed=cfg.seed + t)
        sample = model.sample(n, seed=cfg.seed + 1000 + t)
        fitted = time.perf_counter()
        report = evaluate(
            table.train,
            sample,
            holdout=table.holdout,
            target=table.target,
            schema=table.schema,
            seed=cfg.seed,
        )
        meta = {
            "train_rows": len(frame),
            "epochs": epochs,
            "seconds_train": fitted - started,
            "seconds_eval": time.perf_counter() - fitted,
        }
        return sample, {**meta, "values": indicators(report)}

    first_sample, first = generation(table.train, 1)
    for regime in regimes:
        history, record = [first_sample], first
        for t in range(1, generations + 1):
            if t > 1:
                frame = training_set(regime, table, history, cfg.fresh_fraction, cfg.seed + t)
                sample, record = generation(frame, t)
                history.append(sample)
            yield {
                "mode": mode,
                "generator": generator,
                "regime": regime,
                "generation": t,
                "dataset": table.name,
                **{k: v for k, v in record.items() if k != "values"},
                **record["values"],
                "relative": relative(record["values"], first["values"]),
            }


def run_experiment(
    cfg: CollapseConfig, out_dir: Path, log: Callable[[str], None] = print
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every series, appending each record to ``collapse.jsonl`` as it is measured.

    A failing secure series is reported (second value) and the rest still run.
    """
    table = load_table(cfg)
    plans = [("plaintext", g, cfg.regimes, cfg.generations) for g in cfg.generators]
    plans += [
        (m, g, cfg.secure_regimes, cfg.secure_generations)
        for m in cfg.secure_modes
        for g in cfg.secure_generators
    ]
    log(
        f"collapse: {table.name}, {len(table.train)} training rows, "
        f"{len(table.holdout)} holdout rows; {len(plans)} series"
    )
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    with open(out_dir / "collapse.jsonl", "w") as sink:
        for mode, generator, regimes, generations in plans:
            trainer = trainer_for(mode, cfg)
            series = run_series(mode, generator, regimes, generations, table, cfg, trainer)
            try:
                for record in series:
                    records.append(record)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    log(_progress_line(record))
            except SmpcSynthError as exc:
                if mode == "plaintext":
                    raise
                failures.append(f"{mode}/{generator}: {exc}")
                log(f"  {mode}/{generator} series failed, the others go on: {exc}")
    return records, failures


def _progress_line(r: dict[str, Any]) -> str:
    cov, rel = r.get("prdc_coverage"), r["relative"].get("prdc_coverage")
    shown = "n/a" if cov is None else f"{cov:.3f} ({rel:.2f}x gen 1)" if rel else f"{cov:.3f}"
    return (
        f"  {r['mode']}/{r['generator']}/{r['regime']} generation {r['generation']}: "
        f"PRDC coverage {shown}, train {r['seconds_train']:.1f} s"
    )


# -- outputs ------------------------------------------------------------------------------


def _series(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault((r["mode"], r["generator"]), []).append(r)
    return grouped


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mode and generator: final-generation coverage relative to generation 1, by regime,
    and whether replace lost more of it than accumulate."""
    rows = []
    for (mode, generator), rs in _series(records).items():
        last = max(r["generation"] for r in rs)
        final = {r["regime"]: r for r in rs if r["generation"] == last}
        row: dict[str, Any] = {"mode": mode, "generator": generator, "generation": last}
        for metric in COVERAGE:
            rel = {g: final[g]["relative"].get(metric) for g in final}
            row[metric] = rel
            if rel.get("replace") is not None and rel.get("accumulate") is not None:
                row[f"{metric}_replace_worse"] = rel["replace"] < rel["accumulate"]
        rows.append(row)
    return rows


def write_markdown(
    records: list[dict[str, Any]], cfg: CollapseConfig, path: Path, failures: Sequence[str] = ()
) -> None:
    """A summary of the last generation relative to generation 1, then every generation."""
    lines = [
        f"# Model collapse: {cfg.dataset}",
        "",
        f"Recursive training for up to {cfg.generations} generations; regimes: replace, "
        f"accumulate (real + every earlier sample), fresh ({cfg.fresh_fraction:.0%} real rows "
        "per generation). Same training budget (row visits) every generation. Values are "
        "measured against the real training rows and holdout; ratios are to generation 1.",
        "",
        "## Last generation relative to generation 1",
        "",
        "| mode | generator | regime | gen | " + " | ".join(lbl for *_, lbl in INDICATORS) + " |",
        "|---|---|---|---|" + "---|" * len(INDICATORS),
    ]
    for (mode, generator), rs in _series(records).items():
        last = max(r["generation"] for r in rs)
        for r in (r for r in rs if r["generation"] == last):
            cells = [_fmt(r["relative"][m]) for _, m, _ in INDICATORS]
            lines.append(
                f"| {mode} | {generator} | {r['regime']} | {last} | " + " | ".join(cells) + " |"
            )
    for (mode, generator), rs in _series(records).items():
        generations = sorted({r["generation"] for r in rs})
        lines += ["", f"## {mode} / {generator}: every generation (absolute values)", ""]
        lines.append("| indicator | regime | " + " | ".join(map(str, generations)) + " |")
        lines.append("|---|---|" + "---|" * len(generations))
        for _, metric, label in INDICATORS:
            for regime in dict.fromkeys(r["regime"] for r in rs):
                by_gen = {r["generation"]: r[metric] for r in rs if r["regime"] == regime}
                cells = [_fmt(by_gen.get(g)) for g in generations]
                lines.append(f"| {label} | {regime} | " + " | ".join(cells) + " |")
    lines += ["", "## Replace vs accumulate (coverage at the last generation, ratio to gen 1)", ""]
    for row in summary(records):
        for metric in COVERAGE:
            rel = row[metric]
            verdict = row.get(f"{metric}_replace_worse")
            if verdict is None:
                continue
            lines.append(
                f"- {row['mode']}/{row['generator']} {metric}: replace "
                f"{_fmt(rel['replace'])} vs accumulate {_fmt(rel['accumulate'])} -> "
                + _verdict(rel["replace"], rel["accumulate"])
            )
    if failures:
        lines += ["", "## Series that failed", "", *(f"- {f}" for f in failures)]
    path.write_text("\n".join(lines) + "\n")


def _verdict(replace: float, accumulate: float) -> str:
    if replace == accumulate:
        return "no difference"
    return "replace degrades faster" if replace < accumulate else "replace does NOT degrade faster"


def write_plots(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per mode and generator: each indicator (ratio to generation 1) per regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (mode, generator), rs in _series(records).items():
        cols = 5
        rows = -(-len(INDICATORS) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        for ax, (_, metric, label) in zip(axes.flat, INDICATORS):
            for regime in dict.fromkeys(r["regime"] for r in rs):
                points = [
                    (r["generation"], r["relative"][metric])
                    for r in rs
                    if r["regime"] == regime and r["relative"][metric] is not None
                ]
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, label=regime)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("generation", fontsize=8)
            ax.axhline(1.0, color="grey", linewidth=0.5)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(INDICATORS) :]:
            ax.axis("off")
        axes.flat[0].set_ylabel("ratio to generation 1", fontsize=8)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(f"model collapse: {mode} / {generator}", fontsize=11)
        fig.tight_layout()
        path = out_dir / f"collapse_{mode}_{generator}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(out_dir: Path, config: Path | None = None, **overrides: Any) -> int:
    """Run the experiment with ``config`` (TOML) and ``overrides``; write its files to
    ``out_dir``. Returns 0, or 1 if a secure series failed (its error is printed)."""
    import torch
    from threadpoolctl import threadpool_limits

    cfg = CollapseConfig.load(config, **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    started = time.perf_counter()
    with threadpool_limits(1):  # sklearn's OpenMP threads thrash on shared cores
        records, failures = run_experiment(cfg, out_dir, log=lambda s: print(s, flush=True))
    write_markdown(records, cfg, out_dir / "collapse.md", failures)
    plots = write_plots(records, out_dir)
    (out_dir / "collapse_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    for row in summary(records):
        for metric in COVERAGE:
            if f"{metric}_replace_worse" in row:
                rel = row[metric]
                print(
                    f"{row['mode']}/{row['generator']} {metric} at generation "
                    f"{row['generation']} (x gen 1): replace {_fmt(rel['replace'])}, "
                    f"accumulate {_fmt(rel['accumulate'])}"
                    + (f", fresh {_fmt(rel['fresh'])}" if "fresh" in rel else "")
                )
    print(
        f"wrote {out_dir}/collapse.jsonl, collapse.md and {len(plots)} plot(s) "
        f"in {time.perf_counter() - started:.0f} s",
        file=sys.stdout,
    )
    for failure in failures:
        print(f"error: series failed: {failure}", file=sys.stderr)
    return 1 if failures else 0
