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


def measure(system, args, date_q, big_path):
    """Every cell against one started system; failures are recorded per cell."""
    out = {"cells": {}, "big": {}}
    profiling = args.profile and system.key != "upstream"
    if profiling:
        out["profiles"] = {}
    d = args.duration
    populate(system.url, date_q)
    plan = [("put", 1), ("put", 32), ("get", 1), ("get", 32), ("head", 1), ("head", 32), ("mix", 32)]
    for mode, conns in plan:
        cell = "%s@%d" % (mode, conns)
        recorders = None
        if profiling and cell in args.profile_cells:
            prefix = os.path.join(args.out, "profile-%s-%s-%s" % (args.stamp, system.key, cell.replace("@", "-c")))
            recorders = profile.start(_our_pids(system), max(1, d - 1), prefix)
        try:
            if mode == "head":
                res = load.run_hey(system.url + READ_PREFIX + "0", "HEAD", conns, d)
            else:
                wprefix = "/files/bench/w/%s-%d/" % (cell.replace("@", "-c"), int(time.time()))
                res = load.run_wrk(system.url, mode, conns, d, NAMES, READ_PREFIX, wprefix, date_q, SMALL, 0.1)
            out["cells"][cell] = res
            log("  %-8s %8.0f ops/s  p50 %s ms  p99 %s ms%s" % (
                cell, res["ops_s"], _f(res["p50_ms"]), _f(res["p99_ms"]),
                "  (%d errors)" % res["errors"] if res["errors"] else ""))
            if res.get("diagnosis"):
                log("           diagnosis: %s" % res["diagnosis"])
        except Exception as e:  # one failed cell must not lose the others
            out["cells"][cell] = {"error": str(e)}
            log("  %-8s failed: %s" % (cell, str(e).splitlines()[0][:200]))
        if recorders:
            out["profiles"][cell] = {str(pid): prof for pid, prof in profile.finish(recorders, d + 30).items()}
    for op in ("put", "get"):
        best = None
        try:
            for i in range(args.big_repeats):
                name = "/bench/big/%d" % i
                if op == "put":
                    res = bigfile.put(system.url, name, big_path, date_q)
                else:
                    res = bigfile.get(system.url, "/bench/big/0", BIG)
                if best is None or res["mb_s"] > best["mb_s"]:
                    best = res
            best["repeats"] = args.big_repeats
            out["big"][op] = best
            log("  %-8s %8.0f MB/s (best of %d)" % ("256M " + op, best["mb_s"], args.big_repeats))
        except Exception as e:
            out["big"][op] = {"error": str(e)}
            log("  256M %s failed: %s" % (op, str(e).splitlines()[0][:200]))
    return out


def _f(x):
    return "-" if x is None else "%.2f" % x


def raw_copy_baseline(raw, big_path, workdir, passes=3):
    """Update ``raw`` ({"file", "null"}) with the best of ``passes`` socat copies: the
    baseline is what a plain copy *can* do here."""
    for _ in range(passes):
        for kind, dest in (("file", os.path.join(workdir, "big.copy")), ("null", "/dev/null")):
            r = bigfile.raw_copy(big_path, dest)
            if raw[kind] is None or r["mb_s"] > raw[kind]["mb_s"]:
                raw[kind] = r
    log("raw loopback copy (best so far): %.0f MB/s to a file, %.0f MB/s to /dev/null"
        % (raw["file"]["mb_s"], raw["null"]["mb_s"]))


def run_system(key, args, workdir, date_q, big_path):
    sdir = os.path.join(workdir, key)
    os.makedirs(sdir, exist_ok=True)
    result = {"key": key, "load_before": loadavg()}
    system = None
    try:
        system = systems.FACTORIES[key](sdir)
        result["label"] = system.label
        log("%s: starting (%s)" % (key, system.label))
        system.start()
        result["url"] = system.url
        result.update(measure(system, args, date_q, big_path))
        result["rss"] = system.peak_rss()
        result["status"] = "ok"
    except Exception as e:
        result["status"] = "error"
        result["error"] = str(e)
        log("%s: NOT MEASURED: %s" % (key, str(e)[:600]))
    finally:
        if system is not None:
            system.stop()
            result["logs"] = system.logs()
    result["load_after"] = loadavg()
    return result


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
        for key in keys:
            results["systems"][key] = run_system(key, args, workdir, date_q, big_path)
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
