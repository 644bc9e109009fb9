"""The servers raise their soft open-file limit to the hard one at start
(filetracker/server/fdlimit.py): a shell's 1024 is not their limit."""

import shutil
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, Service, free_port, script


def _soft_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        line = next(x for x in f if x.startswith("Max open files"))
    return int(line.split()[3])


@pytest.mark.parametrize("soft,hard,after", [(256, 4096, 4096), (4096, 4096, 4096)],
                         ids=["raised-to-hard", "never-lowered"])
def test_raise_fd_limit(soft, hard, after):
    code = ("import resource; from filetracker.server.fdlimit import raise_fd_limit;"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d));"
            "print(raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])" % (soft, hard))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == [str(after), str(after)]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
@pytest.mark.parametrize("command", ["filetracker-server", "filetracker-node", "filetracker-gateway"])
def test_a_server_started_with_a_low_soft_limit_raises_it(tmp_path, command):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    args = {"filetracker-server": ["-d", str(tmp_path / "d"), "-p", str(port)],
            "filetracker-node": ["--dir", str(tmp_path / "d"), "--host", "127.0.0.1", "--port", str(port)],
            "filetracker-gateway": ["--host", "127.0.0.1", "--port", str(port), "--nodes", "http://127.0.0.1:1"]}
    svc = Service(["prlimit", "--nofile=256:8192", script(command)] + args[command],
                  str(tmp_path / "log"), ready_url=url + "/version/").start()
    try:
        assert _soft_limit(svc.pid) == 8192
    finally:
        svc.stop()
