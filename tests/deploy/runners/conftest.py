"""The runner tests share tests/deploy/test_export.py's exports (built once per session: the
module must be imported under its one name, ``test_export``, which pytest gives it) and the
dygraph references below."""

import functools
import os
import sys

import numpy as np
import paddle
import pytest

DEPLOY_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if DEPLOY_TESTS not in sys.path:
    sys.path.insert(0, DEPLOY_TESTS)

from test_export import SIZES, reference_model  # noqa: E402


@functools.lru_cache(maxsize=None)
def _case(name):
    model, _ = reference_model(name)
    rng = np.random.default_rng(7)
    out = {}
    for h, w in SIZES:
        x = rng.standard_normal((1, 3, h, w)).astype("float32")
        with paddle.no_grad():
            out[(h, w)] = (x, model(paddle.to_tensor(x))[0].numpy())
    return out


@pytest.fixture
def dygraph_case():
    """``dygraph_case(name)``: {size: (input, dygraph logits)} for model ``name``."""
    return _case
