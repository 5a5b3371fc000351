"""Numerical helpers of the tests (the weight randomization lives in the package: the benchmarks
use it too)."""

import numpy as np

from mobileseg_paddle.models.weights import copy_state_, randomize_  # noqa: F401  (re-exported)


def max_rel_err(a, b):
    """max |a - b| / max |b| over all elements (a relative error robust to zeros)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
