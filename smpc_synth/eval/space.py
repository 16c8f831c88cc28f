"""The common numeric space that distances and models work in, and seeded subsampling.

Numeric columns are scaled (by the real range for distances, standardised for models) and
categorical columns one-hot encoded; the encoder is always fitted on the real table so that
synthetic and holdout rows are measured with the real table's yardstick.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from smpc_synth.eval.columns import NUMERIC_KINDS, Kind
from smpc_synth.eval.defaults import MAX_ONEHOT_CATEGORIES, MISSING_LABEL


def make_encoder(kinds: dict[str, Kind], standardise: bool = False) -> ColumnTransformer:
    """Impute, scale numeric columns (range or z-score) and one-hot the categorical ones."""
    numeric = [c for c, k in kinds.items() if k in NUMERIC_KINDS]
    categorical = [c for c, k in kinds.items() if k not in NUMERIC_KINDS]
    scaler = StandardScaler() if standardise else MinMaxScaler()
    onehot = OneHotEncoder(
        handle_unknown="infrequent_if_exist",
        max_categories=MAX_ONEHOT_CATEGORIES,
        sparse_output=False,
    )
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), scaler), numeric),
            (
                "categorical",
                make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING_LABEL), onehot),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
    )


def encode(real: pd.DataFrame, kinds: dict[str, Kind], *others: pd.DataFrame) -> list[np.ndarray]:
    """``real`` and each of ``others`` in the normalised space fitted on ``real``."""
    encoder = make_encoder(kinds).fit(real)
    return [encoder.transform(df).astype(np.float64) for df in (real, *others)]


def subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``x``, drawn without replacement."""
    if len(x) <= n:
        return x
    return x[rng.choice(len(x), size=n, replace=False)]
