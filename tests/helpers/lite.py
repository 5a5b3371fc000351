"""Test helpers for the Lite tests (tests/deploy/lite/)."""

from helpers import missing
from mobileseg_paddle.deploy.lite.lite_env import LiteRuntime
from mobileseg_paddle.errors import UserError


def require_lite_runtime():
    """The Lite runtime; without one the test fails in CI (CI=true) and is skipped elsewhere."""
    try:
        return LiteRuntime.find()
    except UserError as e:
        missing(f"Paddle Lite environment missing: {e}")
