"""The ARM side for the tests: Paddle Lite's armv8 light API built from the vendored source
(mobileseg_paddle/deploy/lite/arm_runtime.py, cached in ~/.cache/mobileseg), the aarch64 run_nb
runner linked against it, qemu-user, and a poisoning allocator for the runs. Without the cross
compiler, qemu or the vendored source the tests skip, and fail when CI=true."""

import atexit
import functools
import os
import pathlib
import shutil
import subprocess
import tempfile

import cv2
import numpy as np
from PIL import Image

from helpers import ROOT, missing
from helpers.cpp import ANDROID_DIR, cmake_build
from helpers.shared import once

POISON_SOURCE = os.path.join(ROOT, "tests", "cpp", "poison_malloc.c")
CROSS_CC = "aarch64-linux-gnu-gcc"


@functools.lru_cache(maxsize=None)
def _arm():
    from mobileseg_paddle.deploy.lite import arm_runtime, check
    from mobileseg_paddle.errors import UserError
    absent = [t for t in ("aarch64-linux-gnu-g++", CROSS_CC, "qemu-aarch64-static", "cmake")
              if not shutil.which(t)]
    if absent:
        return None, (f"the ARM tests need {', '.join(absent)} (g++-aarch64-linux-gnu, "
                      f"qemu-user-static, cmake)")
    try:
        arm_runtime.default_source()
    except UserError as e:
        return None, str(e)
    runtime = arm_runtime.build_runtime(log=lambda message: print(message, flush=True))
    return {"runtime": runtime, "runner": check.build_runner(runtime),
            "qemu": check.find_qemu(), "poison": _poison_lib()}, None


def require_arm():
    """{"runtime" (build_runtime's dict), "runner" (run_nb path), "qemu", "poison"}."""
    arm, why = _arm()
    if arm is None:
        missing(why)
    return arm


def _scratch(prefix):
    """A temporary folder removed when the test session ends."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _poison_lib():
    out = os.path.join(_scratch("mobileseg-poison-"), "poison_malloc.so")
    subprocess.run([CROSS_CC, "-O2", "-shared", "-fPIC", POISON_SOURCE, "-o", out], check=True)
    return out


def poisoned(monkeypatch, arm):
    """Every later qemu run of the test gets the poisoning allocator (qemu-user passes
    QEMU_SET_ENV to the ARM program, not to itself)."""
    monkeypatch.setenv("QEMU_SET_ENV", f"LD_PRELOAD={arm['poison']}")


@functools.lru_cache(maxsize=None)
def demo():
    """argv prefix running deploy/lite/android's mobileseg_lite_demo (armv8 Linux, linked to the
    built runtime) under qemu; built once a session."""
    from mobileseg_paddle.deploy.lite import check
    arm = require_arm()
    lite_dir = os.path.dirname(arm["runtime"]["include"])  # include/ and lib/

    def build(folder):
        cmake_build(ANDROID_DIR, pathlib.Path(folder), [
            "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
            f"-DCMAKE_CXX_COMPILER={shutil.which('aarch64-linux-gnu-g++')}",
            f"-DPADDLE_LITE_DIR={lite_dir}"])
        return os.path.join(folder, "mobileseg_lite_demo")

    # the session's processes share one build (helpers/shared.py), keyed by the runtime it links
    binary = once(f"lite-demo-arm-{arm['runtime']['key']}", build)
    return (arm["qemu"], "-cpu", "max", "-L", check.AARCH64_SYSROOT, binary)


def run_demo(model_dir, image, out_dir):
    """Run the demo on ``image``; (its mask PNG as an array, its overlay as OpenCV reads it)."""
    proc = subprocess.run([*demo(), "--model_dir", model_dir, "--image", image, "--out_dir",
                           str(out_dir), "--warmup", "1", "--repeats", "2"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(Paddle Lite v2.13-rc)" in proc.stdout and "latency: average" in proc.stdout
    assert "over 2 runs after 1 warm-up" in proc.stdout
    stem = os.path.splitext(os.path.basename(image))[0]
    mask = Image.open(os.path.join(out_dir, f"{stem}_mask.png"))
    assert mask.mode == "P"
    overlay = cv2.imread(os.path.join(out_dir, f"{stem}_overlay.png"))
    return np.array(mask), overlay
