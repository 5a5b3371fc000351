"""Files the package uses that are not Python modules: the configs, the Lite set-up script and
the C++/Android demo sources.

In a source checkout (``pip install -e .`` or running from the repository) they are the
repository's own ``configs/`` and ``deploy/``; a wheel carries copies of both under
``mobileseg_paddle/_data/`` (written by ``setup.py``'s ``build_py``), laid out the same way, so
``path("deploy", "lite", "setup_env.sh")`` names the same file in both."""

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# the folder that holds the package: put on PYTHONPATH of child processes so that they import
# this very copy of mobileseg_paddle (a checkout or site-packages)
IMPORT_ROOT = os.path.dirname(PACKAGE_DIR)
BUNDLED = os.path.join(PACKAGE_DIR, "_data")
_MARKER = os.path.join("deploy", "lite", "setup_env.sh")


def data_root():
    """``mobileseg_paddle/_data`` of an installed wheel, else the repository checkout."""
    if os.path.isfile(os.path.join(BUNDLED, _MARKER)):
        return BUNDLED
    return IMPORT_ROOT


def path(*parts):
    """Absolute path of a data file, e.g. ``path("configs", "mobileseg")``."""
    return os.path.join(data_root(), *parts)


def child_env(env=None, **extra):
    """``env`` (default: this process's) with IMPORT_ROOT first on PYTHONPATH."""
    env = dict(os.environ if env is None else env, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [IMPORT_ROOT, env.get("PYTHONPATH")]))
    return env


def cache_dir(*parts):
    """This user's cache folder of mobileseg ($MOBILESEG_CACHE, else $XDG_CACHE_HOME or ~/.cache,
    then /mobileseg), or a folder inside it: what is built or compiled once (the Lite root, the
    ARM runtime, OpenVINO's compiled models) goes here, never into the working directory."""
    root = os.environ.get("MOBILESEG_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "mobileseg")
    return os.path.join(os.path.abspath(root), *parts)
