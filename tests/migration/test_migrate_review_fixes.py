"""Fixes from an operator review of the migration tools.  Real processes: our single server as the
old store (it speaks the 2.x protocol), a 3-node cluster with a gateway as the target.

* ``compare`` prints each difference once (standard output), nothing per file on standard error;
* ``import --dry-run`` does not claim size 0 for files it has not read;
* ``--parallel`` says what runs in parallel, takes 1 to 256 and starts no more threads than files;
* ``import`` with a storage node as the target (the default ``--to`` is ``--cluster``) stops at
  once with a hint; a target that refuses every write stops the run at the first refusal;
* ``filetracker-migrate``: a missing source folder is a usage error, an unreachable server one
  error line.
"""

import email.utils
import os
import re
import shutil
import subprocess

import pytest
import requests

from cluster.migrate.copier import worker_count
from tests.cluster.test_e2e_support import TestCluster
from tests.migration.conftest import run_admin, single_server
from tests.support.procs import Service, free_port, script

VERSION = 1_700_000_000
F6 = b"eleven byte"   # 11 bytes


def put(url, name, data, version=VERSION):
    r = requests.put(url + "/files" + name, params={"last_modified": email.utils.formatdate(version, usegmt=True)},
                     data=data, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """``(old server URL, cluster)``: the old store holds /old/same and /old/f6; the cluster /old/same."""
    tmp = tmp_path_factory.mktemp("review")
    old, old_url = single_server(str(tmp), "old")
    os.makedirs(str(tmp / "c"))
    cluster = TestCluster(tmp / "c", nodes=3, replicas=3, gateways=1)
    try:
        cluster.start()
        put(old_url, "/old/same", b"same content")
        put(old_url, "/old/f6", F6)
        put(cluster.gw, "/old/same", b"same content")
        yield old_url, cluster
    finally:
        cluster.stop()
        old.stop()


def test_compare_prints_each_difference_once(stores):
    old_url, cluster = stores
    # --prefix /old: other tests of this module add names elsewhere to the shared old server
    p = run_admin(["compare", "--from", old_url, "--prefix", "/old", "--to", cluster.gw])
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stdout.count("/old/f6") == 1 and "missing  /old/f6" in p.stdout, p.stdout
    assert "/old/f6" not in p.stderr and "failed" not in p.stderr, p.stderr
    assert "1 identical, 1 missing" in p.stdout


def test_import_dry_run_does_not_claim_size_zero(stores):
    old_url, cluster = stores
    p = run_admin(["import", "--from", old_url, "--prefix", "/old", "--to", cluster.gw, "--dry-run"])
    assert p.returncode == 0, (p.stdout, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.startswith("would-copy /old/f6")]
    # over HTTP the version is asked only when it matters: the name alone, size unknown
    assert len(lines) == 1 and re.fullmatch(r"would-copy /old/f6(@%d)? \?" % VERSION, lines[0]), p.stderr
    assert "dry run: 1 of 2 files would be copied" in p.stdout


def test_parallel_help_says_what_runs_at_once():
    assert "files compared at once" in run_admin(["compare", "--help"]).stdout
    assert "files copied at once" in run_admin(["import", "--help"]).stdout


def test_parallel_is_bounded_and_threads_follow_the_files():
    # 100,000 was accepted and started that many threads for 3 files (5.5 s, 264 MB)
    for verb in ("import", "compare"):
        for n in ("0", "257", "100000"):
            p = run_admin([verb, "--from", "http://127.0.0.1:1", "--to", "http://127.0.0.1:1", "--parallel", n])
            assert p.returncode == 2, (verb, n, p.stdout, p.stderr)
            assert p.stderr.splitlines() == ["filetracker-admin: error: --parallel must be from 1 to 256"], p.stderr
    assert [worker_count(p, n) for p, n in ((4, 3), (4, 100), (256, 0), (1, 0), (256, 256))] == [3, 4, 1, 1, 256]


def test_a_prefix_with_dotdot_is_a_usage_error():
    # exit status 1 before (the importer's usage errors are 2), after contacting the cluster
    for verb in ("import", "compare"):
        p = run_admin([verb, "--from", "http://127.0.0.1:1", "--to", "http://127.0.0.1:1", "--prefix", "/a/../x"])
        assert p.returncode == 2, (verb, p.stdout, p.stderr)
        assert p.stderr.splitlines()[-1] == ("filetracker-admin %s: error: argument --prefix: a prefix may not "
                                             "contain '..': '/a/../x'" % verb), p.stderr


def test_import_from_a_missing_folder_says_so(stores, tmp_path):
    _old_url, cluster = stores
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    for given, reason in (("nope", "no such folder"), ("a-file", "not a folder"),
                          ("empty", "is not a filetracker 2.x data folder (no links/ inside)")):
        p = run_admin(["import", "--from-dir", str(tmp_path / given), "--to", cluster.gw])
        assert p.returncode == 1 and p.stdout == "", (p.stdout, p.stderr)
        lines = p.stderr.splitlines()   # a missing folder said "no links/ inside"
        assert lines[-1] == "filetracker-admin: %s%s%s" % (tmp_path / given, " " if given == "empty" else ": ", reason)


def test_import_into_a_storage_node_is_refused_at_once(stores):
    old_url, cluster = stores
    node = cluster.node_urls[0]
    env = dict(os.environ)
    env.pop("FILETRACKER_ADMIN_URL", None)
    for args, hint in ((["--cluster", node, "import", "--from", old_url], "give --to GATEWAY_URL"),
                       (["import", "--from", old_url, "--to", node], "--to must be the gateway's URL"),
                       (["--cluster", node, "compare", "--from", old_url], "give --to GATEWAY_URL")):
        p = run_admin(args, env=env)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and "is a storage node" in lines[0] and hint in lines[0], p.stderr
        assert p.stdout == ""
    # the gateway itself is accepted
    p = run_admin(["compare", "--from", old_url, "--to", cluster.gw], env=env)
    assert p.returncode == 1 and "missing  /old/f6" in p.stdout


def test_import_stops_at_the_first_whole_target_refusal(stores, tmp_path):
    old_url, _cluster = stores
    for i in range(8):
        put(old_url, "/many/f%d" % i, b"x" * (i + 1))
    port = free_port()
    target = "http://127.0.0.1:%d" % port
    srv = Service([script("filetracker-server"), "-p", str(port), "-l", "127.0.0.1", "-d", str(tmp_path / "ro"),
                   "-D", "--read-only", "--log-level", "WARNING"], str(tmp_path / "ro.log"),
                  ready_url=target + "/version/").start()
    try:
        p = run_admin(["import", "--from", old_url, "--prefix", "/many", "--to", target, "--parallel", "1"])
    finally:
        srv.stop()
    assert p.returncode == 1, (p.stdout, p.stderr)
    hints = [line for line in p.stderr.splitlines() if "refuses writes" in line]
    assert len(hints) == 1 and "read-only" in hints[0] and "stopping" in hints[0], p.stderr
    assert not re.search(r"^failed /many/", p.stderr, re.M), p.stderr
    assert "stopped: %s refuses writes" % target in p.stdout
    assert "copied 0 of 8 files" in p.stdout


def migrate(*args):
    return subprocess.run([script("filetracker-migrate")] + list(args), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_migrate_missing_source_folder_is_a_usage_error(stores, tmp_path):
    old_url, _ = stores
    for path, why in ((str(tmp_path / "nonexistent"), "no such folder"), (__file__, "not a folder")):
        p = migrate(path, old_url)
        assert p.returncode == 2, (p.stdout, p.stderr)
        assert p.stderr.splitlines() == ["filetracker-migrate: error: %s: %s" % (path, why)]


def test_migrate_unreadable_source_folder(stores, tmp_path):
    """A folder the tool may not read: one line, exit 2.  Root reads every folder, so as root
    the tool runs without the capabilities that let it (``setpriv``; still root, so the
    checkout and the test's folders stay reachable wherever they are)."""
    old_url, _ = stores
    drop = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to drop root's capabilities"
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    folder = tmp_path / "closed"
    folder.mkdir()
    folder.chmod(0)
    try:
        p = subprocess.run(drop + [script("filetracker-migrate"), str(folder), old_url], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        folder.chmod(0o755)
    assert p.returncode == 2 and "cannot read it" in p.stderr, (p.returncode, p.stderr)


def test_migrate_unreachable_server_is_one_error(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    for i in range(5):
        (tree / "a" / ("f%d" % i)).write_bytes(b"data %d" % i)
    url = "http://127.0.0.1:%d" % free_port()
    p = migrate(str(tree), url)   # with the progress bar
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert "cannot reach it" in lines[0] and url in lines[0] and "nothing uploaded" in lines[0]
    assert "100%" not in p.stderr


def test_migrate_still_uploads(stores, tmp_path):
    old_url, _ = stores
    tree = tmp_path / "tree"
    (tree / "mig").mkdir(parents=True)
    (tree / "mig" / "one").write_bytes(b"one")
    os.utime(tree / "mig" / "one", (VERSION, VERSION))
    p = migrate(str(tree), old_url, "-s")
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    r = requests.get(old_url + "/files/mig/one", timeout=10)
    assert r.status_code == 200 and r.content == b"one"
