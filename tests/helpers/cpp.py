"""The CMake build of deploy/lite/cpp (library and host tools) for the tests: once per session and
target, "host" (the host compiler) or "aarch64" (cross compiler, static, run under qemu-user).
CI=true makes a missing toolchain fail instead of skip."""

import os
import shutil
import subprocess

from helpers import ROOT, missing

CPP_DIR = os.path.join(ROOT, "deploy", "lite", "cpp")
ANDROID_DIR = os.path.join(ROOT, "deploy", "lite", "android")
STUB_DIR = os.path.join(ROOT, "tests", "cpp", "lite_stub")
TARGETS = ("host", "aarch64")

_builds = {}  # target -> (runner argv prefix, build dir): the test modules share one build


def cmake_build(source_dir, build_dir, extra_args=()):
    """Configure and build ``source_dir`` into ``build_dir`` (Release, Ninja when installed)."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    for cmd in (["cmake", "-S", str(source_dir), "-B", str(build_dir),
                 "-DCMAKE_BUILD_TYPE=Release", *generator, *extra_args],
                ["cmake", "--build", str(build_dir)]):
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.returncode == 0, proc.stdout.decode()[-3000:]


def tool(tmp_path_factory, target, name):
    """argv prefix that runs host tool ``name`` (e.g. mobileseg_demo_host) built for ``target``."""
    if target not in _builds:
        _builds[target] = _build(tmp_path_factory, target)
    runner, build_dir = _builds[target]
    return [*runner, str(build_dir / name)]


def _build(tmp_path_factory, target):
    if not shutil.which("cmake") or not any(map(shutil.which, ("c++", "g++", "clang++"))):
        missing("the C++ tests need cmake and a C++ compiler")
    if target == "host":
        build_dir = tmp_path_factory.mktemp("prepost_host")
        cmake_build(CPP_DIR, build_dir)
        return [], build_dir
    assert target == "aarch64", target
    tools = [shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64-static")]
    if not all(tools):
        missing("aarch64 cross build needs g++-aarch64-linux-gnu and qemu-user-static")
    build_dir = tmp_path_factory.mktemp("prepost_arm")
    cmake_build(CPP_DIR, build_dir, [
        "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
        f"-DCMAKE_CXX_COMPILER={tools[0]}", "-DCMAKE_EXE_LINKER_FLAGS=-static"])
    return [tools[1]], build_dir
