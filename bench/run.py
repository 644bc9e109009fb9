"""Benchmark: the upstream 2.x server, our server, one node, and the gateway over 3 nodes.

    python bench/run.py [--quick] [--out bench/results] [--systems upstream,server,node,gateway]

Starts every system itself on 127.0.0.1 (each in its own session, stopped by
process group; one system at a time so they do not compete), drives each with
the same load (wrk; hey for HEAD; curl for 256 MiB), and prints a table with
ratios and target checks.  Writes ``<out>/bench-<stamp>.{json,png,txt}`` and
copies them to ``<out>/latest.*``.  See bench/README.md for what each figure means.
"""

import argparse
import datetime
import email.utils
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import requests  # noqa: E402

from bench import bigfile, load, profile, report, systems  # noqa: E402
from bench.procinfo import group_pids  # noqa: E402
from tests.support import upstream  # noqa: E402

TOOLS = {"wrk": "wrk", "hey": "hey", "curl": "curl", "socat": "socat"}  # command -> Debian package
NAMES = 200          # pre-populated 4 KiB files for GET/HEAD
SMALL = 4096
BIG = 256 << 20
READ_PREFIX = "/files/bench/r/"


def log(msg):
    print("[bench] %s" % msg, file=sys.stderr, flush=True)


def ensure_tools(setup_upstream):
    """Install missing load tools with apt-get (as root) and the 2.x server venv."""
    missing = [pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit("missing tools %s: install them (Debian packages: %s)" % (missing, " ".join(missing)))
        log("installing %s" % " ".join(missing))
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if setup_upstream and not upstream.available():
        log("setting up the 2.x server venv (scripts/setup-ft2-server.sh)")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup-ft2-server.sh")], check=True)


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": mem, "kernel": platform.release(),
            "python": platform.python_version(), "host": platform.node()}


def loadavg():
    return os.getloadavg()[0]


def populate(url, date_q, n=NAMES, size=SMALL):
    """PUT n distinct 4 KiB files READ_PREFIX0..n-1 (8 at a time)."""
    def one(i):
        with requests.Session() as s:
            r = s.put("%s%s%d?last_modified=%s" % (url, READ_PREFIX, i, date_q), data=os.urandom(size), timeout=30)
            if r.status_code != 200:
                raise RuntimeError("populate PUT %d: %s %s" % (i, r.status_code, r.headers.get("X-Exception", "")))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def _our_pids(system):
    return [pid for _role, svc in system.services if svc.alive() for pid in group_pids(svc.pid)]


PLAN = [("put", 1), ("put", 32), ("get", 1), ("get", 32), ("head", 1), ("head", 32), ("mix", 32)]


def run_cell(system, out, mode, conns, args, date_q):
    """One load cell against one started system; the result (or its error) goes to ``out["cells"]``."""
    d = args.duration
    cell = "%s@%d" % (mode, conns)
    recorders = None
    if "profiles" in out and cell in args.profile_cells:
        prefix = os.path.join(args.out, "profile-%s-%s-%s" % (args.stamp, system.key, cell.replace("@", "-c")))
        recorders = profile.start(_our_pids(system), max(1, d - 1), prefix)
    load_before = loadavg()
    try:
        if mode == "head":
            res = load.run_hey(system.url + READ_PREFIX + "0", "HEAD", conns, d)
        else:
            wprefix = "/files/bench/w/%s-%d/" % (cell.replace("@", "-c"), int(time.time()))
            res = load.run_wrk(system.url, mode, conns, d, NAMES, READ_PREFIX, wprefix, date_q, SMALL, 0.1)
        res["load"] = load_before
        out["cells"][cell] = res
        log("  %-10s %-8s %8.0f ops/s  p50 %s ms  p99 %s ms  (load %.1f)%s" % (
            system.key, cell, res["ops_s"], _f(res["p50_ms"]), _f(res["p99_ms"]), load_before,
            "  (%d errors)" % res["errors"] if res["errors"] else ""))
        if res.get("diagnosis"):
            log("           diagnosis: %s" % res["diagnosis"])
    except Exception as e:  # one failed cell must not lose the others
        out["cells"][cell] = {"error": str(e)}
        log("  %-10s %-8s failed: %s" % (system.key, cell, str(e).splitlines()[0][:200]))
    if recorders:
        out["profiles"][cell] = {str(pid): prof for pid, prof in profile.finish(recorders, d + 30).items()}


def run_big(system, out, op, repeat, big_path, date_q):
    """One 256 MiB PUT or GET; keeps the best in ``out["big"][op]``."""
    try:
        if op == "put":
            res = bigfile.put(system.url, "/bench/big/%d" % repeat, big_path, date_q)
        else:
            res = bigfile.get(system.url, "/bench/big/0", BIG)
        res["load"] = loadavg()
        best = out["big"].get(op)
        if best is None or "error" in best or res["mb_s"] > best["mb_s"]:
            out["big"][op] = res
        out["big"][op]["repeats"] = repeat + 1
        log("  %-10s 256M %s %6.0f MB/s" % (system.key, op, res["mb_s"]))
    except Exception as e:
        if op not in out["big"]:
            out["big"][op] = {"error": str(e)}
        log("  %-10s 256M %s failed: %s" % (system.key, op, str(e).splitlines()[0][:200]))


def run_all(keys, args, workdir, date_q, big_path):
    """Start every system, then run each cell over all of them in turn (interleaved).

    Started systems wait idle while another one is measured, so they do not
    compete; interleaving makes a change of the machine's load (other jobs)
    hit every system alike instead of whichever happened to run then.
    """
    results, live = {}, {}
    try:
        for key in keys:
            out = results[key] = {"key": key, "load_before": loadavg(), "cells": {}, "big": {}}
            system = None
            try:
                os.makedirs(os.path.join(workdir, key), exist_ok=True)
                system = systems.FACTORIES[key](os.path.join(workdir, key))
                out["label"] = system.label
                log("%s: starting (%s)" % (key, system.label))
                system.start()
                out["url"] = system.url
                populate(system.url, date_q)
                if args.profile and key != "upstream":
                    out["profiles"] = {}
                live[key] = system
            except Exception as e:
                out["status"] = "error"
                out["error"] = str(e)
                log("%s: NOT MEASURED: %s" % (key, str(e)[:600]))
                if system is not None:
                    system.stop()
                    out["logs"] = system.logs()
        for mode, conns in PLAN:
            for key, system in live.items():
                run_cell(system, results[key], mode, conns, args, date_q)
        for op in ("put", "get"):
            for repeat in range(args.big_repeats):
                for key, system in live.items():
                    run_big(system, results[key], op, repeat, big_path, date_q)
        for key, system in live.items():
            results[key]["rss"] = system.peak_rss()
            results[key]["status"] = "ok"
    finally:
        for key, system in live.items():
            system.stop()
            results[key]["logs"] = system.logs()
            results[key]["load_after"] = loadavg()
    return results


def _f(x):
    return "-" if x is None else "%.2f" % x


def raw_copy_baseline(raw, big_path, workdir, passes=3):
    """Update ``raw`` ({"file", "null"}) with the best of ``passes`` socat copies: the
    baseline is what a plain copy *can* do here.

    Every copy is a new file kept until the work folder goes: deleting 256 MiB right before
    the load cells made file creation and fsync several times dearer for about a minute on
    a filesystem mounted with ``discard`` (bench/README.md)."""
    for _ in range(passes):
        for kind in ("file", "null"):
            dest = "/dev/null" if kind == "null" else _new_copy_path(workdir)
            r = bigfile.raw_copy(big_path, dest)
            if raw[kind] is None or r["mb_s"] > raw[kind]["mb_s"]:
                raw[kind] = r
    log("raw loopback copy (best so far): %.0f MB/s to a file, %.0f MB/s to /dev/null"
        % (raw["file"]["mb_s"], raw["null"]["mb_s"]))


def _new_copy_path(workdir):
    fd, path = tempfile.mkstemp(prefix="big.copy.", dir=workdir)
    os.close(fd)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 s per cell, one 256 MiB pass")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--systems", default=",".join(systems.ORDER), help="comma-separated, from %s (default: %s)" % (sorted(systems.FACTORIES), ",".join(systems.ORDER)))
    p.add_argument("--duration", type=int, help="seconds per load cell (default 8, quick 2)")
    p.add_argument("--big-repeats", type=int, help="256 MiB passes per direction, best kept (default 2, quick 1)")
    p.add_argument("--workdir", help="data folders and logs (default: a new temporary folder, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy our processes during --profile-cells (figures then a little lower)")
    p.add_argument("--profile-cells", default="put@32,get@32")
    p.add_argument("--no-setup", action="store_true", help="do not install tools or the 2.x server venv")
    args = p.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 8)
    args.big_repeats = args.big_repeats or (1 if args.quick else 2)
    args.profile_cells = set(args.profile_cells.split(","))
    if args.profile and not profile.available():
        p.error("--profile needs py-spy (pip install py-spy)")
    keys = [k.strip() for k in args.systems.split(",") if k.strip()]
    unknown = set(keys) - set(systems.FACTORIES)
    if unknown:
        p.error("unknown systems: %s" % ", ".join(sorted(unknown)))

    # SIGTERM must unwind through the finally blocks that stop our servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools(setup_upstream=not args.no_setup and "upstream" in keys)

    workdir = args.workdir or tempfile.mkdtemp(prefix="ftbench-")
    os.makedirs(workdir, exist_ok=True)
    version_ts = int(time.time()) - 3600
    date_q = urllib.parse.quote(email.utils.formatdate(version_ts), safe="")
    started = datetime.datetime.now().astimezone()
    args.stamp = started.strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    results = {
        "date": started.strftime("%Y-%m-%d %H:%M %Z"), "quick": args.quick, "duration_s": args.duration,
        "machine": machine(), "workdir": workdir, "systems": {},
        "setup": {"small_size": SMALL, "big_size": BIG, "names": NAMES, "wrk_threads_c32": min(32, os.cpu_count() or 1)},
    }
    try:
        log("work folder %s; making the 256 MiB file" % workdir)
        big_path = bigfile.make_file(os.path.join(workdir, "big.bin"), BIG)
        raw = {"file": None, "null": None}
        results["raw_copy"] = raw
        raw_copy_baseline(raw, big_path, workdir)
        results["systems"].update(run_all(keys, args, workdir, date_q, big_path))
        # Again at the end: on a shared machine the first pass may have hit a busy moment.
        raw_copy_baseline(raw, big_path, workdir)
    finally:
        results["elapsed_s"] = round(time.time() - started.timestamp(), 1)
        results["ratios"] = report.ratios(results)
        results["targets"] = [{"what": d, "value": v, "threshold": t, "met": m} for d, v, t, m in report.targets(results)]
        text = report.table(results)
        print(text)
        profiles = report.profiles(results)
        if profiles:
            print(profiles)
            text += "\n\n" + profiles
        base = os.path.join(args.out, "bench-%s" % args.stamp)
        with open(base + ".json", "w") as f:
            json.dump(results, f, indent=1)
        with open(base + ".txt", "w") as f:
            f.write("filetracker benchmark %s on %s (%s CPUs)\n\n%s\n" % (
                results["date"], results["machine"]["cpu_model"], results["machine"]["cpus"], text))
        try:
            report.chart(results, base + ".png")
        except ImportError:
            log("matplotlib missing (pip install -e '.[bench]'): no chart")
        for ext in (".json", ".txt", ".png"):
            if os.path.exists(base + ext):
                shutil.copyfile(base + ext, os.path.join(args.out, "latest" + ext))
        log("wrote %s.{json,txt,png} (and latest.*)" % base)
        if not (args.keep or args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("kept %s" % workdir)


if __name__ == "__main__":
    main()
