"""The installed package, not the checkout: a wheel built with ``pip wheel --no-deps .`` and
installed without ``-e`` into a fresh environment runs ``export``, ``infer`` and ``lite --help``
from a folder outside the repository, and finds the Lite set-up script and the configs it
carries (``mobileseg_paddle/_data``)."""

import os
import site
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from helpers import ROOT
from helpers.train_helpers import config_dict, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, console script) of a fresh environment holding only the wheel; the pinned
    dependencies come from this environment's site-packages through a path entry (which,
    unlike a site dir, does not run the editable install's finder)."""
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(work / "dist"), ROOT], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (work / "dist").iterdir()
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("deploy/") for n in names), "a top-level 'deploy' package"
    assert "mobileseg_paddle/_data/deploy/lite/setup_env.sh" in names
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]]
            if os.path.isdir(p)]
    with open(os.path.join(purelib, "_mobileseg_test_deps.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys(deps)) + "\n")
    inst = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return py, str(venv / "bin" / "mobileseg"), purelib


def _run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          **kw)


def test_the_wheel_runs_outside_the_checkout(installed, tmp_path):
    py, mobileseg, purelib = installed
    where = _run([py, "-c", "import mobileseg_paddle, mobileseg_paddle.resources as r; "
                  "print(mobileseg_paddle.__file__); print(r.data_root())"], tmp_path)
    assert where.returncode == 0, where.stderr
    package_file, data_root = where.stdout.split()
    assert package_file.startswith(purelib) and data_root == os.path.join(
        purelib, "mobileseg_paddle", "_data")

    config = write_config(tmp_path / "tiny.yml", config_dict(tmp_path / "data"))
    export = _run([mobileseg, "export", "--config", config, "--save_dir", "out/inference",
                   "--program", "legacy"], tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert os.path.isfile(tmp_path / "out" / "inference" / "deploy.yaml")

    import cv2
    import numpy as np
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    infer = _run([mobileseg, "infer", "--config", "out/inference", "--image_path", "a.png",
                  "--save_dir", "out/result"], tmp_path)
    assert infer.returncode == 0, infer.stderr[-3000:]
    mask = cv2.imread(str(tmp_path / "out" / "result" / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (80, 96) and mask.max() < 4

    lite = _run([mobileseg, "lite", "--help"], tmp_path)
    assert lite.returncode == 0 and "--valid_targets" in lite.stdout, lite.stderr[-2000:]

    script = _run([py, "-c", "from mobileseg_paddle.deploy.lite import lite_env; "
                   "print(lite_env.SETUP_SCRIPT)"], tmp_path)
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == os.path.join(data_root, "deploy", "lite", "setup_env.sh")
    assert os.path.isfile(script.stdout.strip())
    configs = os.listdir(os.path.join(data_root, "configs", "mobileseg"))
    assert len([c for c in configs if c.endswith(".yml")]) == 5
