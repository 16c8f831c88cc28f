"""Every tunable figure of the evaluation, in one place.

The caps keep a 5,000-row table to a few seconds on one core: distances are computed on
seeded subsamples, never on the full cross product.
"""

from __future__ import annotations

from smpc_synth.config import RunConfig

# Share of the real table kept back as holdout when none is given (the run default).
HOLDOUT_FRACTION: float = RunConfig().holdout_fraction

# Rows of each table that enter nearest-neighbour computations (DCR queries, PRDC).
MAX_DISTANCE_ROWS = 2000
# Real training rows searched for the closest record (DCR reference set).
MAX_REFERENCE_ROWS = 5000
# Rows each utility model is trained on.
MAX_TRAIN_ROWS = 5000

# k of the k-nearest-neighbour balls in PRDC (Naeem et al. 2020 use k = 5).
PRDC_K = 5
# Real percentiles that bound the tails for ``tail_mass``.
TAIL_QUANTILES = (0.05, 0.95)
# Decimals at which two encoded rows count as an exact copy.
COPY_DECIMALS = 9

# A numeric target with more distinct values than this is not a classification target.
MAX_TARGET_CLASSES = 20
# One-hot width cap per column; rarer categories are pooled (keeps encodings bounded).
MAX_ONEHOT_CATEGORIES = 50
# Label given to missing categorical values before one-hot encoding.
MISSING_LABEL = "<missing>"

LOGREG_MAX_ITER = 1000
# Pairs listed in the fidelity section's ``worst_pairs``; the terminal report names those
# scoring below WEAK_PAIR_SCORE.
WORST_PAIRS = 5
WEAK_PAIR_SCORE = 0.9
