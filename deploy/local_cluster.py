#!/usr/bin/env python3
"""Run a local filetracker cluster on loopback: 3 nodes and a gateway.

    python deploy/local_cluster.py start [--dir local-cluster] [--port 9400]
    python deploy/local_cluster.py status
    python deploy/local_cluster.py stop

Data, logs and pid files live under one folder (default ``./local-cluster``).
Every service runs in its own session; ``stop`` signals exactly the process
groups whose pids it recorded, so nothing it started outlives it.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN = os.path.dirname(os.path.abspath(sys.executable))
NODES = 3


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


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _state_path(folder):
    return os.path.join(folder, "cluster.json")


def _load_state(folder):
    try:
        with open(_state_path(folder)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _services(folder, port):
    node_urls = ["http://127.0.0.1:%d" % (port + 1 + i) for i in range(NODES)]
    services = []
    for i, url in enumerate(node_urls):
        name = "node%d" % (i + 1)
        peers = ",".join(u for u in node_urls if u != url)
        argv = [_script("filetracker-node"), "--dir", os.path.join(folder, name, "data"),
                "--host", "127.0.0.1", "--port", str(port + 1 + i), "--peers", peers]
        services.append({"name": name, "url": url, "argv": argv, "ready": url + "/version/"})
    gw = "http://127.0.0.1:%d" % port
    services.append({"name": "gateway", "url": gw, "ready": gw + "/version/",
                     "argv": [_script("filetracker-gateway"), "--host", "127.0.0.1", "--port", str(port),
                              "--nodes", ",".join(node_urls)]})
    return services


def start(args):
    folder = os.path.abspath(args.dir)
    state = _load_state(folder)
    if state and any(_alive(s["pid"]) for s in state["services"]):
        print("A cluster is already running from %s (gateway %s); run 'stop' first."
              % (folder, state["gateway"]), file=sys.stderr)
        return 1
    os.makedirs(folder, exist_ok=True)
    started = []
    for svc in _services(folder, args.port):
        os.makedirs(os.path.join(folder, svc["name"]), exist_ok=True)
        log_path = os.path.join(folder, svc["name"] + ".log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(svc["argv"], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        started.append({"name": svc["name"], "pid": proc.pid, "url": svc["url"], "log": log_path,
                        "ready": svc["ready"]})
    state = {"gateway": started[-1]["url"], "services": started}
    with open(_state_path(folder), "w") as f:
        json.dump(state, f, indent=2)
    deadline = time.monotonic() + args.timeout
    for svc in started:
        while not _answers(svc["ready"]):
            if not _alive(svc["pid"]) or time.monotonic() > deadline:
                print("%s did not start; its log %s ends with:" % (svc["name"], svc["log"]), file=sys.stderr)
                with open(svc["log"], "rb") as f:
                    sys.stderr.write(f.read()[-2000:].decode("utf-8", "replace"))
                stop(args)
                return 1
            time.sleep(0.1)
    gw = state["gateway"]
    print(f"""filetracker cluster is up: 3 nodes + gateway, data and logs in {folder}

  gateway:  {gw}
  nodes:    {', '.join(s['url'] for s in started[:-1])}

Use it:
  export FILETRACKER_URL={gw}
  .venv/bin/filetracker put README.md /docs/readme.txt
  .venv/bin/filetracker cat /docs/readme.txt
  .venv/bin/filetracker ls /docs
  .venv/bin/python -c "from filetracker.client import Client; print(Client(remote_url='{gw}').file_version('/docs/readme.txt'))"
  .venv/bin/filetracker-admin --cluster {gw} status

Stop it:
  .venv/bin/python deploy/local_cluster.py stop --dir {args.dir}""")
    return 0


def status(args):
    folder = os.path.abspath(args.dir)
    state = _load_state(folder)
    if not state:
        print("no cluster recorded in %s" % folder)
        return 1
    ok = True
    for svc in state["services"]:
        alive = _alive(svc["pid"])
        answering = alive and _answers(svc["ready"])
        ok = ok and answering
        print("%-8s pid %-7d %-24s %s" % (svc["name"], svc["pid"], svc["url"],
                                           "up" if answering else ("running, not answering" if alive else "down")))
    return 0 if ok else 1


def stop(args):
    folder = os.path.abspath(args.dir)
    state = _load_state(folder)
    if not state:
        print("no cluster recorded in %s" % folder)
        return 0
    for svc in reversed(state["services"]):
        if _alive(svc["pid"]):
            try:
                os.killpg(svc["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for svc in state["services"]:
        while _alive(svc["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            os.killpg(svc["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.remove(_state_path(folder))
    print("stopped the cluster in %s" % folder)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a local filetracker cluster (3 nodes + gateway).")
    parser.add_argument("command", choices=["start", "status", "stop"])
    parser.add_argument("--dir", default="local-cluster", help="data, logs and pid files (default ./local-cluster)")
    parser.add_argument("--port", type=int, default=9400, help="gateway port; nodes take the next three")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the services")
    args = parser.parse_args(argv)
    return {"start": start, "status": status, "stop": stop}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
