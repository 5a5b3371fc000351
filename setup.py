"""Packaging (metadata is in pyproject.toml). One thing needs code: a wheel carries the files
the package uses that live outside it in the repository (configs/ and the Lite set-up script
and C++/Android sources of deploy/lite/), copied to mobileseg_paddle/_data/ (see
mobileseg_paddle/resources.py). An editable install reads them from the checkout instead."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = ["configs", os.path.join("deploy", "lite", "setup_env.sh"),
        os.path.join("deploy", "lite", "cpp"), os.path.join("deploy", "lite", "android"),
        os.path.join("deploy", "lite", "README.md")]


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        target = os.path.join(self.build_lib, "mobileseg_paddle", "_data")
        for item in DATA:
            src, dst = os.path.join(HERE, item), os.path.join(target, item)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("build", "__pycache__"))
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithData})
