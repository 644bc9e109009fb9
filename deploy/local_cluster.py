#!/usr/bin/env python3
"""Run a local filetracker cluster on loopback: 3 nodes and a gateway (``deploy/local-cluster.sh``).

    local_cluster.py start       start what is not running (first time: write the configuration)
    local_cluster.py status      one line per service; exit 1 unless all answer
    local_cluster.py stop        SIGTERM every service (SIGKILL after 10 s); data is kept
    local_cluster.py kill NAME   SIGKILL one service (node2, gateway, ...): a crash, for the tour
    local_cluster.py add-node    start one more, empty node (not yet in the ring); print its URL
    local_cluster.py remove-node NAME   stop and forget a node the ring no longer has (after
                                 ``filetracker-admin remove-node URL``; refused while it is a member)
    local_cluster.py url         print the gateway URL

Everything lives under one folder (``--dir``, ``$FILETRACKER_LOCAL_DIR``,
default ``./local-cluster``)::

    config/   node1.toml ... gateway.toml (the services' --config files), cluster.secret
    data/     node1/ ...   the nodes' stores
    logs/     node1.log ... gateway.log
    run/      node1.pid ... one pid file per running service
    env.sh    ". local-cluster/env.sh" sets FILETRACKER_URL & co. in a shell
    cluster.json   the members and their ports (so start/stop find them again)

The gateway listens on ``--port`` (``$FILETRACKER_LOCAL_PORT``, default 9400),
node K on port + K.  Every service runs in its own session; ``stop`` and
``kill`` signal only the process groups whose pid files they wrote, and only
while that process still runs our configuration file.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from cluster.secret import SECRET_HEADER, read_secret
from filetracker.units import timeout_seconds

BIN = os.path.dirname(os.path.abspath(sys.executable))
INITIAL_NODES = 3
#: where the cluster lives when neither --dir nor $FILETRACKER_LOCAL_DIR says (local-cluster.sh
#: runs this from the repository's root)
DEFAULT_FOLDER = os.path.abspath("local-cluster")
SYNC_INTERVAL = 5  # seconds: a local cluster heals quickly after a node comes back


def _shown(path):
    """``path`` as the user should type it: relative to the folder they ran the launcher from."""
    return os.path.relpath(path, os.environ.get("FILETRACKER_LOCAL_CALLER_DIR") or os.getcwd())


def _script(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else name


def _answers(url):
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Layout:
    """Paths of one local cluster folder."""

    def __init__(self, folder):
        self.root = os.path.abspath(folder)
        self.config = os.path.join(self.root, "config")
        self.data = os.path.join(self.root, "data")
        self.logs = os.path.join(self.root, "logs")
        self.run = os.path.join(self.root, "run")
        self.state = os.path.join(self.root, "cluster.json")
        self.secret = os.path.join(self.config, "cluster.secret")
        self.env = os.path.join(self.root, "env.sh")

    def conf(self, name):
        return os.path.join(self.config, name + ".toml")

    def log(self, name):
        return os.path.join(self.logs, name + ".log")

    def pidfile(self, name):
        return os.path.join(self.run, name + ".pid")


def _toml_value(value):
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_toml(path, comment, values):
    with open(path, "w") as f:
        f.write("# %s\n# Written by deploy/local_cluster.py; keys are the service's long options.\n" % comment)
        for key, value in values.items():
            f.write("%s = %s\n" % (key, _toml_value(value)))


def node_url(state, name):
    return "http://127.0.0.1:%d" % (state["port"] + int(name[len("node"):]))


def gateway_url(state):
    return "http://127.0.0.1:%d" % state["port"]


def write_node_config(lay, state, name, peers):
    write_toml(lay.conf(name), "filetracker-node %s of the local cluster" % name, {
        "dir": os.path.join(lay.data, name), "host": "127.0.0.1", "port": state["port"] + int(name[4:]),
        "peers": peers, "cluster-secret-file": lay.secret, "sync-interval": SYNC_INTERVAL,
        "log-format": "text"})


def write_gateway_config(lay, state):
    write_toml(lay.conf("gateway"), "filetracker-gateway of the local cluster", {
        "host": "127.0.0.1", "port": state["port"],
        "nodes": [node_url(state, n) for n in state["nodes"][:INITIAL_NODES]],
        "cluster-secret-file": lay.secret, "log-format": "text"})


def write_env(lay, state):
    gw = gateway_url(state)
    with open(lay.env, "w") as f:
        f.write("# . %s   (sets what the tour's commands use)\n" % _shown(lay.env))
        f.write("export FILETRACKER_URL=%s\n" % gw)
        f.write("export FILETRACKER_ADMIN_URL=%s\n" % gw)
        f.write("export FILETRACKER_CLUSTER_SECRET_FILE=%s\n" % lay.secret)
        f.write("export FILETRACKER_DIR=%s\n" % os.path.join(lay.root, "client-cache"))
        # the launcher's commands (stop, kill, add-node) find this cluster from any shell that read this
        f.write("export FILETRACKER_LOCAL_DIR=%s\n" % lay.root)
        f.write('export PATH="%s:$PATH"\n' % BIN)


def create(lay, port):
    """First start: folders, secret, configuration files, state."""
    for d in (lay.config, lay.data, lay.logs, lay.run):
        os.makedirs(d, exist_ok=True)
    if not os.path.exists(lay.secret):
        fd = os.open(lay.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    state = {"port": port, "nodes": ["node%d" % (i + 1) for i in range(INITIAL_NODES)]}
    urls = [node_url(state, n) for n in state["nodes"]]
    for name, url in zip(state["nodes"], urls, strict=True):
        write_node_config(lay, state, name, [u for u in urls if u != url])
    write_gateway_config(lay, state)
    save_state(lay, state)
    return state


def load_state(lay):
    try:
        with open(lay.state) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_state(lay, state):
    tmp = lay.state + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, lay.state)
    write_env(lay, state)


def services(state):
    """``[(name, url)]``: nodes first, the gateway last."""
    return [(n, node_url(state, n)) for n in state["nodes"]] + [("gateway", gateway_url(state))]


def running_pid(lay, name, starting=False):
    """The pid in ``name``'s pid file if that process still runs our configuration, else None.

    With ``starting`` (just spawned by us) a process whose command line is not readable yet
    counts too: right after the fork its ``/proc/PID/cmdline`` is empty for a moment.
    """
    try:
        with open(lay.pidfile(name)) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read().split(b"\0")
        with open("/proc/%d/stat" % pid, "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state == b"Z":
        return None   # exited, not yet reaped
    if os.fsencode(lay.conf(name)) in cmdline or (starting and cmdline == [b""]):
        return pid
    return None


def spawn(lay, name):
    program = "filetracker-gateway" if name == "gateway" else "filetracker-node"
    with open(lay.log(name), "ab") as log:
        proc = subprocess.Popen([_script(program), "--config", lay.conf(name)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(lay.pidfile(name), "w") as f:
        f.write("%d\n" % proc.pid)
    return proc.pid


def port_taken(url):
    """True when another program listens on ``url``'s port already (ours would fail to bind,
    and the other one's answers would look like ours)."""
    parts = urllib.parse.urlsplit(url)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((parts.hostname, parts.port))
        except OSError:
            return True
    return False


def wait_answering(lay, todo, timeout):
    """Wait until every ``(name, url)`` answers ``/version/``; False (and the log tail) if one does not."""
    deadline = time.monotonic() + timeout
    for name, url in todo:
        while not _answers(url + "/version/"):
            if running_pid(lay, name, starting=True) is None or time.monotonic() > deadline:
                print("%s did not start; the end of %s:" % (name, lay.log(name)), file=sys.stderr)
                with open(lay.log(name), "rb") as f:
                    sys.stderr.write(f.read()[-2000:].decode("utf-8", "replace"))
                return False
            time.sleep(0.1)
    return True


def start(lay, args):
    state = load_state(lay)
    if state is None:
        state = create(lay, args.port)
    elif args.port_given and args.port != state["port"]:
        # the ports are in every configuration file written at creation: a later --port
        # would leave the gateway and its nodes disagreeing, so it is not applied
        print("note: %s was created with the gateway on port %d; port %d is used only when a cluster "
              "is first created (stop it and remove the folder to start over on another port)"
              % (_shown(lay.root), state["port"], args.port), file=sys.stderr)
    started = []
    # Nodes first, the gateway once they answer: a gateway that finds its nodes refusing
    # connections marks them down for a while and would answer 503 meanwhile.
    nodes, gateway = services(state)[:-1], services(state)[-1:]
    for group in (nodes, gateway):
        for name, url in group:
            if running_pid(lay, name) is None:
                if port_taken(url):
                    print("cannot start %s: another program listens on %s already (another cluster? "
                          "'%s' shows this one; a new cluster folder with --port or "
                          "FILETRACKER_LOCAL_PORT takes other ports)" % (name, url, _launcher("status", lay, args)),
                          file=sys.stderr)
                    return 1
                spawn(lay, name)
                started.append((name, url))
        if not wait_answering(lay, group, args.timeout):
            return 1
    gw = gateway_url(state)
    rel = _shown(lay.root)
    nodes = [url for name, url in services(state) if name != "gateway"]
    print("filetracker cluster is up: %d nodes + gateway (%s), data, logs and configuration in %s\n"
          % (len(nodes), "started " + ", ".join(n for n, _ in started) if started else "already running", rel))
    print("  gateway:  %s   (status page: %s/status, metrics: %s/metrics)" % (gw, gw, gw))
    print("  nodes:    %s\n" % ", ".join(nodes))
    print("Use it (the README's five-minute tour goes on from here):")
    print("  . %s/env.sh                      # FILETRACKER_URL=%s, PATH, admin settings" % (rel, gw))
    print("  filetracker put README.md /docs/readme.md")
    print("  filetracker cat /docs/readme.md")
    print("  filetracker ls /docs")
    print("  python -c 'from filetracker.client import Client; print(Client().file_version(\"/docs/readme.md\"))'")
    print("  filetracker-admin status\n")
    print("Stop it:  %s      (logs: %s/logs/)" % (_launcher("stop", lay, args), rel))
    return 0


def _launcher(command, lay, args):
    """How to run the launcher's ``command`` on this cluster from the user's folder: with ``--dir``
    whenever the folder is not the default (an environment variable set in this shell is gone
    in the next one)."""
    launcher = os.environ.get("FILETRACKER_LOCAL_SCRIPT") or "deploy/local-cluster.sh"
    where = " --dir %s" % _shown(lay.root) if args.dir != DEFAULT_FOLDER else ""
    return "%s %s%s" % (launcher, command, where)


def status(lay, args):
    state = load_state(lay)
    if not state:
        print("no cluster recorded in %s" % lay.root)
        return 1
    ok = True
    for name, url in services(state):
        pid = running_pid(lay, name)
        answering = pid is not None and _answers(url + "/version/")
        ok = ok and answering
        print("%-8s %-24s %-8s %s" % (name, url, "pid %d" % pid if pid else "-",
                                      "up" if answering else ("running, not answering" if pid else "down")))
    return 0 if ok else 1


def _signal(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def stop(lay, args):
    state = load_state(lay)
    if not state:
        print("no cluster recorded in %s: nothing stopped" % lay.root, file=sys.stderr)
        return 1
    pids = {}
    for name, _ in reversed(services(state)):
        pid = running_pid(lay, name)
        if pid is not None:
            pids[name] = pid
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for name, pid in pids.items():
        while running_pid(lay, name) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(lay, name) == pid:
            _signal(pid, signal.SIGKILL)
    for name, _ in services(state):
        try:
            os.remove(lay.pidfile(name))
        except FileNotFoundError:
            pass
    if not pids:
        print("nothing was running in %s" % _shown(lay.root))
        return 0
    print("stopped the cluster in %s (data kept; 'start' brings it back, 'rm -r %s' forgets it)"
          % (_shown(lay.root), _shown(lay.root)))
    return 0


def kill(lay, args):
    state = load_state(lay)
    names = [n for n, _ in services(state)] if state else []
    if args.name not in names:
        print("no service %r (known: %s)" % (args.name, ", ".join(names) or "none"), file=sys.stderr)
        return 1
    pid = running_pid(lay, args.name)
    if pid is None:
        print("%s is not running" % args.name, file=sys.stderr)
        return 1
    _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while running_pid(lay, args.name) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    print("killed %s (SIGKILL); '%s' starts it again" % (args.name, _launcher("start", lay, args)), file=sys.stderr)
    return 0


def add_node(lay, args):
    state = load_state(lay)
    if not state:
        print("no cluster recorded in %s: run 'start' first" % lay.root, file=sys.stderr)
        return 1
    name = "node%d" % (max(int(n[4:]) for n in state["nodes"]) + 1)
    members = [node_url(state, n) for n in state["nodes"]]
    write_node_config(lay, state, name, members)
    state["nodes"].append(name)
    save_state(lay, state)
    spawn(lay, name)
    url = node_url(state, name)
    if not wait_answering(lay, [(name, url)], args.timeout):
        return 1
    print("started %s at %s (empty, not in the ring yet): filetracker-admin add-node %s" % (name, url, url),
          file=sys.stderr)
    print(url)
    return 0


def remove_node(lay, args):
    """Stop a node the ring no longer has, and forget it: its data, configuration, log and pid file."""
    state = load_state(lay)
    nodes = state["nodes"] if state else []
    if args.name not in nodes:
        print("no node %r (known: %s)" % (args.name, ", ".join(nodes) or "none"), file=sys.stderr)
        return 1
    url = node_url(state, args.name)
    others = [node_url(state, n) for n in nodes if n != args.name]
    ring = next((r for r in (_cluster_status(lay, u) for u in others) if r is not None), None)
    if ring is None:
        print("no other node answers: cannot check that %s has left the ring" % args.name, file=sys.stderr)
        return 1
    if url in ring["nodes"]:
        print("%s (%s) is still in the ring (epoch %d): run 'filetracker-admin remove-node %s' first; it "
              "hands the node's data to the others" % (args.name, url, ring["epoch"], url), file=sys.stderr)
        return 1
    own = _cluster_status(lay, url)
    if own is not None and own["partitions_held"]:
        print("%s still holds %d partitions it is handing over: wait for 'filetracker-admin remove-node %s' "
              "to finish" % (args.name, own["partitions_held"], url), file=sys.stderr)
        return 1
    pid = running_pid(lay, args.name)
    if pid is not None:
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while running_pid(lay, args.name) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(lay, args.name) == pid:
            _signal(pid, signal.SIGKILL)
    state["nodes"].remove(args.name)
    save_state(lay, state)
    shutil.rmtree(os.path.join(lay.data, args.name), ignore_errors=True)
    for path in (lay.conf(args.name), lay.log(args.name), lay.pidfile(args.name)):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    print("stopped and forgot %s (%s)" % (args.name, url), file=sys.stderr)
    return 0


def _cluster_status(lay, url):
    """A node's ``/_cluster/status`` document (its ring's members and what it holds), or None
    when it does not answer."""
    request = urllib.request.Request(url + "/_cluster/status", headers={SECRET_HEADER: read_secret(lay.secret)})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def url(lay, args):
    state = load_state(lay)
    if not state:
        print("no cluster recorded in %s" % lay.root, file=sys.stderr)
        return 1
    print(gateway_url(state))
    return 0


COMMANDS = {"start": start, "status": status, "stop": stop, "kill": kill, "add-node": add_node,
            "remove-node": remove_node, "url": url}


#: the highest gateway port: node K listens on port + K
MAX_PORT = 65535 - INITIAL_NODES


def _port(text):
    """argparse type of the gateway port (1 .. MAX_PORT)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port number: %r" % text) from None
    if not 0 < port <= MAX_PORT:
        raise argparse.ArgumentTypeError("%d is not a port between 1 and %d" % (port, MAX_PORT))
    return port


def cluster_folder(given):
    """The cluster's folder, absolute: ``given`` (``--dir``), else ``$FILETRACKER_LOCAL_DIR``,
    else ``local-cluster`` in the repository (local-cluster.sh runs this from there).  A relative
    folder the user named is taken from the folder they ran the launcher in, as a shell would."""
    given = given or os.environ.get("FILETRACKER_LOCAL_DIR", "").strip()
    if not given:
        return DEFAULT_FOLDER
    return os.path.join(os.environ.get("FILETRACKER_LOCAL_CALLER_DIR") or os.getcwd(), os.path.expanduser(given))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="local-cluster.sh",
                                     description="Run a local filetracker cluster (3 nodes + gateway).")
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("name", nargs="?", help="for kill: the service (node1, node2, ..., gateway); for "
                        "remove-node: a node the ring no longer has (after filetracker-admin remove-node)")
    parser.add_argument("--dir", default=None,
                        help="data, logs, configuration and pid files (default $FILETRACKER_LOCAL_DIR "
                             "or local-cluster in the repository); a relative folder is taken from "
                             "where the launcher was run")
    parser.add_argument("--port", type=_port, default=None,
                        help="gateway port, node K on port + K (default $FILETRACKER_LOCAL_PORT or 9400; "
                             "used when the cluster is first created)")
    parser.add_argument("--timeout", type=timeout_seconds, default=30.0, help="seconds to wait for the services")
    args = parser.parse_args(argv)
    args.dir = cluster_folder(args.dir)
    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        parser.error("%s is not a folder (the cluster's data, logs and configuration go in one)" % args.dir)
    args.port_given = args.port is not None or bool(os.environ.get("FILETRACKER_LOCAL_PORT", "").strip())
    if args.port is None:
        env = os.environ.get("FILETRACKER_LOCAL_PORT", "").strip()
        try:
            args.port = _port(env) if env else 9400
        except argparse.ArgumentTypeError as e:
            parser.error("FILETRACKER_LOCAL_PORT=%s: %s" % (env, e))
    if args.command == "kill" and not args.name:
        parser.error("kill needs a service name (node1, node2, ..., gateway)")
    if args.command == "remove-node" and not args.name:
        parser.error("remove-node needs a node's name (node4, ...)")
    try:
        return COMMANDS[args.command](Layout(args.dir), args)
    except BrokenPipeError:   # `local-cluster.sh status | head -2`: the reader wanted no more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
