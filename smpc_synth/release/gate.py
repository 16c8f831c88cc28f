"""The release gate: refuse to release synthetic data whose evaluation fails the run's policy.

The policy is :class:`~smpc_synth.config.GateConfig` (thresholds and their defaults live
there). Each rule reads one metric of the evaluation report (``smpc_synth.eval.evaluate``):

- ``quality_score`` (fidelity, SDMetrics) must be at least ``min_quality_score``;
- ``category_coverage`` (share of real categories present) at least ``min_category_coverage``;
- ``variance_ratio_min`` (worst numeric column's synthetic/real variance) at least
  ``min_variance_ratio`` -- collapse shows first as shrinking variance;
- ``exact_copy_rate`` (synthetic rows equal to a training row) at most
  ``max_exact_copy_rate``, or at most the holdout's own copy rate when that is higher (on
  coarse discrete tables fresh real rows coincide with training rows too);
- ``dcr_ratio`` = median DCR(synthetic -> train) / median DCR(holdout -> train) at least
  ``min_dcr_ratio``: synthetic rows sitting much closer to the training rows than unseen real
  rows do are copies or near-copies;
- ``epsilon`` (the report's ``dp`` section: the run's differential-privacy budget) at most
  ``max_epsilon``, when that is set: a run without DP then fails.

A metric that cannot apply to the table (no numeric columns for the variance ratio, no
categorical columns for category coverage, holdout rows at distance zero for the DCR ratio)
is skipped and listed as such. A metric that should apply but is missing fails: the gate
fails closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smpc_synth.config import GateConfig
from smpc_synth.errors import ReleaseRefused

NUMERIC_KINDS = ("numeric", "integer")
CATEGORICAL_KINDS = ("categorical", "boolean")


@dataclass(frozen=True)
class GateFailure:
    """One failed rule: the metric, its value (None: not measured), the threshold, the rule."""

    metric: str
    value: float | None
    threshold: float
    rule: str  # ">=" or "<="

    def describe(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value:.4g}"
        return f"{self.metric} = {shown}, needs {self.rule} {self.threshold:.4g}"


@dataclass
class GateDecision:
    """The gate's verdict on one synthetic table, and whether it was overridden."""

    passed: bool
    failures: list[GateFailure] = field(default_factory=list)
    checked: dict[str, float] = field(default_factory=dict)  # metric -> value that passed
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why it did not apply
    enabled: bool = True
    override: bool = False
    reason: str = ""  # why the gate did not apply (not enabled)

    @property
    def released(self) -> bool:
        """Whether ``synthetic.csv`` may be written (passed, or failed but overridden)."""
        return self.passed or self.override

    def describe(self) -> str:
        """A few readable lines: the verdict, each failed metric, the skipped ones."""
        if not self.enabled:
            return self.reason or (
                "release gate disabled in the run config: synthetic data released unchecked"
            )
        if self.passed:
            head = f"release gate passed ({len(self.checked)} metrics checked)"
        elif self.override:
            head = "release gate FAILED, released anyway by explicit override:"
        else:
            head = "release gate refused the synthetic data (synthetic.csv not written):"
        lines = [head]
        lines += [f"  - {f.describe()}" for f in self.failures]
        lines += [f"  (skipped {m}: {why})" for m, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for metrics.json and the manifest."""
        return {
            "enabled": self.enabled,
            "passed": self.passed,
            "override": self.override,
            "released": self.released,
            "failures": [
                {"metric": f.metric, "value": f.value, "threshold": f.threshold, "rule": f.rule}
                for f in self.failures
            ],
            "checked": dict(self.checked),
            "skipped": dict(self.skipped),
            **({"reason": self.reason} if self.reason else {}),
        }


@dataclass(frozen=True)
class _Rule:
    metric: str
    section: str
    rule: str
    threshold: Callable[[GateConfig, dict[str, Any]], float | None]  # None: rule not set
    not_applicable: Callable[[dict[str, Any]], str | None]


def _kinds(report: dict[str, Any]) -> list[str]:
    return list((report.get("meta") or {}).get("column_kinds", {}).values())


def _no_kind(wanted: tuple[str, ...], what: str) -> Callable[[dict[str, Any]], str | None]:
    def check(report: dict[str, Any]) -> str | None:
        kinds = _kinds(report)
        if kinds and not any(k in wanted for k in kinds):
            return f"the table has no {what} columns"
        return None

    return check


def _always(_: dict[str, Any]) -> str | None:
    return None


def _holdout_at_zero(report: dict[str, Any]) -> str | None:
    if (report.get("privacy") or {}).get("dcr_holdout_median") == 0:
        return "median holdout DCR is 0 (real rows repeat); the exact-copy rule covers copying"
    return None


def _copy_threshold(policy: GateConfig, report: dict[str, Any]) -> float:
    holdout_rate = (report.get("privacy") or {}).get("holdout_exact_copy_rate") or 0.0
    return max(policy.max_exact_copy_rate, float(holdout_rate))


RULES: tuple[_Rule, ...] = (
    _Rule("quality_score", "fidelity", ">=", lambda p, _: p.min_quality_score, _always),
    _Rule(
        "category_coverage",
        "collapse",
        ">=",
        lambda p, _: p.min_category_coverage,
        _no_kind(CATEGORICAL_KINDS, "categorical or boolean"),
    ),
    _Rule(
        "variance_ratio_min",
        "collapse",
        ">=",
        lambda p, _: p.min_variance_ratio,
        _no_kind(NUMERIC_KINDS, "numeric"),
    ),
    _Rule("exact_copy_rate", "privacy", "<=", _copy_threshold, _always),
    _Rule("dcr_ratio", "privacy", ">=", lambda p, _: p.min_dcr_ratio, _holdout_at_zero),
    _Rule("epsilon", "dp", "<=", lambda p, _: p.max_epsilon, _always),
)


def check_release(
    report: dict[str, Any],
    policy: GateConfig,
    *,
    override: bool = False,
    rules: tuple[_Rule, ...] = RULES,
) -> GateDecision:
    """Apply ``policy`` to an evaluation ``report``; ``override`` records an explicit release."""
    if not policy.enabled:
        return GateDecision(passed=True, enabled=False, override=override)
    decision = GateDecision(passed=True, override=override)
    for rule in rules:
        reason = rule.not_applicable(report)
        if reason is not None:
            decision.skipped[rule.metric] = reason
            continue
        threshold = rule.threshold(policy, report)
        if threshold is None:
            continue
        value = _metric(report, rule.section, rule.metric)
        ok = value is not None and (value >= threshold if rule.rule == ">=" else value <= threshold)
        if ok:
            decision.checked[rule.metric] = value
        else:
            decision.failures.append(GateFailure(rule.metric, value, threshold, rule.rule))
    decision.passed = not decision.failures
    return decision


def check_private_release(
    privacy: dict[str, Any], policy: GateConfig, *, override: bool = False, reason: str = ""
) -> GateDecision:
    """The gate of a DP run: only ``max_epsilon``, against the privacy record's epsilon (a
    public value); the rules that read real rows do not decide (``reason`` says why)."""
    epsilon_rules = tuple(r for r in RULES if r.section == "dp")
    if not policy.enabled or policy.max_epsilon is None:
        return GateDecision(passed=True, enabled=False, override=override, reason=reason)
    report = {"dp": {"epsilon": privacy.get("epsilon")}}
    decision = check_release(report, policy, override=override, rules=epsilon_rules)
    for rule in RULES:
        if rule not in epsilon_rules:
            decision.skipped[rule.metric] = "reads real rows: not applied under DP"
    return decision


def _metric(report: dict[str, Any], section: str, metric: str) -> float | None:
    value = (report.get(section) or {}).get(metric)
    if section == "privacy" and metric == "dcr_ratio" and value is None:
        privacy = report.get(section) or {}
        syn, hold = privacy.get("dcr_synthetic_median"), privacy.get("dcr_holdout_median")
        value = syn / hold if syn is not None and hold else None
    return float(value) if isinstance(value, int | float) else None


def enforce(decision: GateDecision) -> None:
    """Raise :class:`ReleaseRefused` (exit code 3) naming every failed metric, unless released.

    Call it last, after the report, metrics and manifest of the refused run are written.
    """
    if not decision.released:
        raise ReleaseRefused(
            decision.describe() + "\n(pass the override flag to release it anyway; "
            "the override is recorded in metrics.json and manifest.json)"
        )
