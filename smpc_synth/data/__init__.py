"""The data layer: built-in data sets, public schema, validation, encoding and splitting."""

from smpc_synth.data.datasets import BUILTIN_DATASETS, BuiltinDataset, list_builtin, load_builtin
from smpc_synth.data.encoding import TableEncoder
from smpc_synth.data.io import read_table, write_table
from smpc_synth.data.layout import Layout, Span
from smpc_synth.data.schema import ColumnSpec, Schema, infer_schema
from smpc_synth.data.split import holdout_split, split_parties
from smpc_synth.data.stats import flatten_stats, sum_stats, unflatten_stats
from smpc_synth.data.validate import validate

__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "ColumnSpec",
    "Layout",
    "Schema",
    "Span",
    "TableEncoder",
    "flatten_stats",
    "holdout_split",
    "infer_schema",
    "list_builtin",
    "load_builtin",
    "read_table",
    "split_parties",
    "sum_stats",
    "unflatten_stats",
    "validate",
    "write_table",
]
