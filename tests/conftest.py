import os
import shutil
import sys

import pytest

# Tests import the package from the checkout, and their helpers as ``helpers`` (tests/helpers).
TESTS = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.dirname(TESTS), TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(scope="session")
def data_src(tmp_path_factory):
    """The tiny synthetic dataset (4 training, 2 validation images of 64x64), made once."""
    from helpers.train_helpers import make_data
    return make_data(tmp_path_factory.mktemp("src") / "data", num_train=4, num_val=2, size=64)


@pytest.fixture(scope="session")
def membrane_model(tmp_path_factory):
    """(config, weights) of MobileSeg-MobileNetV2 trained 150 iterations on the membrane images
    (tests/helpers/membrane.py), trained once for the tests that bound ARM and INT8 results on
    it (about two minutes); tests must not write into its folder."""
    from helpers.membrane import require_membrane, train_model
    require_membrane()
    return train_model(str(tmp_path_factory.mktemp("membrane_model")))


@pytest.fixture
def data(tmp_path, data_src):
    """A private copy of the tiny dataset that a test may break."""
    return shutil.copytree(data_src, tmp_path / "data")
