"""Fixtures for migration tests: a filled 2.x server (skipped without its venv), our servers, the admin CLI."""

import os
import subprocess
import sys
import time

import pytest

from tests.migration import dataset
from tests.support import upstream
from tests.support.procs import ROOT, Service, free_port, script


def admin_argv():
    """The ``filetracker-admin`` command, or the importer's stand-alone entry while it is missing."""
    if os.path.exists(os.path.join(ROOT, "cluster", "admin", "main.py")):
        return [script("filetracker-admin")]
    return [sys.executable, "-m", "cluster.admin.importer"]


def run_admin(args, timeout=300, **kw):
    return subprocess.run(admin_argv() + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def old_store(tmp_path_factory):
    """A running 2.x server filled by :func:`dataset.fill`: ``(server, model, data_dir)``."""
    upstream.require()
    tmp = tmp_path_factory.mktemp("ft2")
    count, max_bytes = dataset.sizes_from_env()
    server = upstream.UpstreamServer(str(tmp / "data"), log_path=str(tmp / "ft2.log")).start()
    try:
        started = time.monotonic()
        model = dataset.fill(server.url, count, max_bytes)
        print("\n2.x store filled: %d live files (%.1f MiB), %d deleted, in %.1fs"
              % (len(model.live), model.total_bytes / 2**20, len(model.deleted), time.monotonic() - started))
        yield server, model, str(tmp / "data")
    finally:
        server.stop()


def single_server(tmp, name="ours"):
    """Our ``filetracker-server`` on a fresh folder (a public-protocol import target)."""
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    return Service([script("filetracker-server"), "-p", str(port), "-l", "127.0.0.1", "-d", os.path.join(tmp, name),
                    "-D", "--log-level", "WARNING"], os.path.join(tmp, name + ".log"),
                   ready_url=url + "/version/").start(), url
