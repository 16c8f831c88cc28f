"""Quality targets on the built-in mixed table (slow): SDMetrics quality and TSTR ROC AUC.

Run with ``pytest tests/unit/models/test_models_quality.py -m slow -s`` to see the figures. The
targets: gaussian and vae reach a quality score of at least 0.80, and a classifier trained on
synthetic rows scores a ROC AUC on real holdout rows within 0.05 of one trained on the real rows.
"""

from __future__ import annotations

import time
import warnings

import pandas as pd
import pytest
import torch
from sdmetrics.reports.single_table import QualityReport
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from smpc_synth.data.datasets import load_builtin
from smpc_synth.data.schema import infer_schema
from smpc_synth.models import Synthesizer

torch.set_num_threads(1)
DATASET = "fair"
MIN_QUALITY = 0.80
MAX_AUC_GAP = 0.05


def _auc(train: pd.DataFrame, test: pd.DataFrame, target: str) -> float:
    """ROC AUC on ``test`` of a gradient-boosting classifier trained on ``train``."""
    x_train = pd.get_dummies(train.drop(columns=[target]), dtype=float)
    x_test = pd.get_dummies(test.drop(columns=[target]), dtype=float)
    x_test = x_test.reindex(columns=x_train.columns, fill_value=0.0)
    positive = test[target].iloc[0]
    clf = HistGradientBoostingClassifier(random_state=0)
    clf.fit(x_train, train[target] == positive)
    return roc_auc_score(test[target] == positive, clf.predict_proba(x_test)[:, 1])


def _quality(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    metadata = {
        "columns": {
            c: {"sdtype": "numerical" if real[c].dtype.kind in "fiu" else "categorical"}
            for c in real
        }
    }
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(real, synthetic, metadata, verbose=False)
    return report.get_score()


@pytest.fixture(scope="module")
def split():
    data = load_builtin(DATASET)
    train, test = train_test_split(
        data.frame, test_size=0.2, random_state=0, stratify=data.frame[data.target]
    )
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    schema = infer_schema(data.frame, target=data.target)
    return train, test, schema, data.target


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gaussian", "vae"])
def test_generator_meets_quality_and_utility_targets(split, name):
    train, test, schema, target = split
    assert len(train) >= 5000
    start, cpu_start = time.perf_counter(), time.process_time()
    synth = Synthesizer.fit(train, schema, name, seed=0)
    synthetic = synth.sample(len(train), seed=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    quality = _quality(train, synthetic)
    trtr, tstr = _auc(train, test, target), _auc(synthetic, test, target)
    print(
        f"\n{name} on {DATASET} ({len(train)} rows): train+sample {seconds:.1f} s "
        f"({cpu:.1f} s CPU), "
        f"quality {quality:.3f}, TSTR {tstr:.3f}, TRTR {trtr:.3f}"
    )
    assert quality >= MIN_QUALITY
    assert tstr >= trtr - MAX_AUC_GAP
