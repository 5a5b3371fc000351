"""The armv8 light-API runtime built from the vendored Paddle Lite source
(mobileseg_paddle/deploy/lite/arm_runtime.py): an aarch64 library reporting v2.13-rc, tailored
(well below the full library's size), cached (a second call takes seconds), its command line, and
its errors. The build takes about 4 to 6 minutes once (2 cores) and is cached in
~/.cache/mobileseg/lite-arm. What runs on it: test_lite_models.py (the five models, FP32 and
FP16) and test_lite_arm.py. Without the vendored tarball, the cross compiler or qemu the tests
are skipped, and fail when CI=true."""

import os

import pytest

from helpers import ROOT
from helpers.arm import require_arm
from mobileseg_paddle.deploy.lite import arm_runtime
from mobileseg_paddle.errors import UserError

pytestmark = pytest.mark.lite

RUN_NB = os.path.join(ROOT, "deploy", "lite", "cpp", "tools", "run_nb.cc")


@pytest.fixture(scope="module")
def runtime():
    """The default runtime (FP16 kernels, our five configs' kernels), built once and cached."""
    return require_arm()["runtime"]


def test_build_result_and_cache(runtime):
    lib = runtime["lib"]
    assert runtime["version"] == "v2.13-rc"
    assert os.path.isfile(lib) and os.path.getsize(lib) == runtime["size_bytes"]
    with open(lib, "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # aarch64
    assert runtime["size_bytes"] < 2 * 2**20, "tailored: well below the 2.5 MB of the full library"
    for name in ("paddle_api.h", "paddle_place.h", "paddle_use_kernels.h", "paddle_use_ops.h"):
        assert os.path.isfile(os.path.join(runtime["include"], name)), name
    again = arm_runtime.build_runtime()
    assert again["cached"] and again["key"] == runtime["key"] and again["lib"] == lib
    assert again["seconds"] < 10


def test_cli_prints_the_cached_runtime(runtime, capsys):
    assert arm_runtime.main([]) == 0
    out = capsys.readouterr().out
    assert "v2.13-rc" in out and "cached" in out and runtime["lib"] in out


def test_missing_source_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(arm_runtime.SOURCE_ENV, str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(UserError, match="pass --source"):
        arm_runtime.default_source()
    assert arm_runtime.main(["--cache_dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.tar.gz" in err and "--source" in err


def test_bad_tailor_dir(tmp_path):
    with pytest.raises(UserError, match="tailoring lists"):
        arm_runtime.build_runtime(source=RUN_NB, models=str(tmp_path), cache_dir=str(tmp_path))


def test_failed_build_names_its_log(tmp_path):
    """A real configure failure: one UserError line naming the kept log, no cache entry."""
    require_arm()  # the cross compiler and cmake
    src = tmp_path / "src"
    (src / "lite" / "tools").mkdir(parents=True)
    (src / "lite" / "tools" / "build_linux.sh").write_text("")
    (src / "CMakeLists.txt").write_text('cmake_minimum_required(VERSION 3.10)\n'
                                        'message(FATAL_ERROR "deliberately broken")\n')
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as e:
        arm_runtime.build_runtime(source=str(src), cache_dir=str(cache), log=lambda m: None)
    message = str(e.value)
    assert "\n" not in message and "failed" in message
    log = message.rsplit("full log: ", 1)[1]
    assert os.path.isfile(log) and "deliberately broken" in open(log).read()
    assert [p.name for p in cache.iterdir() if not p.name.startswith(("failed-", "."))] == []
    assert not [p for p in cache.iterdir() if ".partial-" in p.name]


def test_android_is_build_android_options_and_only_on_request(monkeypatch, tmp_path, capsys):
    """--android_ndk / $ANDROID_NDK: build_android.sh's options (not built here: no NDK); the
    library functions never read $ANDROID_NDK, so `lite check` keeps building for armv8 Linux."""
    linux, android = arm_runtime.cmake_options("T"), arm_runtime.cmake_options("T", ndk="/ndk")
    assert {"-DARM_TARGET_OS=armlinux", "-DARM_TARGET_LANG=gcc"} <= set(linux)
    assert {"-DARM_TARGET_OS=android", "-DARM_TARGET_LANG=clang", "-DANDROID_NDK=/ndk",
            "-DANDROID_STL_TYPE=c++_static", "-DLITE_WITH_JAVA=OFF"} <= set(android)
    monkeypatch.setenv(arm_runtime.NDK_ENV, str(tmp_path))  # not an NDK
    assert arm_runtime.main(["--source", RUN_NB, "--cache_dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--android_ndk {tmp_path}: not an Android NDK" in err
