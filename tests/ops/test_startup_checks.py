"""What the services check before they serve: one data folder per process (an exclusive lock),
unusable folders and log files, node URLs, ports, quorums, size options, the cluster secret.

A usage or configuration error is one ``PROG: error: ...`` line on standard error (after
argparse's usage line) and exit status 2, never a traceback.  Real processes throughout.
"""

import os
import signal
import socket
import subprocess
import time

import pytest
import requests

from tests.cluster.conftest import SECRET
from tests.support.procs import (
    ROOT,
    Service,
    child_pids,
    free_port,
    free_port_range,
    group_pids,
    script,
    wait_for_children,
)
from tests.support.rawhttp import status_line, upload_head

NOW = 1795550400


def run(argv, env=None, timeout=30, cwd=None):
    """A finished process of ``argv`` (a script name first): ``(returncode, stdout, stderr)``."""
    proc = subprocess.run([script(argv[0])] + list(argv[1:]), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=cwd or ROOT)
    return proc.returncode, proc.stdout, proc.stderr


def error_line(prog, code, err):
    """The one error line of a usage/configuration error of ``prog`` (asserts the form)."""
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(prog + ": error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def write(path, text):
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- one process per data folder


def test_second_node_on_a_live_folder_exits_2_and_the_files_stay(cluster_factory, tmp_path):
    c = cluster_factory(nodes=1, replicas=1)
    names = ["/locked/f%02d" % i for i in range(20)]
    for i, name in enumerate(names):
        assert c.put(0, name, b"data %d" % i, NOW + i).status_code == 200
    other = free_port()
    # before the lock, this node started, found itself outside the stored ring and handed the
    # running node's partitions off (deleting them from the shared folder)
    code, _, err = run(["filetracker-node", "--dir", c.dirs[0], "--port", str(other), "--peers", c.urls[0],
                        "--cluster-secret-file", c.secret_file, "--sync-interval", "0.2"], timeout=30)
    line = error_line("filetracker-node", code, err)
    assert "%s is in use by another process (pid %d)" % (os.path.abspath(c.dirs[0]), c.services[0].pid) in line
    assert len(err.strip().splitlines()) == 1, err   # not a usage error: no usage line
    with pytest.raises(requests.ConnectionError):
        requests.get("http://127.0.0.1:%d/version/" % other, timeout=2)
    time.sleep(1.0)
    for i, name in enumerate(names):
        assert c.content(0, name) == b"data %d" % i, name
    assert c.services[0].alive()
    # stopped, the folder is free again at once
    c.stop_node(0)
    c.restart(0)
    assert c.content(0, names[0]) == b"data 0"


def _server(tmp_path, data, port, name, *extra):
    return Service([script("filetracker-server"), "-d", str(data), "-p", str(port), *extra],
                   str(tmp_path / (name + ".log")), ready_url="http://127.0.0.1:%d/version" % port)


def _put(url, name, data, version=NOW):
    import email.utils
    return requests.put(url + "/files" + name, params={"last_modified": email.utils.formatdate(version)},
                        data=data, timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_second_server_on_a_live_folder_exits_2_workers_keep_the_lock(tmp_path, workers):
    data = tmp_path / "data"
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    first = _server(tmp_path, data, port, "first", "--workers", str(workers)).start()
    try:
        for i in range(6):  # several connections: with 2 workers both processes serve some
            assert _put(url, "/w/f%d" % i, b"x%d" % i).status_code == 200
        # a second server on the same folder (another port, one worker or several)
        for extra in ([], ["--workers", "2"]):
            code, _, err = run(["filetracker-server", "-d", str(data), "-p", str(free_port()), *extra])
            line = error_line("filetracker-server", code, err)
            assert "%s is in use by another process (pid %d)" % (data, first.pid) in line, line
        if workers > 1:
            assert len(wait_for_children(first.pid, workers)) == workers
        for i in range(6):
            r = requests.get(url + "/files/w/f%d" % i, timeout=10)
            assert r.status_code == 200 and r.content == b"x%d" % i
    finally:
        first.stop()
    assert first.proc.returncode == 0
    # restarted right after the stop, on the same folder and port
    again = _server(tmp_path, data, port, "again", "--workers", str(workers)).start()
    try:
        assert requests.get(url + "/files/w/f5", timeout=10).content == b"x5"
        assert _put(url, "/w/after", b"after").status_code == 200
    finally:
        again.stop()


def test_a_dead_worker_is_restarted_and_a_stop_then_ends_every_one(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    server = _server(tmp_path, data, port, "server", "--workers", "2").start()
    try:
        first = wait_for_children(server.pid, 2)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while len(set(child_pids(server.pid)) - {first[0]}) < 2:  # its replacement is forked
            assert time.monotonic() < deadline, child_pids(server.pid)
            time.sleep(0.05)
        assert first[0] not in child_pids(server.pid)
        for i in range(4):  # served whichever worker takes the connection
            assert _put(url, "/r/f%d" % i, b"x").status_code == 200
        os.kill(server.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert group_pids(server.pid) == []
    finally:
        server.stop()


def test_a_stopping_server_with_workers_refuses_new_connections_at_once(tmp_path):
    """The parent kept its copy of the listening socket while its workers drained: the kernel
    accepted new connections nobody would serve, reset when the parent exited (1.6 s later in a
    review), where a single process refuses them at once."""
    data = tmp_path / "data"
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    server = _server(tmp_path, data, port, "server", "--workers", "2").start()
    try:
        upload = upload_head(url, "/drain/slow", 20)
        upload.sendall(b"0123456789")   # an upload in progress keeps its worker draining
        time.sleep(0.3)
        server.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:   # the workers let their copies go as they begin to drain
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "new connections still accepted while stopping"
            time.sleep(0.05)
        assert server.proc.poll() is None   # refused while the upload still drains
        upload.sendall(b"0123456789")
        assert status_line(upload).startswith("HTTP/1.1 200")
        upload.close()
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()


def test_server_workers_hold_the_lock_without_their_parent(tmp_path):
    """SIGKILL of the parent leaves its workers serving the folder: they still hold the lock."""
    data = tmp_path / "data"
    port = free_port()
    first = _server(tmp_path, data, port, "first", "--workers", "2").start()
    try:
        children = wait_for_children(first.pid, 2)
        assert len(children) == 2
        os.kill(first.pid, 9)
        first.proc.wait(timeout=10)
        code, _, err = run(["filetracker-server", "-d", str(data), "-p", str(free_port())])
        assert "is in use by another process" in error_line("filetracker-server", code, err)
    finally:
        first.stop()  # SIGKILLs the process group: the orphaned workers too
    deadline = time.monotonic() + 10
    while any(os.path.exists("/proc/%d" % p) and _state(p) != "Z" for p in children):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    again = _server(tmp_path, data, port, "again").start()
    again.stop()
    assert again.proc.returncode == 0


def _state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# ---------------------------------------------------------------- usage and configuration errors


def _cases(tmp_path):
    a_file = write(tmp_path / "a-file", "x")
    wrong_nodes = write(tmp_path / "gw.toml", 'port = 9400\nnodes = ["http://127.0.0.1:1", "notaurl"]\n')
    node = ["filetracker-node", "--port", "9"]
    gw = ["filetracker-gateway", "--port", "9"]
    return [
        (["filetracker-server", "-d", str(tmp_path / "s"), "-p", "9", "-L", "/nonexistent/dir/log"],
         "cannot open log file /nonexistent/dir/log"),
        (["filetracker-server", "-d", a_file, "-p", "9"], "cannot use data folder %s: not a folder" % a_file),
        (node + ["-d", a_file], "cannot use data folder %s: not a folder" % a_file),
        (node + ["-d", "/proc/foo"], "cannot use data folder /proc/foo"),
        (node + ["-d", str(tmp_path / "n"), "--sync-bandwidth", "10X"], "not a byte count"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--port", "99999"], "must be a port number between 1 and 65535"),
        # a typo's extra zeros forked until the machine ran out of processes
        (["filetracker-server", "-d", str(tmp_path / "s"), "-p", "9", "--workers", "100000"],
         "--workers must be from 1 to 256"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--processes", "257"], "--processes must be from 1 to 256"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--port", "0"], "must be a port number between 1 and 65535"),
        (node + ["-d", str(tmp_path / "n"), "--port", "70000"], "must be a port number between 1 and 65535"),
        (gw + ["--nodes", "notaurl"], "not a base URL"),
        (gw + ["--nodes", "http://127.0.0.1:1,127.0.0.1:21401"], "not a base URL"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--write-quorum", "0"], "--write-quorum must be at least 1"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--read-quorum", "0"], "--read-quorum must be at least 1"),
        (gw + ["--nodes", "http://127.0.0.1:1", "--cluster-secret-file", "/nonexistent"],
         "cannot read cluster secret file /nonexistent"),
        (["filetracker-gateway", "--config", wrong_nodes], "key 'nodes': not a base URL"),
    ]


def test_a_2x_servers_data_folder_is_refused(tmp_path):
    """Pointing the new server (or a node) at the old 2.x server's folder must not serve it: none
    of its files would show and new uploads would overwrite its gzip blobs with plain bytes."""
    old = tmp_path / "old"
    (old / "links" / "p").mkdir(parents=True)
    (old / "blobs" / "ab").mkdir(parents=True)
    blob = old / "blobs" / "ab" / ("ab" * 32)
    blob.write_bytes(b"gzip bytes")
    os.symlink("../../blobs/ab/" + "ab" * 32, old / "links" / "p" / "f.txt")
    for argv in (["filetracker-server", "-d", str(old), "-p", "9"], ["filetracker-node", "-d", str(old), "--port", "9"]):
        code, _, err = run(argv)
        line = error_line(argv[0], code, err)
        assert "is the data folder of a filetracker 2.x server" in line and "import --from-dir %s" % old in line
    assert sorted(os.listdir(old)) == ["blobs", "links"] and blob.read_bytes() == b"gzip bytes"   # untouched


@pytest.mark.parametrize("program", ["server", "gateway"])
def test_sigterm_while_forking_workers_leaves_no_process(tmp_path, program):
    """A stop signal while the workers are still being forked: forking stops, every child forked
    so far gets it, and nothing of the service is left (late children used to serve on, orphaned)."""
    port = free_port()
    if program == "server":
        argv = [script("filetracker-server"), "-d", str(tmp_path / "d"), "-p", str(port), "--workers", "64"]
    else:
        argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", "http://127.0.0.1:9", "--processes", "64"]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while len(child_pids(proc.pid)) < 3:  # forking has begun (64 take longer than that)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while group_pids(proc.pid):
            assert time.monotonic() < deadline, "left running: %s" % group_pids(proc.pid)
            time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def test_usage_and_config_errors_are_one_line_exit_2(tmp_path):
    for argv, text in _cases(tmp_path):
        code, out, err = run(argv)
        line = error_line(argv[0], code, err)
        assert text in line, (argv, line)
    assert not os.path.exists(tmp_path / "s" / "records.sqlite3")  # nothing opened for a bad log file


def test_local_cluster_port_from_the_environment(tmp_path):
    env = dict(os.environ, FILETRACKER_LOCAL_PORT="abc", FILETRACKER_LOCAL_DIR=str(tmp_path / "lc"))
    code, _, err = run([os.path.join(ROOT, "deploy", "local-cluster.sh"), "status"], env=env, cwd=str(tmp_path))
    assert "FILETRACKER_LOCAL_PORT=abc" in error_line("local-cluster.sh", code, err)
    env["FILETRACKER_LOCAL_PORT"] = "9400"
    code, _, err = run([os.path.join(ROOT, "deploy", "local-cluster.sh"), "status", "--port", "70000"],
                       env=env, cwd=str(tmp_path))
    assert "argument --port" in error_line("local-cluster.sh", code, err)
    for bad in ("nan", "inf", "-1"):  # nan waited forever for services that did not answer
        code, _, err = run([os.path.join(ROOT, "deploy", "local-cluster.sh"), "status", "--timeout", bad],
                           env=env, cwd=str(tmp_path))
        assert "argument --timeout" in error_line("local-cluster.sh", code, err), bad
    env["FILETRACKER_LOCAL_PORT"] = "19400"
    code, out, err = run([os.path.join(ROOT, "deploy", "local-cluster.sh"), "status"], env=env, cwd=str(tmp_path))
    assert "no cluster recorded" in out + err and "Traceback" not in err


def test_local_cluster_folder_and_port_as_a_user_expects(tmp_path):
    """A relative FILETRACKER_LOCAL_DIR is where the user ran the launcher (not the repository);
    a port given once the cluster exists is not silently ignored."""
    launcher = os.path.join(ROOT, "deploy", "local-cluster.sh")
    port = free_port_range(6)
    env = dict(os.environ, FILETRACKER_LOCAL_DIR="mine", FILETRACKER_LOCAL_PORT=str(port))
    try:
        proc = subprocess.run([launcher, "start"], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=90, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / "mine" / "cluster.json").exists()
        assert not os.path.exists(os.path.join(ROOT, "mine"))
        assert "data, logs and configuration in mine" in proc.stdout

        env["FILETRACKER_LOCAL_PORT"] = str(port + 1)
        proc = subprocess.run([launcher, "start"], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=90, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0 and "already running" in proc.stdout, proc.stdout + proc.stderr
        assert ("mine was created with the gateway on port %d; port %d is used only when a cluster is first "
                "created" % (port, port + 1)) in proc.stderr
        assert "http://127.0.0.1:%d" % port in proc.stdout
        # the folder is in the hint even when it came from the environment: a new shell lacks it
        assert "Stop it:  %s stop --dir mine      (logs: mine/logs/)" % launcher in proc.stdout
        # and env.sh gives a new shell the folder, so the launcher's commands find the cluster
        assert "export FILETRACKER_LOCAL_DIR=%s\n" % (tmp_path / "mine") in (tmp_path / "mine" / "env.sh").read_text()
        proc = subprocess.run(["bash", "-c", ". mine/env.sh && %s status" % launcher], cwd=str(tmp_path),
                              env={k: v for k, v in env.items() if not k.startswith("FILETRACKER_LOCAL")},
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0 and proc.stdout.count(" up\n") == 4, proc.stdout + proc.stderr

        # a folder given with --dir is in the stop hint too (stop without it found no cluster)
        no_env = {k: v for k, v in env.items() if k not in ("FILETRACKER_LOCAL_DIR", "FILETRACKER_LOCAL_PORT")}
        proc = subprocess.run([launcher, "start", "--dir", "mine"], env=no_env, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0 and "already running" in proc.stdout, proc.stdout + proc.stderr
        assert "Stop it:  %s stop --dir mine      (logs: mine/logs/)" % launcher in proc.stdout
        # a file where the folder should be: one usage line, not a traceback
        proc = subprocess.run([launcher, "status", "--dir", "mine/cluster.json"], env=no_env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.splitlines()[-1].endswith("mine/cluster.json is not a folder (the cluster's data, logs "
                                                     "and configuration go in one)"), proc.stderr
        # stop where there is no cluster says so and fails (it printed a note and exited 0)
        proc = subprocess.run([launcher, "stop", "--dir", "elsewhere"], env=no_env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1 and "nothing stopped" in proc.stderr, proc.stdout + proc.stderr
        # a second cluster on the same ports is refused: it said "up" (exit 0) while its own
        # services had died on "address in use", and its env.sh pointed at the first cluster
        proc = subprocess.run([launcher, "start", "--dir", "second", "--port", str(port)], env=no_env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert proc.returncode == 1 and "up" not in proc.stdout, proc.stdout + proc.stderr
        assert "cannot start node1: another program listens on http://127.0.0.1:%d already" % (port + 1) \
            in proc.stderr
        # a reader that wants one line: no BrokenPipeError traceback
        proc = subprocess.run(["bash", "-c", "%s status --dir mine | head -c 1 >/dev/null" % launcher], env=no_env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "Traceback" not in proc.stderr, proc.stderr
    finally:
        subprocess.run([launcher, "stop"], env=env, cwd=str(tmp_path), capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
        if (tmp_path / "second").exists():
            subprocess.run([launcher, "stop", "--dir", "second"], env=env, cwd=str(tmp_path), capture_output=True,
                           timeout=60, stdin=subprocess.DEVNULL)
    proc = subprocess.run([launcher, "stop"], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "nothing was running in mine" in proc.stdout, proc.stdout + proc.stderr


def test_local_cluster_forgets_a_node_only_once_the_ring_has_let_it_go(tmp_path):
    """A node removed with filetracker-admin stayed in the launcher's cluster: every start
    restarted it and said "4 nodes"."""
    launcher = os.path.join(ROOT, "deploy", "local-cluster.sh")
    env = dict(os.environ, FILETRACKER_LOCAL_DIR=str(tmp_path / "lc"), FILETRACKER_LOCAL_PORT=str(free_port_range(6)))

    def launch(*argv):
        return subprocess.run([launcher, *argv], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)

    def admin(*argv):
        return subprocess.run(["bash", "-c", '. lc/env.sh && filetracker-admin "$@"', "admin", *argv], env=env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    try:
        assert launch("start").returncode == 0
        added = launch("add-node")
        assert added.returncode == 0, added.stderr
        url = added.stdout.strip()
        assert admin("add-node", url).returncode == 0
        refused = launch("remove-node", "node4")
        assert refused.returncode == 1 and "is still in the ring" in refused.stderr, refused.stderr
        assert "filetracker-admin remove-node %s" % url in refused.stderr
        assert launch("status").stdout.count(" up\n") == 5
        removed = admin("remove-node", url)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        done = launch("remove-node", "node4")
        assert done.returncode == 0 and "stopped and forgot node4" in done.stderr, done.stderr
        assert not (tmp_path / "lc" / "data" / "node4").exists()
        assert not (tmp_path / "lc" / "config" / "node4.toml").exists()
        status = launch("status")
        assert status.returncode == 0 and "node4" not in status.stdout and status.stdout.count(" up\n") == 4
        again = launch("start")
        assert "3 nodes + gateway (already running)" in again.stdout, again.stdout
        unknown = launch("remove-node", "node9")
        assert unknown.returncode == 1 and "no node 'node9'" in unknown.stderr
    finally:
        launch("stop")


# ---------------------------------------------------------------- size options


def _big_header(url):
    return requests.get(url + "/version/", headers={"X-Filler": "y" * 2000}, timeout=10).status_code


def test_size_options_take_units(tmp_path):
    """``--max-body-size 1K``, ``--max-header-size 1K``, ``--sync-bandwidth 10M`` (and in TOML) work."""
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    svc = _server(tmp_path, tmp_path / "s", port, "server", "--max-body-size", "1K", "--max-header-size", "1K")
    svc.start()
    try:
        assert _put(url, "/small", b"x" * 1024).status_code == 200
        assert _put(url, "/big", b"x" * 1025).status_code == 413
        assert _big_header(url) == 431
    finally:
        svc.stop()
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    conf = write(tmp_path / "node.toml", 'dir = "%s"\nport = %d\nsync-bandwidth = "64M"\nmax-body-size = "1G"\n'
                 'max-header-size = "1K"\nno-background = true\nallow-public-writes = true\n'
                 % (tmp_path / "n", port))
    node = Service([script("filetracker-node"), "--config", conf, "--sync-bandwidth", "10M"],
                   str(tmp_path / "node.log"), ready_url=url + "/version/").start()
    try:
        assert _big_header(url) == 431
        assert requests.get(url + "/version/", timeout=10).status_code == 200
    finally:
        node.stop()
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    gw = Service([script("filetracker-gateway"), "--port", str(port), "--nodes", "http://127.0.0.1:1",
                  "--max-body-size", "1G", "--max-header-size", "1K"],
                 str(tmp_path / "gw.log"), ready_url=url + "/version/").start()
    try:
        assert _big_header(url) == 431
    finally:
        gw.stop()
    for argv in (["filetracker-node", "--dir", str(tmp_path / "n"), "--port", "9", "--sync-bandwidth", "1.5G",
                  "--max-body-size", "16384", "--max-header-size", "65536", "--help"],):
        assert run(argv)[0] == 0   # plain integers and fractions still parse


# ---------------------------------------------------------------- the cluster secret


def _gateway(tmp_path, c, name, *extra):
    port = free_port()
    argv = [script("filetracker-gateway"), "--port", str(port), "--nodes", c.urls[0], "--timeout", "5",
            "--log-level", "WARNING", *extra]
    return Service(argv, str(tmp_path / (name + ".log")), ready_url="http://127.0.0.1:%d/version/" % port), port


@pytest.mark.parametrize("secret", ["wrong", None], ids=["wrong-secret", "no-secret"])
def test_gateway_says_when_nodes_refuse_its_secret(cluster_factory, tmp_path, secret):
    c = cluster_factory(nodes=1, replicas=1)
    # a long timeout: a request must not wait it out once every node has refused the secret
    extra = ["--timeout", "60"]
    if secret:
        extra += ["--cluster-secret-file", write(tmp_path / "wrong.secret", "not-" + SECRET + "\n")]
    svc, port = _gateway(tmp_path, c, "gw", *extra)
    svc.start()
    try:
        for _ in range(3):
            r = requests.get("http://127.0.0.1:%d/files/a/b" % port, timeout=30)
            assert r.status_code == 503
            message = r.headers.get("X-Exception", "") + r.text
            assert "no cluster node answered with a ring" in message
            assert "node %s" % c.urls[0] in message and "(403)" in message, message
            assert ("refused the cluster secret" if secret else "requires the cluster secret") in message
    finally:
        svc.stop()
    warnings = [line for line in svc.log_tail(100000).splitlines()
                if "WARNING" in line and c.urls[0] in line and "cluster secret" in line]
    assert len(warnings) == 1, svc.log_tail()   # once per node per interval, not per request
    assert SECRET not in svc.log_tail(100000)


def test_admin_says_the_given_secret_was_refused(cluster_factory, tmp_path):
    c = cluster_factory(nodes=1, replicas=1)
    wrong = write(tmp_path / "wrong.secret", "not-" + SECRET + "\n")
    code, out, err = run(["filetracker-admin", "--cluster", c.urls[0], "--cluster-secret-file", wrong, "status"])
    assert code == 1 and "Traceback" not in err
    assert "cluster secret given was refused" in err and "pass --cluster-secret-file" not in err, err
    code, out, err = run(["filetracker-admin", "--cluster", c.urls[0], "status"])
    assert code == 1 and "pass --cluster-secret-file" in err, err   # no secret given: the old hint
    code, out, err = run(["filetracker-admin", "--cluster", c.urls[0], "--cluster-secret-file", c.secret_file,
                          "status"])
    assert code == 0, err



def test_a_dead_workers_unfinished_uploads_are_removed_when_it_is_replaced(tmp_path):
    """Uploads in progress in workers killed with SIGKILL: their temporary files in tmp/ stayed
    until the next full start of the server; now the parent removes them when it reaps the
    worker, and leaves the live workers' alone."""
    import email.utils
    import socket
    import urllib.parse

    when = urllib.parse.quote(email.utils.formatdate(NOW, usegmt=True)).encode()
    data = tmp_path / "data"
    port = free_port()
    server = _server(tmp_path, data, port, "server", "--workers", "2").start()
    tmp_dir = data / "tmp"
    socks = []
    try:
        first = wait_for_children(server.pid, 2)
        assert len(first) == 2
        for i in range(6):   # several connections: both workers get some
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(b"PUT /files/half/f%d?last_modified=%s HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 10000000\r\n\r\n" % (i, when) + b"x" * 300_000)
        deadline = time.monotonic() + 20
        while len(os.listdir(tmp_dir)) < 6:
            assert time.monotonic() < deadline, os.listdir(tmp_dir)
            time.sleep(0.05)
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        while len(set(child_pids(server.pid)) - set(first)) < 2:   # both replaced
            assert time.monotonic() < deadline, child_pids(server.pid)
            time.sleep(0.05)
        while os.listdir(tmp_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(tmp_dir) == []
        # an upload in progress in a live worker keeps its file when another worker dies
        live = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(live)
        live.sendall(b"PUT /files/half/live?last_modified=%s HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\n" % when + b"y" * 500)
        while not os.listdir(tmp_dir):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held = os.listdir(tmp_dir)[0]
        holder = int(held.split("-")[0])
        other = [pid for pid in child_pids(server.pid) if pid != holder]
        os.kill(other[0], signal.SIGKILL)
        while other[0] in child_pids(server.pid) or len(child_pids(server.pid)) < 2:
            assert time.monotonic() < deadline, child_pids(server.pid)
            time.sleep(0.05)
        assert os.listdir(tmp_dir) == [held]
        live.sendall(b"y" * 500)
        assert status_line(live) == "HTTP/1.1 200 OK"
        assert requests.get("http://127.0.0.1:%d/files/half/live" % port, timeout=10).content == b"y" * 1000
        assert "unfinished uploads of worker" in open(tmp_path / "server.log").read()
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_a_worker_that_cannot_start_is_restarted_ever_more_slowly(tmp_path):
    """With the auth file broken after the start, a worker forked again (its predecessor killed)
    cannot start: it was restarted at once, for ever (266 restarts and 450 KB of log in 5 s in a
    review); now after 0.5, 1, 2, ... s, and the exit is said as a code, not a raw wait status."""
    data, tokens = tmp_path / "data", tmp_path / "tokens.jsonl"
    code, _, err = run(["filetracker-admin", "token", "add", "--auth-file", str(tokens), "--user", "w",
                        "--scope", "write"])
    assert code == 0, err
    port = free_port()
    server = _server(tmp_path, data, port, "server", "--workers", "2", "--auth-file", str(tokens)).start()
    try:
        with open(tokens, "a") as f:
            f.write("{bad json\n")
        os.kill(wait_for_children(server.pid, 2)[0], signal.SIGKILL)
        time.sleep(4)
        log = open(tmp_path / "server.log").read()
        restarts = log.count("; restarting it")
        assert 2 <= restarts <= 6, log[-3000:]   # 0 + 0.5 + 1 + 2 s of waits within 4 s
        assert "exited (signal 9) after" in log and "exited (exit code 1) after" in log, log[-3000:]
        assert "quick exits in a row" in log
        os.kill(server.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=40) == 0
        assert group_pids(server.pid) == []
    finally:
        server.stop()
