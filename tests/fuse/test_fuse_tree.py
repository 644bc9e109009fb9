"""Issue 9 acceptance 1 and 2: a tree copied in with ``cp -r`` reads back
identically through a fresh mount, our Client and the published 2.x client;
shell tools behave as on a local filesystem.  Against our server and the
gateway over 3 nodes.
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import time

import pytest
import requests

from filetracker.client import Client
from tests.interop import ft2

MIB = 1 << 20


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_tree(root, count=300, big=3, seed=9):
    """``count`` files nested 1-4 levels: every 10th empty, ``big`` of 20 MiB, the rest small.

    Returns ``{relative path: sha256}``.
    """
    rnd = random.Random(seed)
    files = {}
    for i in range(count):
        depth = 1 + i % 4
        parts = ["d%d_%d" % (level, (i // (level + 1)) % 3) for level in range(depth - 1)]
        rel = "/".join(parts + ["f%03d.dat" % i])
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if i % 10 == 0:
            data = b""
        elif i < 10 * big and i % 10 == 5:
            data = None
        else:
            data = rnd.randbytes(rnd.randrange(1, 9000))
        with open(path, "wb") as f:
            if data is None:
                for _ in range(20):
                    f.write(rnd.randbytes(MIB))
            else:
                f.write(data)
        files[rel] = sha256_file(path)
    assert sum(1 for r in files if os.path.getsize(os.path.join(root, r)) == 20 * MIB) == big
    return files


FT2_SCRIPT = r'''
import hashlib, json, os, sys
from filetracker.client import Client
url, cache, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = Client(cache_dir=cache, remote_url=url)
out = {}
for n in names:
    dst = os.path.join(cache, "out.bin")
    c.get_file(n, dst, add_to_cache=False)
    out[n] = hashlib.sha256(open(dst, "rb").read()).hexdigest()
    os.unlink(dst)
print(json.dumps(out))
'''


@pytest.mark.slow
def test_cp_tree_and_read_back(backend, mount_factory, tmp_path):
    src = str(tmp_path / "src")
    files = make_tree(src)
    a = mount_factory(backend.url, name="a")
    t = time.monotonic()
    subprocess.run(["cp", "-r", src, a.p("tree")], check=True, timeout=240)
    copy_s = time.monotonic() - t
    diff = subprocess.run(["diff", "-r", src, a.p("tree")], capture_output=True, text=True, timeout=120)
    assert diff.returncode == 0, diff.stdout[-2000:] + diff.stderr[-2000:]

    # A second, fresh mount with an empty cache reads every byte back.
    b = mount_factory(backend.url, name="b")
    out = subprocess.run(["find", b.p("tree"), "-type", "f", "-exec", "sha256sum", "{}", "+"],
                         capture_output=True, text=True, check=True, timeout=240).stdout
    got = {}
    for line in out.splitlines():
        digest, path = line.split(None, 1)
        got[os.path.relpath(path.strip(), b.p("tree"))] = digest
    assert got == files

    # Our Client (fresh cache) and the published 2.x client read the same bytes.
    client = Client(cache_dir=str(tmp_path / "client-cache"), remote_url=backend.url)
    for rel, digest in files.items():
        dst = str(tmp_path / "client-out")
        client.get_file("/tree/" + rel, dst, add_to_cache=False)
        assert sha256_file(dst) == digest, rel
    ft2_python = ft2.ft2_python()
    if ft2_python is None and os.environ.get("FT_REQUIRE_INTEROP"):
        pytest.fail("published filetracker 2.x client not installed (FT_REQUIRE_INTEROP is set)")
    if ft2_python:
        sample = sorted(files)[::7] + [r for r in files if os.path.getsize(os.path.join(src, r)) > MIB]
        work = tmp_path / "ft2"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FILETRACKER_URL")}
        proc = subprocess.run([ft2_python, "-c", FT2_SCRIPT, backend.url, str(work),
                               json.dumps(["/tree/" + r for r in sample])],
                              cwd=str(work), env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ft2_digests = json.loads(proc.stdout.strip().splitlines()[-1])
        assert ft2_digests == {"/tree/" + r: files[r] for r in sample}
    print("cp -r of %d files (%d MiB) into the mount: %.1f s" % (
        len(files), sum(os.path.getsize(os.path.join(src, r)) for r in files) // MIB, copy_s))


def _head_version(url, name):
    r = requests.head(url + "/files" + name, timeout=10)
    r.raise_for_status()
    import email.utils
    return int(email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"])))


def test_shell_tools(backend, mount_factory, tmp_path):
    client = Client(cache_dir=str(tmp_path / "client-cache"), remote_url=backend.url)
    payload = bytes(range(256)) * 40  # 10240 bytes
    local = tmp_path / "payload"
    local.write_bytes(payload)
    names = ["/t/a.bin", "/t/sub/b.bin", "/t/sub/deeper/c.bin", "/t/empty"]
    for n in names[:3]:
        client.put_file(n, str(local), to_local_store=False)
    (tmp_path / "empty").write_bytes(b"")
    client.put_file("/t/empty", str(tmp_path / "empty"), to_local_store=False)

    m = mount_factory(backend.url, args=["--attr-timeout", "1"])
    # ls -lR: sizes right, folders implied.
    out = subprocess.run(["ls", "-lR", "--time-style=+%s", m.p("t")], capture_output=True, text=True,
                         check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.startswith(("-", "d"))]
    sizes = {parts[-1]: (parts[0][0], int(parts[4]), int(parts[5])) for parts in lines}
    assert sizes["a.bin"][:2] == ("-", 10240) and sizes["empty"][:2] == ("-", 0)
    assert sizes["sub"][0] == "d" and sizes["deeper"][0] == "d"
    assert sizes["a.bin"][2] == _head_version(backend.url, "/t/a.bin")
    # find lists exactly the names.
    found = subprocess.run(["find", m.p("t"), "-type", "f"], capture_output=True, text=True, check=True).stdout
    assert sorted(os.path.relpath(p, m.path) for p in found.split()) == sorted(n[1:] for n in names)
    # stat: size and mtime (the version).
    st = os.stat(m.p("/t/sub/deeper/c.bin"))
    assert st.st_size == 10240 and int(st.st_mtime) == _head_version(backend.url, "/t/sub/deeper/c.bin")
    assert os.path.isdir(m.p("/t/sub")) and not os.path.exists(m.p("/t/nope"))
    # cat, head -c, tail -c.
    assert subprocess.run(["cat", m.p("/t/a.bin")], capture_output=True, check=True).stdout == payload
    assert subprocess.run(["head", "-c", "100", m.p("/t/a.bin")], capture_output=True,
                          check=True).stdout == payload[:100]
    assert subprocess.run(["tail", "-c", "300", m.p("/t/sub/b.bin")], capture_output=True,
                          check=True).stdout == payload[-300:]
    assert subprocess.run(["cat", m.p("/t/empty")], capture_output=True, check=True).stdout == b""

    # Another client's put appears within the attribute timeout (1 s); a delete disappears.  The
    # deadline adds 3 s for a busy machine: it tells "refreshed" from "never refreshed", not speed.
    client.put_file("/t/new.txt", str(local), to_local_store=False)
    t = time.monotonic()
    while "new.txt" not in os.listdir(m.p("t")):
        assert time.monotonic() - t < 4, "a new file did not appear within the attribute timeout"
        time.sleep(0.05)
    client.delete_file("/t/a.bin")
    t = time.monotonic()
    while "a.bin" in os.listdir(m.p("t")) or os.path.exists(m.p("/t/a.bin")):
        assert time.monotonic() - t < 4, "a deleted file did not disappear within the attribute timeout"
        time.sleep(0.05)
    assert subprocess.run(["cat", m.p("/t/a.bin")], capture_output=True).returncode != 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
