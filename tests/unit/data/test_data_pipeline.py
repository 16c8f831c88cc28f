"""The user's path through the data layer, through real files: CSV -> schema -> encode -> CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smpc_synth.data import (
    Schema,
    TableEncoder,
    infer_schema,
    load_builtin,
    read_table,
    validate,
    write_table,
)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_file_schema_encode_decode_file(tmp_path, fmt):
    ds = load_builtin("fair")
    data = tmp_path / f"fair.{fmt}"
    write_table(ds.frame, data)

    infer_schema(read_table(data), target=ds.target).save(tmp_path / "schema.toml")
    schema = Schema.load(tmp_path / "schema.toml")
    df = validate(read_table(data, schema), schema, source=str(data))
    pd.testing.assert_frame_equal(df, ds.frame, check_dtype=False)

    encoder = TableEncoder(schema, numeric="quantile").fit(df)
    noise = np.random.default_rng(0).standard_normal((300, encoder.layout.width))
    synthetic = tmp_path / f"synthetic.{fmt}"
    write_table(encoder.inverse_transform(noise), synthetic)
    again = validate(read_table(synthetic, schema), schema, source=str(synthetic))
    assert len(again) == 300
    assert set(again["educ"]) <= set(schema.column("educ").categories)
