"""Load generators for the benchmark: wrk (PUT, GET, mixed) and hey (HEAD).

wrk cannot benchmark HEAD: its response parser is not told that a HEAD
answer has no body, so it waits for ``Content-Length`` bytes that never come
(every request ends in a read error).  HEAD therefore runs under ``hey``
(Go's HTTP client), the same for every system; its figures compare across
systems, not with wrk's GET figures.

Every run is bounded: ``duration`` seconds of load plus a hard timeout, and the
generator runs in its own session so a stuck one is killed by process group.
"""

import json
import os
import re
import signal
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "lua", "ft.lua")
CPUS = os.cpu_count() or 1


def _run(argv, timeout):
    """Run a load generator in its own session; SIGKILL its group on timeout."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError("%s timed out after %ss" % (argv[0], timeout))
    if proc.returncode != 0:
        raise RuntimeError("%s exited %s: %s" % (argv[0], proc.returncode, (err or out)[-500:]))
    return out


def run_wrk(base_url, mode, conns, duration, nnames, read_prefix, write_prefix, date_q,
            size=4096, write_share=0.1):
    """One wrk cell.  Returns a dict with ops_s (successful requests per second),
    p50_ms, p90_ms, p99_ms, mean_ms, requests, errors (all kinds) and the raw counts.
    When answers failed, a 1-second diagnosis run adds ``diagnosis``: answers by
    status and the first error's status and X-Exception."""
    args = (base_url, mode, conns, nnames, read_prefix, write_prefix, date_q, size, write_share)
    res = _wrk_once(*args, duration=duration, diag=False)
    if res["raw"]["err_status"] or res["raw"]["err_read"]:
        try:
            d = _wrk_once(*args, duration=1, diag=True)
            res["diagnosis"] = {"codes": d["codes"], "first_error": d["first_error"]}
        except RuntimeError as e:
            res["diagnosis"] = {"error": str(e)}
    return res


def _wrk_once(base_url, mode, conns, nnames, read_prefix, write_prefix, date_q, size, write_share,
              duration, diag):
    threads = max(1, min(conns, CPUS))
    if diag:
        write_prefix = write_prefix.rstrip("/") + "-diag/"
    argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", "%ds" % duration,
            "--timeout", "10s", "-s", LUA, base_url, "--", mode, str(nnames), read_prefix,
            write_prefix, date_q, str(size), str(write_share), "1" if diag else "0"]
    out = _run(argv, timeout=duration + 60)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError("wrk printed no result: %s" % out[-500:])
    raw = json.loads(line[len("BENCH_JSON "):])
    errors = sum(raw[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    seconds = raw["duration_us"] / 1e6
    ok = max(0, raw["requests"] - raw["err_status"])
    return {
        "tool": "wrk", "threads": threads, "conns": conns,
        "ops_s": ok / seconds if seconds else 0.0,
        "p50_ms": raw["p50_us"] / 1000.0, "p90_ms": raw["p90_us"] / 1000.0,
        "p99_ms": raw["p99_us"] / 1000.0, "mean_ms": raw["mean_us"] / 1000.0,
        "requests": raw["requests"], "errors": errors, "raw": raw,
        "codes": ";".join(ln.split(" codes ", 1)[1] for ln in out.splitlines()
                          if ln.startswith("BENCH_DIAG ") and " codes " in ln),
        "first_error": next((ln.split(" first_error ", 1)[1] for ln in out.splitlines()
                             if ln.startswith("BENCH_DIAG ") and " first_error " in ln
                             and ln.split(" first_error ", 1)[1].strip()), ""),
    }


_HEY_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_HEY_STATUS = re.compile(r"\[(\d+)\]\s+(\d+) responses")
_HEY_AVG = re.compile(r"Average:\s+([0-9.]+) secs")


def run_hey(url, method, conns, duration):
    """One hey cell against a single URL: same result keys as run_wrk."""
    argv = ["hey", "-z", "%ds" % duration, "-c", str(conns), "-m", method, "-t", "10",
            "-disable-redirects", url]
    out = _run(argv, timeout=duration + 60)
    m = _HEY_RATE.search(out)
    if m is None:
        raise RuntimeError("hey printed no rate: %s" % out[-500:])
    pct = {int(p): float(s) * 1000.0 for p, s in re.findall(r"(\d+)% in ([0-9.]+) secs", out)}
    statuses = {int(c): int(n) for c, n in _HEY_STATUS.findall(out)}
    total = sum(statuses.values())
    good = sum(n for c, n in statuses.items() if c < 400)
    # hey's rate counts every response; scale it to the successful ones.
    rate = float(m.group(1)) * (good / total if total else 0.0)
    # Transport errors are listed under "Error distribution:" as "[count] message".
    err_section = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    transport_errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", err_section))
    avg = _HEY_AVG.search(out)
    return {
        "tool": "hey", "threads": None, "conns": conns, "ops_s": rate,
        "p50_ms": pct.get(50), "p90_ms": pct.get(90), "p99_ms": pct.get(99),
        "mean_ms": float(avg.group(1)) * 1000.0 if avg else None,
        "requests": total, "errors": (total - good) + transport_errors,
        "raw": {"statuses": statuses, "transport_errors": transport_errors},
    }
