"""Start and stop the published filetracker 2.x server (upstream) for tests and benchmarks.

The 2.x server lives in its own virtual environment, made by
``scripts/setup-ft2-server.sh`` (default ``<repo>/.venv-ft2server``; override with
``FT2_SERVER_VENV``).  When that venv is missing, :func:`require` skips the
calling test instead of failing, so the suite still runs on a machine without
Berkeley DB.

Facts about the 2.x server that shape this helper:

* ``filetracker-server -D`` stays in the foreground and runs ``gunicorn`` (found
  on ``PATH``) as a child, which forks ``--workers`` gevent workers.  All of them
  share our session, so :meth:`UpstreamServer.stop` (SIGTERM to the process
  group) leaves nothing behind.
* gunicorn puts its working folder on ``sys.path``; started from this repository
  it would import *our* ``filetracker`` package.  So the server runs with the
  venv folder as its working folder (``env -C``, which ``exec``s, so the pid we
  hold is still the server's).
* It logs every request at INFO; we default to WARNING so logging does not
  distort timings.
"""

import os

from tests.support.procs import ROOT, Service, free_port

DEFAULT_VENV = os.path.join(ROOT, ".venv-ft2server")
#: seconds a 2.x server whose data nobody reads afterwards gets to stop before SIGKILL: its
#: ``filetracker-server -D`` often does not exit on SIGTERM (its gunicorn workers do), so
#: such a stop waited out the full 10 s of :meth:`Service.stop`.  A server whose folder is
#: read after the stop (the migration tests' offline imports) keeps the 10 s, so that its
#: workers close their Berkeley DB files first.
STOP_TIMEOUT = 1.0


def server_venv():
    """The 2.x server venv folder (``FT2_SERVER_VENV`` or the default), whether or not it exists."""
    return os.environ.get("FT2_SERVER_VENV") or DEFAULT_VENV


def server_script():
    """Path of the 2.x ``filetracker-server`` script, or None when its venv is not set up."""
    venv = server_venv()
    path = os.path.join(venv, "bin", "filetracker-server")
    if os.access(path, os.X_OK) and os.access(os.path.join(venv, "bin", "gunicorn"), os.X_OK):
        return path
    return None


def available():
    return server_script() is not None


def require():
    """Skip the calling test when the 2.x server venv is missing."""
    if not available():
        import pytest

        reason = ("filetracker 2.x server venv missing (%s): run scripts/setup-ft2-server.sh"
                  % server_venv())
        if os.environ.get("FT_REQUIRE_INTEROP"):   # CI: a missing 2.x venv is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)


class UpstreamServer(Service):
    """A filetracker 2.x server on 127.0.0.1, data in ``data_dir``.

    ``url`` is its base URL.  ``fallback_url`` starts it in its migration mode.
    Use as a context manager or call ``start()`` / ``stop()``.
    """

    def __init__(self, data_dir, log_path=None, port=None, workers=2, log_level="WARNING",
                 fallback_url=None, timeout=30.0):
        script = server_script()
        if script is None:
            raise RuntimeError("filetracker 2.x server venv missing: run scripts/setup-ft2-server.sh")
        venv = server_venv()
        self.port = port or free_port()
        self.data_dir = os.path.abspath(data_dir)
        self.url = "http://127.0.0.1:%d" % self.port
        argv = ["env", "-C", venv, script, "-D", "-l", "127.0.0.1", "-p", str(self.port),
                "-d", self.data_dir, "--log-level", log_level]
        if workers is not None:  # None: the 2.x default (2 x CPUs)
            argv += ["--workers", str(workers)]
        if fallback_url:
            argv += ["--fallback-url", fallback_url]
        env = dict(os.environ)
        env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
        # Our test environment may point at our package; the 2.x server must not see it.
        env.pop("PYTHONPATH", None)
        env.pop("FILETRACKER_URL", None)
        # it writes its gunicorn configuration with mkstemp and never removes it: keep that
        # file beside the data (the test's or the benchmark's folder), not in /tmp
        tmp = os.path.dirname(self.data_dir.rstrip("/")) or "."
        os.makedirs(tmp, exist_ok=True)
        env["TMPDIR"] = tmp
        if log_path is None:
            log_path = os.path.join(os.path.dirname(self.data_dir.rstrip("/")) or ".",
                                    "upstream-%d.log" % self.port)
        super().__init__(argv, log_path, env=env, ready_url=self.url + "/version/", timeout=timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
