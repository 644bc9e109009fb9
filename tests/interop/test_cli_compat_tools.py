"""The 2.x command forms of ``filetracker-server``, ``filetracker-cache-cleaner`` and ``filetracker-migrate``
(COMPAT.md),
run unchanged with our tools and with the published 2.x tools, give the same results.

* ``filetracker-server -p PORT -l ADDR -d DIR -D``: both start and serve; the same
  requests get the same status codes, versions (``Last-Modified``) and content
  (GET bodies after HTTP decoding, listings, ``/version/``).  The answers differ
  where the protocol lets them, which we do not compare: the 2.x server sends
  stored files gzip-encoded even to ``Accept-Encoding: identity`` (ours plain),
  its PUT/DELETE bodies are empty (ours a short text).  One documented semantic
  difference: after a DELETE, a PUT older than the delete is accepted by 2.x (it
  keeps no tombstone) and refused with 409 by ours (the delete wins, PROTOCOL.md).
  Usage errors: exit status 2 from both; without ``-d`` and ``FILETRACKER_DIR``
  the 2.x server crashes with a traceback (status 1), ours prints a usage error (2).
* The ``filetracker`` command forms of test_cli_compat.py, now each tool against its
  own server (2.x client + 2.x server, ours + ours): same stdout and exit statuses.
* ``filetracker-cache-cleaner -c GLOB -s 1G512M -i 1h30m -p 50``: both run on
  identical cache folders; they run forever, so each is stopped with SIGTERM once
  its first pass logged "Sleeping until"; the same files remain, the exit status
  (killed by SIGTERM) and stdout (empty) are the same, and standard error has the
  same lines once the timestamps (the line prefix and the wake-up time) are
  normalised (with ``-d`` the per-file debug lines are compared as a set: 2.x deletes
  newest victims first, ours oldest first).  Ours orders files by last use (issue 1),
  2.x by version: the folder is built so that files were used in version order,
  where both agree.  ``-q`` is silent in both; usage errors exit 2 in both.
* ``filetracker-migrate FILES_DIR URL [--root DIR] [-s]``: see :func:`test_migrate_same_result`.
"""

import ast
import email.utils
import gzip
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from urllib.parse import quote

import pytest
import requests

from tests.interop.ft2 import clean_env, ft2_script, require
from tests.interop.test_cli_compat import run_all
from tests.support import upstream
from tests.support.procs import Service, free_port, script

pytestmark = [pytest.mark.interop, pytest.mark.slow]

T = 1600000000


def server_argv(ours, port, data_dir):
    """The exact 2.x form ``filetracker-server -p PORT -l ADDR -d DIR -D`` for either tool."""
    tool = script("filetracker-server") if ours else upstream.server_script()
    argv = [tool, "-p", str(port), "-l", "127.0.0.1", "-d", data_dir, "-D"]
    if not ours:  # gunicorn must not import our package from the working folder (tests/support/upstream.py)
        argv = ["env", "-C", upstream.server_venv()] + argv
    return argv


def server_env(ours, home):
    if ours:
        return dict(os.environ, HOME=str(home))
    env = clean_env(home)
    env["PATH"] = os.path.join(upstream.server_venv(), "bin") + os.pathsep + env.get("PATH", "")
    return env


def stop(svc, ours):
    """Stop either server; the 2.x one without waiting for it to ignore SIGTERM."""
    svc.stop(10.0 if ours else upstream.STOP_TIMEOUT)


def start(ours, tmp):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    name = "ours" if ours else "ft2"
    svc = Service(server_argv(ours, port, os.path.join(str(tmp), name + "-data")),
                  os.path.join(str(tmp), name + "-server.log"), env=server_env(ours, tmp),
                  ready_url=url + "/version/").start()
    return svc, url


def date(v):
    return email.utils.formatdate(v, usegmt=True)


def scenario(url):
    """``[(step, status, Last-Modified or None, content or None)]`` of a fixed request sequence."""
    s = requests.Session()
    out = []

    def step(label, r, lm=True, body=True):
        out.append((label, r.status_code, r.headers.get("Last-Modified") if lm else None,
                    r.content if body else None))

    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(3125))  # 100 000 bytes, the same for both
    step("version", s.get(url + "/version/"), lm=False)
    step("put", s.put(url + "/files/c/a.txt", params={"last_modified": date(T)}, data=b"hello\n"), body=False)
    step("put older", s.put(url + "/files/c/a.txt", params={"last_modified": date(T - 100)}, data=b"old\n"),
         body=False)
    step("get", s.get(url + "/files/c/a.txt"))
    step("get identity", s.get(url + "/files/c/a.txt", headers={"Accept-Encoding": "identity"}))
    step("head", s.head(url + "/files/c/a.txt"))
    step("put gzip+sha", s.put(url + "/files/c/d/b.bin", params={"last_modified": date(T + 5)},
                               data=gzip.compress(data),
                               headers={"Content-Encoding": "gzip", "Logical-Size": str(len(data)),
                                        "SHA256-Checksum": hashlib.sha256(data).hexdigest()}), body=False)
    step("get gzip'd", s.get(url + "/files/c/d/b.bin"))
    step("list", s.get(url + "/list/c"), lm=False)
    step("list at a version", s.get(url + "/list/c", params={"last_modified": date(T + 1)}), lm=False)
    step("list root", s.get(url + "/list/"), lm=False)
    step("get missing", s.get(url + "/files/c/nope"), body=False)
    step("head missing", s.head(url + "/files/c/nope"), body=False)
    step("delete older", s.delete(url + "/files/c/a.txt", params={"last_modified": date(T - 5)}),
         lm=False, body=False)
    step("get after older delete", s.get(url + "/files/c/a.txt"))
    step("delete", s.delete(url + "/files/c/a.txt", params={"last_modified": date(T + 10)}), lm=False, body=False)
    step("get deleted", s.get(url + "/files/c/a.txt"), body=False)
    step("delete missing", s.delete(url + "/files/c/nope", params={"last_modified": date(T + 10)}),
         lm=False, body=False)
    step("put newer than delete", s.put(url + "/files/c/a.txt", params={"last_modified": date(T + 11)},
                                        data=b"again"), body=False)
    step("get again", s.get(url + "/files/c/a.txt"))
    step("list after", s.get(url + "/list/c"), lm=False)
    return out


def test_server_command_same_answers(tmp_path):
    require()
    upstream.require()
    results = {}
    for ours in (False, True):
        svc, url = start(ours, tmp_path)
        try:
            results[ours] = scenario(url)
            # the documented difference: 2.x keeps no tombstone
            r = requests.put(url + "/files/c/d/b.bin", params={"last_modified": date(T + 5)}, data=b"x")
            assert r.status_code == 200
            requests.delete(url + "/files/c/d/b.bin", params={"last_modified": date(T + 20)})
            r = requests.put(url + "/files/c/d/b.bin", params={"last_modified": date(T + 15)}, data=b"x")
            assert r.status_code == (409 if ours else 200)
        finally:
            stop(svc, ours)
        assert svc.proc.returncode is not None
    for theirs, mine in zip(results[False], results[True], strict=True):
        assert mine == theirs
    print("filetracker-server: %d requests, same status, version and content from both" % len(results[True]))


@pytest.mark.parametrize("args, same", [
    (["-p", "notaport"], True),
    (["--bogus"], True),
    (["-p", "1", "-l", "127.0.0.1", "-D", "-x"], True),
    ([], False),   # no -d and no FILETRACKER_DIR: 2.x crashes (1, traceback), ours a usage error (2)
])
def test_server_usage_errors(tmp_path, args, same):
    upstream.require()
    codes = {}
    for ours in (False, True):
        tool = script("filetracker-server") if ours else upstream.server_script()
        argv = ([] if ours else ["env", "-C", upstream.server_venv()]) + [tool] + args
        if args:
            argv += ["-d", str(tmp_path / "d")]
        env = server_env(ours, tmp_path)
        env.pop("FILETRACKER_DIR", None)
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        codes[ours] = (p.returncode, p.stdout, p.stderr)
        if ours:
            assert "Traceback" not in p.stderr and p.stderr.strip()
    if same:
        assert codes[True][0] == codes[False][0] == 2
        assert "error" in codes[True][2] and "error" in codes[False][2]
    else:
        assert codes[False][0] == 1 and "Traceback" in codes[False][2]
        assert codes[True][0] == 2 and "--dir" in codes[True][2]


def test_filetracker_command_each_against_its_own_server(tmp_path):
    """2.x client on the 2.x server vs our client on our server: the whole tool pair swapped."""
    require()
    upstream.require()
    results = {}
    for ours in (False, True):
        svc, url = start(ours, tmp_path)
        try:
            if ours:
                env = dict(os.environ, HOME=str(tmp_path))
                env.pop("FILETRACKER_URL", None)
                results[ours] = run_all(script("filetracker"), url, tmp_path / "c-ours", "our", env)
            else:
                results[ours] = run_all(ft2_script("filetracker"), url, tmp_path / "c-ft2", "two",
                                        clean_env(tmp_path))
        finally:
            stop(svc, ours)
    for (args, rc2, out2), (_, rc3, out3) in zip(results[False][0], results[True][0], strict=True):
        assert (args, rc3, out3) == (args, rc2, out2)
    assert results[True][1] == results[False][1]


def test_server_long_options_log_file_and_workers(tmp_path):
    """``--port --listen-on --no-daemon -L FILE --log-level L --workers N`` with the folder from
    ``FILETRACKER_DIR``: both serve, log to FILE."""
    upstream.require()
    for ours in (False, True):
        name = "ours" if ours else "ft2"
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        log_file = tmp_path / (name + "-server.log")
        tool = script("filetracker-server") if ours else upstream.server_script()
        argv = ([] if ours else ["env", "-C", upstream.server_venv()]) + [
            tool, "--port", str(port), "--listen-on", "127.0.0.1", "--no-daemon",
            "-L", str(log_file), "--log-level", "INFO", "--workers", "2"]
        env = dict(server_env(ours, tmp_path), FILETRACKER_DIR=str(tmp_path / name))
        svc = Service(argv, str(tmp_path / (name + ".out")), env=env, ready_url=url + "/version/").start()
        try:
            r = requests.put(url + "/files/long/x", params={"last_modified": date(T)}, data=b"x")
            assert r.status_code == 200
            r = requests.get(url + "/files/long/x")
            assert r.status_code == 200 and r.content == b"x" and r.headers["Last-Modified"] == date(T).replace(
                "GMT", "-0000")
        finally:
            stop(svc, ours)
        assert log_file.exists() and log_file.stat().st_size > 0, name
        assert os.listdir(str(tmp_path / name)), name  # the store is in $FILETRACKER_DIR


def test_server_fallback_url_same_content(tmp_path):
    """``--fallback-url URL``: through either server a client gets the old file with its version.
    The 2.x server answers 307 (the client follows it); ours streams it (200, ``X-Fallback: 1``)."""
    upstream.require()
    from tests.client.servers import start_server

    old = start_server(tmp_path, "old")
    try:
        r = requests.put(old.url + "/files/legacy/f.txt", params={"last_modified": date(T)}, data=b"legacy\n")
        assert r.status_code == 200
        for ours in (False, True):
            port = free_port()
            url = "http://127.0.0.1:%d" % port
            argv = server_argv(ours, port, str(tmp_path / ("fb-ours" if ours else "fb-ft2")))
            svc = Service(argv + ["--fallback-url", old.url], str(tmp_path / ("fb-%s.log" % ours)),
                          env=server_env(ours, tmp_path), ready_url=url + "/version/").start()
            try:
                # the first request, before ours can have copied the file in (it copies in the
                # background after serving, so a later request may be answered from its own store)
                first = requests.get(url + "/files/legacy/f.txt", allow_redirects=False, timeout=10)
                if ours:
                    assert first.status_code == 200 and first.headers["X-Fallback"] == "1"
                else:
                    assert first.status_code == 307 and first.headers["Location"].startswith(old.url)
                r = requests.get(url + "/files/legacy/f.txt", timeout=10)
                assert (r.status_code, r.content, r.headers["Last-Modified"]) == (200, b"legacy\n", date(T).replace(
                    "GMT", "-0000"))
                assert requests.get(url + "/files/legacy/none", timeout=10).status_code == 404
            finally:
                stop(svc, ours)
    finally:
        old.stop()


# ---------------------------------------------------------------------- cache cleaner

KiB = 1024


def make_cache(root):
    """A cache folder: 12 files of 4-64 KiB in files/ with versions (mtimes) in one order and
    uses (atimes, in the future so they win over the change time) in the same order."""
    files = {}
    now = int(time.time())
    for i in range(12):
        name = "d%d/f%02d.bin" % (i % 3, i)
        size = (4 + (i * 7) % 61) * KiB
        path = os.path.join(root, "files", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        files[name] = (T + i * 100, size)
    for name, (version, _size) in files.items():
        i = int(name[-6:-4])
        os.utime(os.path.join(root, "files", name), (now + 10_000_000 + i * 100, version))
    return files


def copy_cache(src, dst, shift=0):
    """A copy (sizes, versions and uses), versions and uses ``shift`` seconds later."""
    shutil.copytree(src, dst)
    for dirpath, _dirs, names in os.walk(os.path.join(src, "files")):
        for n in names:
            s = os.path.join(dirpath, n)
            st = os.stat(s)
            os.utime(os.path.join(dst, os.path.relpath(s, src)),
                     ns=(st.st_atime_ns + shift * 10**9, st.st_mtime_ns + shift * 10**9))


def remaining(root):
    out = []
    for dirpath, _dirs, names in os.walk(os.path.join(root, "files")):
        out += [os.path.relpath(os.path.join(dirpath, n), os.path.join(root, "files")) for n in names]
    return sorted(out)


def normalise(stderr, tmp_path):
    """Log lines without their timestamps (prefix and the "Sleeping until" time); with ``-d`` the
    cache folders (``ours-a`` / ``ft2-a``) are named alike, and the order of the debug lines of
    one scan (glob expansion, deletions) does not matter."""
    lines = []
    stderr = stderr.replace(str(tmp_path), "TMP").replace("TMP/ours-", "TMP/X-").replace("TMP/ft2-", "TMP/X-")
    for line in stderr.splitlines():
        line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+", "", line)
        line = re.sub(r"Sleeping until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\.", "Sleeping until T.", line)
        m = re.match(r"(.* Glob expressions have expanded to )(\[.*\])$", line)
        if m:  # the order of a folder listing
            line = m.group(1) + repr(sorted(ast.literal_eval(m.group(2))))
        lines.append(line)
    debug = sorted(line for line in lines if " DEBUG: " in line)
    return [line for line in lines if " DEBUG: " not in line], debug


def cache_files(base):
    """The files left in both cache folders: ``{"a": [...], "b": [...]}`` of ``base``-a and ``base``-b."""
    return {k: remaining("%s-%s" % (base, k)) for k in ("a", "b")}


def run_cleaner(ours, base, size, tmp_path, flags=()):
    """Run the 2.x form on ``base``-*/ until its first pass is over, then SIGTERM it."""
    tool = script("filetracker-cache-cleaner") if ours else ft2_script("filetracker-cache-cleaner")
    env = dict(os.environ, HOME=str(tmp_path)) if ours else clean_env(tmp_path)
    err_path = str(base) + ".stderr"
    with open(err_path, "wb") as err:
        if "--long" in flags:  # long spellings, one glob per folder
            argv = [tool, "--cache-size-limit", size, "--scan-interval", "1h30m", "--percent-cleaning-level", "50",
                    "--cache-dirs", str(base) + "-a", str(base) + "-[b]"]
        else:
            argv = [tool, "-c", str(base) + "-*", "-s", size, "-i", "1h30m", "-p", "50"] + list(flags)
        proc = subprocess.Popen(argv,
                                cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=err,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        initial, last, stable_since = cache_files(base), None, None
        while time.monotonic() < deadline:
            with open(err_path) as f:
                if "Sleeping until" in f.read():
                    break
            if "-q" in flags:  # silent (and, in this test, always cleaning): its pass is over once
                now = cache_files(base)  # files went and nothing changed for a second
                if now != last:
                    last, stable_since = now, time.monotonic()
                elif now != initial and time.monotonic() - stable_since >= 1:
                    break
            assert proc.poll() is None, open(err_path).read()
            time.sleep(0.05)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no first pass within 60 s: %s" % open(err_path).read())
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    with open(err_path) as f:
        return proc.returncode, out.decode(), f.read()


@pytest.mark.parametrize("size, expect_clean, flags", [
    ("1G512M", False, ()), ("256K", True, ()), ("0B", True, ()), ("256K", True, ("-d",)), ("256K", True, ("-q",)),
    ("300K", True, ("--long",))])
def test_cache_cleaner_same_files_remain(tmp_path, size, expect_clean, flags):
    require()
    template = tmp_path / "template"
    files = make_cache(str(template))
    total = sum(s for _, s in files.values())
    results = {}
    for ours in (False, True):
        base = tmp_path / ("ours" if ours else "ft2")
        # two cache folders matched by one glob; b's files 50 s younger than a's, so no two files tie
        # (on a full tie both tools keep the one of the folder the glob lists first: the order of
        # a folder listing, which may differ between the two tools' folders)
        for k, shift in (("a", 0), ("b", 50)):
            copy_cache(str(template), "%s-%s" % (base, k), shift)
        results[ours] = run_cleaner(ours, base, size, tmp_path, flags) + (
            cache_files(base),)
    rc2, out2, err2, left2 = results[False]
    rc3, out3, err3, left3 = results[True]
    assert left3 == left2
    assert rc3 == rc2 == -signal.SIGTERM
    assert out3 == out2 == ""
    assert normalise(err3, tmp_path) == normalise(err2, tmp_path), (err2, err3)
    if "-q" in flags:
        assert err3 == ""
    else:
        assert ("Cleaning done." if expect_clean else "Decided not to perform cache cleaning.") in err3
    kept = sum(files[n][1] for n in left3["a"]) * 2
    if expect_clean:
        assert len(left3["a"]) < len(files)
        # every kept file is newer than every deleted one, and less than half the limit stays
        gone = set(files) - set(left3["a"])
        assert not gone or max(files[n][0] for n in gone) < min((files[n][0] for n in left3["a"]), default=T * 2)
    else:
        assert kept == 2 * total
    print("cache cleaner -s %s: %d of %d files kept per folder, same as 2.x" % (size, len(left3["a"]), len(files)))


@pytest.mark.parametrize("args", [[], ["-s", "1X"], ["-s", "12"], ["-s", "1G", "-i", "5"], ["-s", "1G", "-d", "-q"]])
def test_cache_cleaner_usage_errors(tmp_path, args):
    require()
    codes = {}
    for ours in (False, True):
        tool = script("filetracker-cache-cleaner") if ours else ft2_script("filetracker-cache-cleaner")
        env = dict(os.environ, HOME=str(tmp_path)) if ours else clean_env(tmp_path)
        p = subprocess.run([tool, "-c", str(tmp_path / "none")] + args, cwd=str(tmp_path), env=env,
                           capture_output=True, text=True, timeout=30)
        codes[ours] = p
    assert codes[True].returncode == codes[False].returncode == 2
    assert codes[True].stdout == codes[False].stdout == ""
    for p in codes.values():
        assert p.stderr.startswith("usage:") and "error:" in p.stderr


# ---------------------------------------------------------------------- filetracker-migrate

def make_tree(root):
    files = {"top.txt": b"top\n", "a/one.bin": os.urandom(5000), "a/b/two": b"", "a/b/c d.txt": b"space\n"}
    for i, (rel, data) in enumerate(sorted(files.items())):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.utime(p, (T + i, T + i))
    return files


def store_content(url):
    """``{name: (Last-Modified, bytes)}`` of everything the server lists."""
    names = requests.get(url + "/list/", timeout=10).text.splitlines()
    return {n: (r.headers["Last-Modified"], r.content)
            for n in names for r in [requests.get(url + "/files/" + quote(n), timeout=10)]}


def test_migrate_same_result(tmp_path):
    """``filetracker-migrate FILES_DIR URL [--root DIR] [-s/--silent]``: same store content, status and
    (silent) output.  Documented differences: when uploads fail the 2.x tool still exits 0, ours exits 1;
    a server that cannot be reached at all is one error line from ours, one per file from the 2.x tool;
    the 2.x tool prints "Settled for protocol version 2" on stdout even with ``-s`` (normalised away)."""
    upstream.require()  # the full 2.x install (the client-only venv lacks its progress bar package)
    from tests.client.servers import start_server

    tree = tmp_path / "tree"
    make_tree(str(tree))
    results = {}
    for ours in (False, True):
        tool = script("filetracker-migrate") if ours else os.path.join(upstream.server_venv(), "bin",
                                                                        "filetracker-migrate")
        env = dict(os.environ, HOME=str(tmp_path)) if ours else clean_env(tmp_path)
        server = start_server(tmp_path, "mig-ours" if ours else "mig-ft2")
        try:
            runs = []
            for args in ([str(tree / "a"), server.url, "--root", str(tree), "-s"],
                         [str(tree), server.url, "--silent"]):
                p = subprocess.run([tool] + args, cwd=str(tmp_path), env=env, capture_output=True, text=True,
                                   timeout=60)
                # the 2.x client prints a diagnostic when it first talks to a server, even with -s
                runs.append((p.returncode, p.stdout.replace("Settled for protocol version 2\n", ""), p.stderr))
            results[ours] = runs, store_content(server.url)
        finally:
            server.stop()
        p = subprocess.run([tool, str(tree / "a" / "b"), "http://127.0.0.1:%d" % free_port(), "-s"],
                           cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == (1 if ours else 0)
        # ours stops at the first sign that the server cannot be reached at all (one line)
        assert p.stderr.count("ERROR when uploading ") == (1 if ours else 2), p.stderr
    assert results[True] == results[False]
    assert results[True][0] == [(0, "", ""), (0, "", "")]
    assert sorted(results[True][1]) == ["a/b/c d.txt", "a/b/two", "a/one.bin", "top.txt"]
