"""Where the published filetracker 2.x client lives, for interop tests.

``FT2_PYTHON`` names its interpreter; otherwise ``<repo>/.venv-ft2/bin/python``
(made by the CI script) or ``/work/venv-ft2/bin/python``.  Tests call
:func:`require` and are skipped with the reason when none exists.  The 2.x
code always runs with a temporary folder as its working folder, so that it
imports its own ``filetracker`` package, never ours.
"""

import os

import pytest

from tests.support.procs import ROOT

CANDIDATES = [os.path.join(ROOT, ".venv-ft2", "bin", "python"), "/work/venv-ft2/bin/python"]


def ft2_python():
    explicit = os.environ.get("FT2_PYTHON")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for path in CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return None


def require():
    """The 2.x interpreter, or skip the test with the reason."""
    py = ft2_python()
    if py is None:
        reason = ("published filetracker 2.x client not installed: set FT2_PYTHON or create %s"
                  % CANDIDATES[0])
        if os.environ.get("FT_REQUIRE_INTEROP"):   # CI: a missing 2.x venv is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)
    return py


def ft2_script(name):
    """A console script (``filetracker``) of the 2.x venv."""
    return os.path.join(os.path.dirname(require()), name)


def clean_env(home):
    """An environment for 2.x processes: no PYTHONPATH to our package, a private HOME, and
    TMPDIR there too (the 2.x ``filetracker`` command makes a cache folder with ``mkdtemp``
    and leaves it behind: under the test's folder it goes away with it)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("FILETRACKER_URL", None)
    env.pop("FILETRACKER_DIR", None)
    env["HOME"] = str(home)
    env["TMPDIR"] = str(home)
    return env
