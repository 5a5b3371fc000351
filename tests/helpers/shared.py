"""Work built once per test session even when the session runs in several processes
(pytest-xdist: .ci/run runs two workers, ``-n 2 --dist loadfile``): the first worker that needs it
builds it in a folder that the controller made for the session (tests/conftest.py), under a
lock; the others wait for it and read its result back. Without xdist the one process builds it.

Only for results that are plain files, nothing a worker changes afterwards (tests copy what
they would change). The OpenVINO cache entries the workers then compile into the user's cache
for the same export are safe under the runner's compile lock."""

import json
import os
import tempfile

from mobileseg_paddle.fslock import folder_lock

SHARED_ENV = "MOBILESEG_TESTS_SESSION"


def make_session_folder():
    """Called by the controller before the workers start (they inherit the variable)."""
    folder = tempfile.mkdtemp(prefix="mobileseg-tests-")
    os.environ[SHARED_ENV] = folder
    return folder


def once(name, build):
    """``build(folder)`` -> a JSON-able result (paths inside ``folder``), run by one process of the
    session; every other caller gets the same result. A build that fails is tried again by the
    next caller."""
    root = os.environ.get(SHARED_ENV) or make_session_folder()  # a session without our conftest
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    done = os.path.join(folder, "result.json")
    with folder_lock(folder):
        if os.path.isfile(done):
            with open(done) as f:
                return json.load(f)
        result = build(folder)
        with open(done + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(done + ".tmp", done)
        return result
