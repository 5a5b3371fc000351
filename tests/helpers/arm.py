"""The ARM side for the tests: Paddle Lite's armv8 light API built from the vendored source
(mobileseg_paddle/deploy/lite/arm_runtime.py, cached in ~/.cache/mobileseg), the aarch64 run_nb
runner linked against it, qemu-user, and a poisoning allocator for the runs. Without the cross
compiler, qemu or the vendored source the tests skip, and fail when CI=true."""

import functools
import os
import shutil
import subprocess
import tempfile

from helpers import ROOT, missing

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


def _poison_lib():
    out = os.path.join(tempfile.mkdtemp(prefix="mobileseg-poison-"), "poison_malloc.so")
    subprocess.run([CROSS_CC, "-O2", "-shared", "-fPIC", POISON_SOURCE, "-o", out], check=True)
    return out


def poisoned(monkeypatch, arm):
    """Every later qemu run of the test gets the poisoning allocator (qemu-user passes
    QEMU_SET_ENV to the ARM program, not to itself)."""
    monkeypatch.setenv("QEMU_SET_ENV", f"LD_PRELOAD={arm['poison']}")
