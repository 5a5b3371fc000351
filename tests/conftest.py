import os
import shutil
import sys

import pytest

# Tests import the package from the checkout, and their helpers as ``helpers`` (tests/helpers).
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(TESTS), TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)


def pytest_configure(config):
    """The controller (or the one process without xdist) makes the session's shared folder
    (helpers/shared.py) before any worker starts."""
    if not hasattr(config, "workerinput"):
        from helpers.shared import make_session_folder
        config.mobileseg_session_folder = make_session_folder()


def pytest_unconfigure(config):
    folder = getattr(config, "mobileseg_session_folder", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_src(tmp_path_factory):
    """The tiny synthetic dataset (4 training, 2 validation images of 64x64), made once."""
    from helpers.train_helpers import make_data
    return make_data(tmp_path_factory.mktemp("src") / "data", num_train=4, num_val=2, size=64)


@pytest.fixture(scope="session")
def membrane_model():
    """(config, weights) of MobileSeg-MobileNetV2 trained 150 iterations on the membrane images
    (tests/helpers/membrane.py), trained once for the tests that bound ARM and INT8 results on
    it (about two minutes, once for all the session's processes); tests must not write into its
    folder."""
    from helpers.membrane import require_membrane, train_model
    from helpers.shared import once
    require_membrane()
    return tuple(once("membrane_model", train_model))


@pytest.fixture
def data(tmp_path, data_src):
    """A private copy of the tiny dataset that a test may break."""
    return shutil.copytree(data_src, tmp_path / "data")
