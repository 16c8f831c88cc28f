"""Built-in data sets load offline, typed, with their target."""

from __future__ import annotations

import pandas as pd
import pytest

from smpc_synth.data import BUILTIN_DATASETS, list_builtin, load_builtin
from smpc_synth.errors import InputError


def test_registry_lists_required_sets():
    assert {"breast_cancer", "wine", "fair"} <= set(list_builtin())
    assert list_builtin() == sorted(BUILTIN_DATASETS)


@pytest.mark.parametrize("name", list_builtin())
def test_builtin_is_typed_and_complete(name):
    ds = load_builtin(name)
    assert ds.target in ds.frame.columns
    assert ds.description
    assert not ds.frame.isna().any().any()
    assert ds.frame[ds.target].nunique() >= 2
    for column in ds.frame.columns:
        dtype = ds.frame[column].dtype
        is_text = pd.api.types.is_object_dtype(dtype)
        assert pd.api.types.is_numeric_dtype(dtype) or is_text, (column, dtype)
        if is_text:
            assert ds.frame[column].map(type).eq(str).all(), column


def test_fair_is_a_large_mixed_table_with_binary_target():
    ds = load_builtin("fair")
    frame = ds.frame
    assert len(frame) >= 5000
    assert sum(pd.api.types.is_object_dtype(t) for t in frame.dtypes) >= 3
    assert sum(pd.api.types.is_float_dtype(t) for t in frame.dtypes) >= 3
    assert frame[ds.target].dtype == bool


def test_unknown_name_lists_the_builtins():
    with pytest.raises(InputError) as err:
        load_builtin("iris")
    for name in list_builtin():
        assert name in str(err.value)
