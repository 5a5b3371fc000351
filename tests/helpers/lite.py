"""Test helpers for the Lite tests (tests/deploy/lite/)."""

import os

from mobileseg_paddle.deploy.lite.lite_env import LiteRuntime
from mobileseg_paddle.errors import UserError


def require_lite_runtime():
    """The Lite runtime; without one the test fails in CI (CI=true) and is skipped elsewhere."""
    import pytest
    try:
        return LiteRuntime.find()
    except UserError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Paddle Lite environment missing in CI: {e}")
        pytest.skip(str(e))
