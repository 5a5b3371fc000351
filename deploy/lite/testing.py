"""Test helpers for the Lite tests (tests/test_lite_*.py)."""

import os

from .errors import LiteError
from .lite_env import LiteRuntime


def require_lite_runtime():
    """The Lite runtime; without one the test fails in CI (CI=true) and is skipped elsewhere."""
    import pytest
    try:
        return LiteRuntime.find()
    except LiteError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Paddle Lite environment missing in CI: {e}")
        pytest.skip(str(e))
