"""The published filetracker 2.x client against our server (issue 2, acceptance 1)."""

import hashlib
import json
import os
import subprocess
import textwrap

import pytest

from tests.client.servers import start_server
from tests.interop.ft2 import clean_env, require

pytestmark = pytest.mark.interop

DRIVER = textwrap.dedent(r'''
    import hashlib, json, os, sys
    import filetracker
    from filetracker.client import Client
    assert "site-packages" in filetracker.__file__, filetracker.__file__  # the 2.x package, not ours
    url, work, big = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}
    def sha(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    c = Client(cache_dir=os.path.join(work, "cache"), remote_url=url)
    small = os.path.join(work, "small")
    with open(small, "wb") as f:
        f.write(b"small file\n" * 1000)
    out["put"] = c.put_file("/interop/small.txt@1700000000", small)
    out["put_plain"] = c.put_file("/interop/plain.txt@1700000001", small, compress_hint=False)
    out["put_stale"] = c.put_file("/interop/small.txt@1600000000", small)
    out["version"] = c.file_version("/interop/small.txt")
    out["size"] = c.file_size("/interop/small.txt")
    out["size_plain"] = c.file_size("/interop/plain.txt")
    got = os.path.join(work, "got")
    out["get"] = c.get_file("/interop/small.txt", got, add_to_cache=False)
    out["get_ok"] = open(got, "rb").read() == open(small, "rb").read()
    out["vget"] = c.get_file("/interop/small.txt@1700000000", got, force_refresh=True, add_to_cache=False)
    s, v = c.get_stream("/interop/plain.txt")
    out["stream"] = [v, s.read() == open(small, "rb").read()]
    try:
        c.get_file("/interop/small.txt@1600000000", got, force_refresh=True)
        out["vget_wrong"] = "no error"
    except Exception as e:
        out["vget_wrong"] = type(e).__name__
    out["list"] = sorted(c.list_remote_files(subpath="/interop"))
    if big != "-":
        out["put_big"] = c.put_file("/interop/big", big)
        bigout = os.path.join(work, "big.out")
        out["get_big"] = c.get_file("/interop/big", bigout, add_to_cache=False)
        out["big_sha"] = sha(bigout)
        out["size_big"] = c.file_size("/interop/big")
    c.delete_file("/interop/small.txt")
    try:
        c.file_version("/interop/small.txt")
        out["after_delete"] = "still there"
    except Exception as e:
        out["after_delete"] = type(e).__name__
    print("RESULT " + json.dumps(out))
''')


def run_driver(py, url, work, big="-"):
    work.mkdir(exist_ok=True)
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    r = subprocess.run([py, str(driver), url, str(work), big], cwd=str(work), env=clean_env(work),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def make_big(path, mib):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(mib):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.slow
def test_ft2_client_against_our_server(tmp_path):
    py = require()
    server = start_server(tmp_path)
    try:
        big = str(tmp_path / "big")
        big_sha = make_big(big, 100)
        out = run_driver(py, server.url, tmp_path / "work", big)
    finally:
        server.stop()
    assert out["put"] == "/interop/small.txt@1700000000"
    assert out["put_plain"] == "/interop/plain.txt@1700000001"
    assert out["put_stale"] == "/interop/small.txt@1700000000"
    assert out["version"] == 1700000000
    assert out["size"] == out["size_plain"] == 11000
    assert out["get"] == out["vget"] == "/interop/small.txt@1700000000"
    assert out["get_ok"] is True
    assert out["stream"] == ["/interop/plain.txt@1700000001", True]
    assert out["vget_wrong"] == "FiletrackerError"
    assert out["list"] == ["plain.txt", "small.txt"]
    assert out["big_sha"] == big_sha and out["size_big"] == 100 << 20
    assert out["put_big"] == out["get_big"]
    assert out["after_delete"] == "FiletrackerError"
