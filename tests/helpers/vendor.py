"""The PaddleSeg sources vendored in ../shared/vendor (see its README.md): v2.8.0 and develop,
each with the ``tools/`` and ``deploy/python/`` scripts that pip does not install.

Without ../shared a test that needs it is skipped, and fails when CI=true."""

import hashlib
import os
import tarfile

from helpers import ROOT, missing

VENDOR = os.path.join(ROOT, "..", "shared", "vendor")
TARBALLS = {"v2.8.0": "paddleseg-v2.8.0-src.tar.gz", "develop": "paddleseg-develop-src.tar.gz"}
# files that tell the two apart, and differ where compat.py's fixes are concerned
FINGERPRINT = ("paddleseg/core/train.py", "paddleseg/utils/metrics.py")


def tarball(which):
    path = os.path.normpath(os.path.join(VENDOR, TARBALLS[which]))
    if not os.path.isfile(path):
        message = f"needs the vendored PaddleSeg source {path} (../shared beside the checkout)"
        missing(message)
    return path


def unpack(which, dest):
    """Unpack PaddleSeg ``which`` into ``dest``; return its top folder (holding tools/)."""
    with tarfile.open(tarball(which)) as tar:
        tar.extractall(dest, filter="data")
        top = tar.getnames()[0].split("/")[0]
    return os.path.join(str(dest), top)


def _digest(read):
    return [hashlib.sha256(read(path)).hexdigest() for path in FINGERPRINT]


def installed_paddleseg():
    """Which vendored source the imported paddleseg is ('v2.8.0' or 'develop'), by the content
    of its trainer and metrics (pip's 2.8.0 differs from the tarball only in the version
    string); None for any other paddleseg."""
    import paddleseg
    package = os.path.dirname(os.path.dirname(paddleseg.__file__))

    def read_installed(path):
        with open(os.path.join(package, path), "rb") as f:
            return f.read()
    installed = _digest(read_installed)
    for which in TARBALLS:
        with tarfile.open(tarball(which)) as tar:
            top = tar.getnames()[0].split("/")[0]
            vendored = _digest(lambda p, tar=tar, top=top: tar.extractfile(f"{top}/{p}").read())
        if vendored == installed:
            return which
    return None
