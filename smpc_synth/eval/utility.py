"""Utility: train on synthetic, test on real holdout (TSTR) against train-on-real (TRTR).

Two model families (logistic regression and a gradient-boosted tree) so that a generator is
not judged by one learner's quirks; the headline is their mean. The score is ROC AUC for a
binary target and macro one-vs-rest AUC otherwise, computed per holdout class so that a
class the synthetic table lacks scores 0.5 for that class instead of crashing; a synthetic
table with a single class scores 0.5 outright.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from smpc_synth.eval.columns import NUMERIC_KINDS, Kind, labels
from smpc_synth.eval.defaults import LOGREG_MAX_ITER, MAX_TARGET_CLASSES, MAX_TRAIN_ROWS
from smpc_synth.eval.space import make_encoder

CONSTANT_AUC = 0.5  # what a model that always predicts the one class it saw achieves


def _models(seed: int) -> dict[str, ClassifierMixin]:
    return {
        "logistic_regression": LogisticRegression(max_iter=LOGREG_MAX_ITER),
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=seed),
    }


def empty_utility(reason: str, target: str | None = None) -> dict[str, Any]:
    """The utility section with no scores, saying why."""
    return {
        "target": target,
        "tstr_auc": None,
        "trtr_auc": None,
        "gap": None,
        "models": {},
        "notes": [],
        "reason": reason,
    }


def classification_problem(real: pd.DataFrame, target: str, kind: Kind) -> str | None:
    """Why ``target`` cannot be a classification target, or None if it can."""
    distinct = real[target].nunique()
    if kind in NUMERIC_KINDS and distinct > MAX_TARGET_CLASSES:
        return (
            f"target {target!r} is continuous ({distinct} distinct values); "
            f"utility needs a class column with at most {MAX_TARGET_CLASSES} values"
        )
    if distinct < 2:
        return f"target {target!r} has a single value in the real table"
    return None


def utility_metrics(
    train: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    target: str,
    kinds: dict[str, Kind],
    seed: int,
) -> dict[str, Any]:
    """TSTR and TRTR AUC per model on ``holdout``, their means and the gap (TRTR - TSTR)."""
    problem = classification_problem(train, target, kinds[target])
    if problem:
        return empty_utility(problem, target)
    test = holdout[holdout[target].notna()]
    y_test = labels(test[target]).to_numpy()
    classes = sorted(set(y_test))
    if len(classes) < 2:
        return empty_utility(f"holdout has a single class of {target!r}", target)
    features = {c: k for c, k in kinds.items() if c != target}
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    models: dict[str, dict[str, Any]] = {name: {} for name in _models(seed)}
    for source, table in (("trtr", train), ("tstr", synthetic)):
        table = _training_rows(table[table[target].notna()], rng)
        y = labels(table[target]).to_numpy()
        absent = [c for c in classes if c not in set(y)]
        if absent and source == "tstr":
            notes.append(f"synthetic table lacks class(es) {absent} of {target!r}")
        if len(set(y)) < 2:
            notes.append(
                f"{source}: training rows hold fewer than two classes of {target!r}; "
                f"scored as a constant predictor (AUC {CONSTANT_AUC})"
            )
            for scores in models.values():
                scores[f"{source}_auc"] = CONSTANT_AUC
            continue
        for name, model in _models(seed).items():
            pipeline = make_pipeline(make_encoder(features, standardise=True), model)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    pipeline.fit(table[list(features)], y)
                proba = pipeline.predict_proba(test[list(features)])
            except ValueError as exc:
                notes.append(f"{name} ({source}) could not train: {exc}")
                continue
            models[name][f"{source}_auc"] = _macro_auc(
                y_test, proba, list(pipeline.classes_), classes
            )
    both = [m for m in models.values() if "tstr_auc" in m and "trtr_auc" in m]
    tstr = float(np.mean([m["tstr_auc"] for m in both])) if both else None
    trtr = float(np.mean([m["trtr_auc"] for m in both])) if both else None
    return {
        "target": target,
        "task": "binary" if len(classes) == 2 else "multiclass",
        "classes": len(classes),
        "tstr_auc": tstr,
        "trtr_auc": trtr,
        "gap": trtr - tstr if both else None,
        "models": models,
        "notes": notes,
        "reason": None if both else "no model trained on both real and synthetic rows",
    }


def _training_rows(table: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    if len(table) <= MAX_TRAIN_ROWS:
        return table
    return table.iloc[np.sort(rng.choice(len(table), MAX_TRAIN_ROWS, replace=False))]


def _macro_auc(
    y_true: np.ndarray, proba: np.ndarray, known: list[str], classes: list[str]
) -> float:
    """Mean one-vs-rest AUC over the holdout classes (one class only for a binary target)."""
    scored = classes[1:] if len(classes) == 2 else classes
    aucs = []
    for cls in scored:
        score = proba[:, known.index(cls)] if cls in known else np.zeros(len(y_true))
        aucs.append(roc_auc_score(y_true == cls, score))
    return float(np.mean(aucs))
