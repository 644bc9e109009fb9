"""Issue 3 acceptance 1: our Client and the published 2.x client work unchanged through the gateway."""

import json
import os
import subprocess
import sys

import pytest

from tests.cluster.test_e2e_support import TestCluster
from tests.interop import ft2

#: One scenario, run by either interpreter (cwd outside the repository, so the
#: 2.x interpreter imports the published package, ours the installed one).
SCENARIO = r'''
import hashlib, json, os, sys, time
from filetracker.client import Client
gw, tmp, name = sys.argv[1], sys.argv[2], sys.argv[3]
c = Client(cache_dir=os.path.join(tmp, "cache"), remote_url=gw)
data = os.urandom(200000) + b"compressible " * 20000
src = os.path.join(tmp, "src.bin")
with open(src, "wb") as f:
    f.write(data)
os.utime(src, (1795550400, 1795550400))
out = {}
vname = c.put_file(name, src, to_local_store=False)
out["put"] = vname
dst = os.path.join(tmp, "dst.bin")
c.get_file(name, dst, add_to_cache=False, force_refresh=True)
out["get"] = open(dst, "rb").read() == data
stream, sname = c.get_stream(name, force_refresh=True)
out["stream"] = stream.read() == data
out["stream_name"] = sname
out["version"] = c.file_version(name)
out["size"] = c.file_size(name)
dst2 = os.path.join(tmp, "dst2.bin")
c.get_file(vname, dst2, add_to_cache=False, force_refresh=True)
out["versioned_get"] = open(dst2, "rb").read() == data
c.delete_file(name)
try:
    c.get_file(name, os.path.join(tmp, "gone"), add_to_cache=False, force_refresh=True)
    out["after_delete"] = "found"
except Exception as e:
    out["after_delete"] = "error"
out["expected_size"] = len(data)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TestCluster(tmp_path_factory.mktemp("clients"), nodes=3).start()
    yield c
    c.stop()


def run_scenario(python, gw, tmp_path, name):
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FILETRACKER_URL")}
    proc = subprocess.run([python, str(script), gw, str(work), name], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(out, name):
    base, _, version = out["put"].rpartition("@")
    assert base == name and version.isdigit()
    assert out["get"] and out["stream"] and out["versioned_get"]
    assert out["stream_name"] == out["put"]
    assert out["version"] == int(version)
    assert out["size"] == out["expected_size"]
    assert out["after_delete"] == "error"


def test_our_client_through_gateway(cluster, tmp_path):
    check(run_scenario(sys.executable, cluster.gw, tmp_path, "/interop/ours.bin"), "/interop/ours.bin")


@pytest.mark.interop
def test_published_2x_client_through_gateway(cluster, tmp_path):
    check(run_scenario(ft2.require(), cluster.gw, tmp_path, "/interop/ft2.bin"), "/interop/ft2.bin")
