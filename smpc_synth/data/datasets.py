"""Built-in data sets, loaded offline from files that scikit-learn and statsmodels ship.

Each comes with proper types (categorical columns as text, booleans as bool) and a target
column for utility scores. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smpc_synth.errors import InputError


@dataclass
class BuiltinDataset:
    """A typed table, the column to predict for utility scores, and a one-line description."""

    frame: pd.DataFrame
    target: str
    description: str


def _breast_cancer() -> BuiltinDataset:
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer(as_frame=True)
    frame = raw.data.copy()
    frame["diagnosis"] = np.asarray(raw.target_names)[raw.target.to_numpy()].astype(str)
    return BuiltinDataset(
        frame,
        "diagnosis",
        "Wisconsin diagnostic breast cancer: 569 rows, 30 numeric cell measurements, "
        "binary diagnosis (scikit-learn).",
    )


def _wine() -> BuiltinDataset:
    from sklearn.datasets import load_wine

    raw = load_wine(as_frame=True)
    frame = raw.data.copy()
    frame["magnesium"] = frame["magnesium"].astype("int64")
    frame["proline"] = frame["proline"].astype("int64")
    frame["cultivar"] = np.asarray(raw.target_names)[raw.target.to_numpy()].astype(str)
    return BuiltinDataset(
        frame,
        "cultivar",
        "Wine recognition: 178 rows, 13 numeric chemical measurements, 3 cultivars (scikit-learn).",
    )


_MARRIAGE = {1: "very poor", 2: "poor", 3: "fair", 4: "good", 5: "very good"}
_RELIGIOUS = {1: "not", 2: "mildly", 3: "fairly", 4: "strongly"}
_EDUCATION = {
    9: "grade school",
    12: "high school",
    14: "some college",
    16: "college graduate",
    17: "some graduate school",
    20: "advanced degree",
}
_OCCUPATION = {
    1: "student",
    2: "farming or unskilled",
    3: "white-collar",
    4: "teacher, nurse or skilled",
    5: "managerial",
    6: "professional",
}


def _fair() -> BuiltinDataset:
    from statsmodels.datasets import fair

    raw = fair.load_pandas().data
    frame = pd.DataFrame(
        {
            "rate_marriage": raw["rate_marriage"].astype(int).map(_MARRIAGE),
            "age": raw["age"],
            "yrs_married": raw["yrs_married"],
            "children": raw["children"],
            "religious": raw["religious"].astype(int).map(_RELIGIOUS),
            "educ": raw["educ"].astype(int).map(_EDUCATION),
            "occupation": raw["occupation"].astype(int).map(_OCCUPATION),
            "occupation_husb": raw["occupation_husb"].astype(int).map(_OCCUPATION),
            "had_affair": raw["affairs"] > 0,
        }
    )
    return BuiltinDataset(
        frame,
        "had_affair",
        "Fair's extramarital affairs survey (Redbook 1974): 6,366 rows, 6 categorical and "
        "3 numeric columns, binary target (statsmodels).",
    )


def _randhie() -> BuiltinDataset:
    from statsmodels.datasets import randhie

    raw = randhie.load_pandas().data
    coinsurance = (np.exp(raw["lncoins"]) - 1).round().astype(int).map(lambda c: f"{c}%")
    health = np.select(
        [raw["hlthg"] == 1, raw["hlthf"] == 1, raw["hlthp"] == 1],
        ["good", "fair", "poor"],
        default="excellent",
    )
    frame = pd.DataFrame(
        {
            "visits": raw["mdvis"].astype("int64"),
            "coinsurance": coinsurance,
            "deductible": raw["idp"] == 1,
            "log_participation": raw["lpi"],
            "log_max_expense": raw["fmde"],
            "physical_limit": raw["physlm"],
            "chronic_diseases": raw["disea"],
            "health": health.astype(str),
        }
    )
    return BuiltinDataset(
        frame,
        "health",
        "RAND health insurance experiment: 20,190 rows, doctor visits, plan and health "
        "measures, 4-level self-rated health (statsmodels).",
    )


BUILTIN_DATASETS: dict[str, Callable[[], BuiltinDataset]] = {
    "breast_cancer": _breast_cancer,
    "wine": _wine,
    "fair": _fair,
    "randhie": _randhie,
}


def list_builtin() -> list[str]:
    """Names accepted by :func:`load_builtin`, sorted."""
    return sorted(BUILTIN_DATASETS)


def load_builtin(name: str) -> BuiltinDataset:
    """Load a built-in data set by name; an unknown name is an InputError listing the names."""
    try:
        loader = BUILTIN_DATASETS[name]
    except KeyError:
        raise InputError(
            f"unknown data set '{name}' (built-in: {', '.join(list_builtin())})"
        ) from None
    return loader()
