"""Every default and limit of the data layer, in one place."""

from __future__ import annotations

from typing import Literal

# Validation
MIN_ROWS = 10  # fewer rows than this cannot train a generator worth releasing
MAX_REPORTED_PROBLEMS = 5  # offending cells listed in one error message
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none"})  # numeric cells only
TRUE_TOKENS = frozenset({"true", "1", "1.0"})
FALSE_TOKENS = frozenset({"false", "0", "0.0"})

# Numbers: the encoder works in float64, exact for integers of magnitude below 2**53; an
# integer column's values and bounds must stay there (larger ones would be silently rounded).
MAX_EXACT_INTEGER = 2**53

# Schema inference
MAX_CATEGORIES = 200  # a text column with more distinct values is refused as free text / ids
# A column whose cells are numbers but for at most this fraction is numeric with bad cells
# (named, refused), not categorical: its numbers would otherwise become categories.
RARE_TEXT_FRACTION = 0.05

# Encoding
NumericMode = Literal["mode", "standard", "quantile", "bins"]
NUMERIC_MODES: tuple[str, ...] = ("mode", "standard", "quantile", "bins")
DEFAULT_NUMERIC: NumericMode = "mode"
HIST_BINS = 100  # bins of the public histogram over a numeric column's schema bounds
MARGINAL_BINS = 32  # equal-width bins of a numeric column for marginal (DP) generators
MAX_ABS_ENCODED = 5.0  # MPC uses fixed point: encoded values stay within +-this
MAX_MODES = 5  # Gaussian components per numeric column in "mode" encoding
MIN_MODE_WEIGHT = 0.02  # components lighter than this are dropped
MODE_SCALE = 4.0  # a value is encoded as (x - mean) / (MODE_SCALE * sd) within its mode
EM_ITERATIONS = 200
QUANTILE_GAP_MASS = 1e-5  # share of mass given to an empty bin between occupied ones
EM_TOLERANCE = 1e-6  # stop when the mean log-likelihood per row gains less

# Splitting
NONIID_ALPHA = 0.5  # Dirichlet concentration for label skew: smaller is more skewed
STRATIFY_MAX_LEVELS = 20  # a numeric stratify column with more values is binned
STRATIFY_BINS = 5
