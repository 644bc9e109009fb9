"""Migration from a real filetracker 2.x server (issue 10, acceptance 1-4 and 6).

One module, one filled 2.x store (``tests/migration/dataset.py``: 300 files
up to 5 MiB by default; ``FT_MIGRATION_FILES`` / ``FT_MIGRATION_MAX_MIB``
set the issue's full 1,000 / 20), tests in order: the old server is stopped
by the last one.  Figures (files/s, bytes/s of both import paths) are
printed (``pytest -s``) and written to ``<tmp>/migration-figures.json``.

Skipped when the 2.x server venv (scripts/setup-ft2-server.sh) is missing.
"""

import email.utils
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from urllib.parse import quote

import pytest
import requests

from filetracker.records import merge
from tests.cluster.test_e2e_support import TestCluster
from tests.migration import dataset
from tests.migration.conftest import admin_argv, run_admin, single_server
from tests.support.procs import ROOT, Service, free_port, script

pytestmark = [pytest.mark.interop, pytest.mark.slow]

FIGURES = {}
COPIED_LINE = re.compile(r"^copied (.+)@(\d+) (\d+)$")


def copied_names(stderr_text):
    return [m.group(1) for m in map(COPIED_LINE.match, stderr_text.splitlines()) if m]


def report(key, summary):
    FIGURES[key] = {k: summary[k] for k in ("copied", "copied_bytes", "elapsed_seconds", "files_per_second",
                                            "bytes_per_second")}
    print("\n%s: %d files, %.1f MiB in %.2fs: %.1f files/s, %.1f MiB/s" % (
        key, summary["copied"], summary["copied_bytes"] / 2**20, summary["elapsed_seconds"],
        summary["files_per_second"], summary["bytes_per_second"] / 2**20))


@pytest.fixture(scope="module", autouse=True)
def figures_file(tmp_path_factory):
    yield
    if FIGURES:
        count, max_bytes = dataset.sizes_from_env()
        path = os.path.join(str(tmp_path_factory.getbasetemp()), "migration-figures.json")
        with open(path, "w") as f:
            json.dump({"files": count, "max_bytes": max_bytes, "figures": FIGURES}, f, indent=1)
        print("\nmigration figures (%d files up to %d MiB): %s" % (count, max_bytes >> 20, path))


def import_json(args, ok=True):
    p = run_admin(args + ["--json"])
    assert (p.returncode == 0) == ok, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return json.loads(p.stdout), p.stderr


def start_gateway(tmp, cluster, name, extra=()):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", ",".join(cluster.node_urls),
            "--log-level", "INFO", "--cluster-secret-file", cluster.secret_file] + list(extra)
    return Service(argv, os.path.join(tmp, name + ".log"), ready_url=url + "/version/").start(), url


def new_cluster(path, gateways, nodes=3):
    """A TestCluster (N = min(3, nodes)) whose folder exists; call ``start()``."""
    os.makedirs(str(path), exist_ok=True)
    return TestCluster(path, nodes=nodes, replicas=min(3, nodes), gateways=gateways)


def merged_records(cluster):
    """``{name: Record}``: every node's records (tombstones too) merged by the merge rule."""
    out = {}
    for url in cluster.node_urls:
        for name, rec in cluster.node_listing(url).items():
            out[name] = merge(out.get(name), rec)
    return out


# --------------------------------------------------------------------------- single server target


def test_import_into_single_server_http_and_dir(old_store, tmp_path):
    """Both import paths into our single server: dry run, copy, rerun (nothing copied twice), compare."""
    old, model, data_dir = old_store
    srv, url = single_server(str(tmp_path))
    try:
        s, _ = import_json(["--cluster", url, "import", "--from", old.url, "--dry-run"])
        assert s["import"]["would_copy"] == len(model.live) and s["import"]["copied"] == 0
        assert requests.get(url + "/list/mig").text == ""

        s, err = import_json(["--cluster", url, "import", "--from", old.url, "--parallel", "4"])
        imp = s["import"]
        assert imp["copied"] == len(model.live) == imp["total"], err[-2000:]
        assert imp["copied_bytes"] == model.total_bytes and imp["failed"] == []
        assert sorted(copied_names(err)) == sorted(model.live)
        report("http -> single server", imp)
        assert dataset.check_all(url, model) == []
        for name in model.deleted:
            assert requests.head(url + "/files" + quote(name)).status_code == 404

        # resumable: a second run (either path) copies nothing
        s, _ = import_json(["--cluster", url, "import", "--from", old.url])
        assert s["import"]["copied"] == 0 and s["import"]["skipped"] == {"present": len(model.live)}
        s, _ = import_json(["--cluster", url, "import", "--from-dir", data_dir])
        assert s["import"]["copied"] == 0 and s["import"]["skipped"] == {"present": len(model.live)}

        # the target changes: a newer write and a delete are kept, and compare lists both
        folder = "/mig/d3"
        names = sorted(n for n in model.live if n.startswith(folder + "/"))
        newer, gone = names[3], names[4]
        v_new = int(time.time())
        r = requests.put(url + "/files" + quote(newer), params={"last_modified": email.utils.formatdate(v_new)},
                         data=b"rewritten in the cluster")
        assert r.status_code == 200
        r = requests.delete(url + "/files" + quote(gone), params={"last_modified": email.utils.formatdate(v_new)})
        assert r.status_code == 200
        s, _ = import_json(["--cluster", url, "import", "--from-dir", data_dir])
        assert s["import"]["copied"] == 0
        assert s["import"]["skipped"] == {"present": len(model.live) - 2, "newer": 1, "deleted": 1}
        assert requests.get(url + "/files" + quote(newer)).content == b"rewritten in the cluster"
        assert requests.head(url + "/files" + quote(gone)).status_code == 404
        p = run_admin(["--cluster", url, "compare", "--from", old.url, "--prefix", folder])
        assert p.returncode == 1, p.stdout[-2000:]
        assert p.stdout.splitlines()[:2] == sorted(["missing  %s" % gone, "newer    %s: cluster %d > old %d"
                                                    % (newer, v_new, model.live[newer][0])],
                                                   key=lambda line: line.split()[1]), p.stdout
        assert re.fullmatch(r"compared %d files in [0-9.]+s: %d identical, 1 missing, 1 newer"
                            % (len(names), len(names) - 2), p.stdout.splitlines()[-1]), p.stdout
    finally:
        srv.stop()

    # the offline path, on a fresh server, for its figures
    srv, url = single_server(str(tmp_path), "ours-dir")
    try:
        s, err = import_json(["--cluster", url, "import", "--from-dir", data_dir, "--parallel", "4", "--verify"])
        assert s["import"]["copied"] == len(model.live) and s["import"]["failed"] == [], err[-2000:]
        assert s["compare"]["same"] == len(model.live) and s["compare"]["differences"] == []
        report("dir -> single server", s["import"])
    finally:
        srv.stop()


def test_import_reports_failures(old_store, tmp_path):
    """An unreachable cluster is a one-line error; a corrupt blob is listed as failed (exit 1)."""
    old, model, data_dir = old_store
    p = run_admin(["--cluster", "http://127.0.0.1:%d" % free_port(), "import", "--from", old.url])
    assert p.returncode == 1 and "cannot reach the cluster" in p.stderr and "Traceback" not in p.stderr
    env = dict(os.environ)
    env.pop("FILETRACKER_ADMIN_URL", None)
    p = run_admin(["import", "--from", old.url], env=env)
    assert p.returncode == 2 and "no cluster given" in p.stderr
    p = run_admin(["--cluster", "%s,%s" % (old.url, old.url), "import", "--from", old.url])
    assert p.returncode == 2 and "one gateway" in p.stderr
    p = run_admin(["--cluster", old.url, "import", "--from-dir", str(tmp_path)])
    assert p.returncode == 1 and "not a filetracker 2.x data folder" in p.stderr
    p = run_admin(["--cluster", old.url, "import", "--from", old.url, "--from-dir", data_dir])
    assert p.returncode == 2  # usage error: one source only

    # a copy of the data folder with one blob corrupted
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(data_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("db", "locks"))
    name = sorted(n for n, (_, _, size) in model.live.items() if size > 100)[0]
    blob = os.path.realpath(os.path.join(copy, "links", name.lstrip("/")))
    assert blob.startswith(copy)
    import gzip

    with open(blob, "wb") as f:
        f.write(gzip.compress(b"not the original content"))
    srv, url = single_server(str(tmp_path))
    try:
        s, _ = import_json(["--cluster", url, "import", "--from-dir", copy, "--prefix", os.path.dirname(name)],
                           ok=False)
        assert [f["name"] for f in s["import"]["failed"]] == [name]
        assert "SHA-256" in s["import"]["failed"][0]["reason"]
        assert requests.head(url + "/files" + quote(name)).status_code == 404  # nothing corrupt stored
        p = run_admin(["--cluster", url, "import", "--from-dir", copy, "--prefix", os.path.dirname(name)])
        assert p.returncode == 1 and ("failed 1\n  %s: " % name) in p.stdout, p.stdout
    finally:
        srv.stop()


# --------------------------------------------------------------------------- the cluster


class Traffic(threading.Thread):
    """Clients of the gateway during the migration: read old files (checking them),
    write new files, overwrite and delete some old ones.  Bounded in operations and time."""

    def __init__(self, url, model, max_ops=3000, touch=12):
        super().__init__(daemon=True)
        self.url = url
        self.model = model
        self.names = sorted(model.live)
        self.rng = random.Random(5)
        self.stop = threading.Event()
        self.max_ops = max_ops
        self.touch = touch
        self.written = {}       # name -> (version, sha256, size): new names and overwritten old ones
        self.deleted = set()    # old names deleted through the gateway
        self.reads = 0
        self.errors = []

    def untouched(self, name):
        return name not in self.written and name not in self.deleted

    def run(self):
        s = requests.Session()
        ops = 0
        while not self.stop.is_set() and ops < self.max_ops:
            ops += 1
            kind = ops % 4
            name = self.rng.choice(self.names)
            try:
                if kind in (0, 2) and self.untouched(name):
                    got = dataset.digest_of(s, self.url, name)
                    self.reads += 1
                    if got != self.model.live[name] and self.untouched(name):
                        self.errors.append(("read", name, got, self.model.live[name]))
                elif kind == 1:
                    data = os.urandom(self.rng.randrange(1, 50000))
                    new = "/mig-new/f%d" % ops
                    self._put(s, new, data)
                elif kind == 3 and len(self.deleted) + len(self.written) < 3 * self.touch and self.untouched(name):
                    if self.rng.random() < 0.5 and len(self.deleted) < self.touch:
                        self.deleted.add(name)  # before the request: a concurrent read must not judge it
                        v = int(time.time())
                        r = s.delete(self.url + "/files" + quote(name),
                                     params={"last_modified": email.utils.formatdate(v)}, timeout=30)
                        if r.status_code != 200:
                            self.errors.append(("delete", name, r.status_code, r.headers.get("X-Exception")))
                    else:
                        self._put(s, name, b"overwritten during the migration %d" % ops)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(("exception", name, repr(exc)))
            time.sleep(0.005)

    def _put(self, s, name, data):
        v = int(time.time())
        self.written[name] = (v, hashlib.sha256(data).hexdigest(), len(data))
        r = s.put(self.url + "/files" + quote(name), params={"last_modified": email.utils.formatdate(v)},
                  data=data, timeout=30)
        if r.status_code != 200:
            self.errors.append(("put", name, r.status_code, r.headers.get("X-Exception")))


def test_cluster_migration(old_store, tmp_path):
    """Acceptance 1-4: fallback reads, import under traffic (killed and resumed), offline import
    into a second cluster equal to an HTTP import into a third, the cluster alone afterwards."""
    old, model, data_dir = old_store
    tmp = str(tmp_path)
    clusters, services = [], []
    try:
        a = new_cluster(tmp_path / "a", gateways=0)
        clusters.append(a.start())

        # 1. a gateway in fallback mode (no copy) serves every file before any import
        g1, g1_url = start_gateway(tmp, a, "a-g1-nocopy", ["--fallback-url", old.url, "--fallback-no-copy"])
        services.append(g1)
        assert dataset.check_all(g1_url, model) == []
        for name in sorted(model.deleted)[:10]:
            assert requests.get(g1_url + "/files" + quote(name)).status_code == 404
        r = requests.head(g1_url + "/files" + quote(max(model.live, key=lambda n: model.live[n][2])))
        assert r.status_code == 200 and r.headers["X-Fallback"] == "1"
        assert merged_records(a) == {}, "no-copy mode copied something"

        # 2. import --from under client traffic through a copying fallback gateway; killed half-way
        g2, g2_url = start_gateway(tmp, a, "a-g2-copy", ["--fallback-url", old.url])
        services.append(g2)
        traffic = Traffic(g2_url, model)
        traffic.start()
        argv = admin_argv() + ["--cluster", g2_url, "import", "--from", old.url, "--parallel", "2"]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                start_new_session=True)
        first, half = [], len(model.live) // 2
        deadline = time.monotonic() + 120
        for line in proc.stderr:
            m = COPIED_LINE.match(line.strip())
            if m:
                first.append(m.group(1))
            if len(first) >= half or time.monotonic() > deadline:
                break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        assert len(first) >= half, "the first import run ended early"

        s, err = import_json(["--cluster", g2_url, "import", "--from", old.url, "--parallel", "2"])
        traffic.stop.set()
        traffic.join(30)
        # a delete through the gateway deletes the old server's copy too (Fallback.delete_old):
        # from here on the old server holds the model without those names
        for name in traffic.deleted:
            del model.live[name]
            model.deleted.add(name)
        imp = s["import"]
        second = copied_names(err)
        assert not set(first) & set(second), "copied twice: %s" % sorted(set(first) & set(second))[:5]
        assert imp["failed"] == [] and imp["copied"] == len(second)
        assert imp["skipped"].get("present", 0) >= len(first)
        assert imp["copied"] + sum(imp["skipped"].values()) == len(model.live)
        print("\nimport under traffic: first run %d copied before kill -9, second run %d copied, skipped %s;"
              " traffic: %d reads, %d writes, %d deletes"
              % (len(first), len(second), imp["skipped"], traffic.reads, len(traffic.written),
                 len(traffic.deleted)))
        assert traffic.errors == [], traffic.errors[:5]
        assert traffic.deleted and any(n in model.live for n in traffic.written)

        # every file is in the cluster: a gateway without fallback serves it
        g3, g3_url = start_gateway(tmp, a, "a-g3-plain")
        services.append(g3)
        untouched = [n for n in sorted(model.live) if traffic.untouched(n)]
        assert dataset.check_all(g3_url, model, names=untouched) == []
        for name, want in traffic.written.items():
            assert dataset.digest_of(requests.Session(), g3_url, name) == want, name
        for name in traffic.deleted | model.deleted:
            assert requests.head(g3_url + "/files" + quote(name)).status_code == 404, name
            # the fallback gateway does not resurrect a name deleted in the cluster either
            assert requests.head(g2_url + "/files" + quote(name)).status_code == 404, name
        records = merged_records(a)
        for name in traffic.deleted:
            assert records[name].deleted, name
        p = run_admin(["--cluster", g3_url, "compare", "--from", old.url])
        listed = {line.split()[1] for line in p.stdout.splitlines() if line.startswith(("missing", "older",
                                                                                          "content"))}
        # the names written through the gateway are newer there; the deleted ones are gone from both
        assert p.returncode == 0 and listed == set(), p.stdout[-3000:]
        assert not any(name in p.stdout for name in traffic.deleted), p.stdout[-3000:]

        # 3. a clean HTTP import into cluster B (figures), then the old server stops and
        #    --from-dir fills cluster C: B and C agree name by name
        b = new_cluster(tmp_path / "b", gateways=1)
        clusters.append(b.start())
        s, _ = import_json(["--cluster", b.gw, "import", "--from", old.url, "--parallel", "4"])
        assert s["import"]["copied"] == len(model.live)
        report("http -> 3-node cluster", s["import"])

        old.stop()
        c = new_cluster(tmp_path / "c", gateways=1)
        clusters.append(c.start())
        s, _ = import_json(["--cluster", c.gw, "import", "--from-dir", data_dir, "--parallel", "4", "--verify"])
        assert s["import"]["copied"] == len(model.live) and s["compare"]["differences"] == []
        report("dir -> 3-node cluster", s["import"])
        rb, rc = merged_records(b), merged_records(c)
        assert rb == rc
        assert {n: (r.version, r.sha256, r.size) for n, r in rb.items()} == model.live

        # 4. the old server is gone: cluster A serves everything without fallback (and with it)
        assert dataset.check_all(g3_url, model, names=untouched) == []
        assert dataset.check_all(g2_url, model, names=untouched[::7]) == []
    finally:
        for s in services:
            s.stop()
        for c in clusters:
            c.stop()
