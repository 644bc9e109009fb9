"""Turn benchmark results (the dict bench/run.py writes as JSON) into a table,
ratios, target checks and a PNG chart.  Pure formatting: no processes, no I/O
except writing the chart file."""

SYSTEMS = ["upstream", "server", "node", "gateway"]  # always shown, in this order


def _systems(results):
    """The four main systems, then any optional ones measured (e.g. server-w2)."""
    return SYSTEMS + [k for k in results["systems"] if k not in SYSTEMS]
CELLS = [
    ("put@1", "PUT 4 KiB, c=1"), ("put@32", "PUT 4 KiB, c=32"),
    ("get@1", "GET 4 KiB, c=1"), ("get@32", "GET 4 KiB, c=32"),
    ("head@1", "HEAD, c=1 (hey)"), ("head@32", "HEAD, c=32 (hey)"),
    ("mix@32", "mixed 90/10 GET/PUT, c=32"),
]
BIG = [("put", "PUT 256 MiB"), ("get", "GET 256 MiB")]


def _cell(results, system, cell):
    s = results["systems"].get(system)
    if not s or s.get("status") != "ok":
        return None
    c = s["cells"].get(cell)
    return c if c and "error" not in c else None


def _big(results, system, op):
    s = results["systems"].get(system)
    if not s or s.get("status") != "ok":
        return None
    b = s.get("big", {}).get(op)
    return b if b and "error" not in b else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def ratios(results):
    """{"gateway/upstream": {cell: x}, "gateway/node": {...}, "gateway/raw": {"put": x, "get": x}}."""
    out = {"gateway/upstream": {}, "gateway/node": {}, "gateway/raw": {}}
    for cell, _ in CELLS:
        g = _cell(results, "gateway", cell)
        for other in ("upstream", "node"):
            o = _cell(results, other, cell)
            out["gateway/" + other][cell] = _ratio(g and g["ops_s"], o and o["ops_s"])
    raw = results.get("raw_copy", {}).get("file", {}).get("mb_s")
    for op, _ in BIG:
        g = _big(results, "gateway", op)
        out["gateway/raw"][op] = _ratio(g and g["mb_s"], raw)
        for other in ("upstream", "node"):
            o = _big(results, other, op)
            out["gateway/" + other]["big_" + op] = _ratio(g and g["mb_s"], o and o["mb_s"])
    return out


def targets(results):
    """The issue's targets as [(description, value, threshold, met or None when not measured)]."""
    r = ratios(results)
    rows = []
    for cell in ("put@1", "put@32", "get@1", "get@32"):
        rows.append(("gateway %s ops/s vs upstream" % cell, r["gateway/upstream"][cell], 1.0))
    for cell in ("get@1", "get@32"):
        rows.append(("gateway %s ops/s vs one node" % cell, r["gateway/node"][cell], 0.8))
    if results["systems"].get("gateway-p2", {}).get("status") == "ok":
        # the same targets for the gateway run as 2 processes (--processes 2)
        for cell, other, t in (("put@32", "upstream", 1.0), ("get@32", "upstream", 1.0), ("get@32", "node", 0.8)):
            g, o = _cell(results, "gateway-p2", cell), _cell(results, other, cell)
            rows.append(("gateway x2 processes %s ops/s vs %s" % (cell, "one node" if other == "node" else other),
                         _ratio(g and g["ops_s"], o and o["ops_s"]), t))
    for op, _ in BIG:
        rows.append(("gateway 256 MiB %s vs raw loopback copy" % op.upper(), r["gateway/raw"][op], 0.5))
    out = [(d, v, t, None if v is None else v >= t) for d, v, t in rows]
    for system in ("server", "node", "gateway", "gateway-p2"):
        s = results["systems"].get(system)
        if s and s.get("status") == "ok" and s.get("rss"):
            peak = max(p["peak_rss_mib"] for p in s["rss"])
            out.append(("%s: every process peak RSS (MiB)" % system, peak, 100.0, peak < 100.0))
    return out


def _num(x, digits=0):
    if x is None:
        return "-"
    return ("%." + str(digits) + "f") % x


def _lat(c):
    if c is None or c.get("p50_ms") is None:
        return "-"
    return "%s/%s" % (_num(c["p50_ms"], 2), _num(c["p99_ms"], 1))


def table(results):
    """The results as fixed-width text: ops/s, p50/p99 latency, MB/s, peak RSS, ratios, targets."""
    r = ratios(results)
    shown = _systems(results)
    names = [results["systems"].get(s, {}).get("label", s) for s in shown]
    head = ["metric"] + list(shown) + ["gw/upstream", "gw/node", "gw/raw"]
    rows = []
    for cell, label in CELLS:
        cells = [_cell(results, s, cell) for s in shown]
        err = ["" if c is None or not c.get("errors") else " (%d err)" % c["errors"] for c in cells]
        rows.append([label + " ops/s"] + [_num(c and c["ops_s"]) + e for c, e in zip(cells, err, strict=True)]
                    + [_num(r["gateway/upstream"][cell], 2), _num(r["gateway/node"][cell], 2), ""])
        rows.append(["  p50/p99 ms"] + [_lat(c) for c in cells] + ["", "", ""])
    for op, label in BIG:
        bigs = [_big(results, s, op) for s in shown]
        rows.append([label + " MB/s"] + [_num(b and b["mb_s"]) for b in bigs]
                    + [_num(r["gateway/upstream"]["big_" + op], 2), _num(r["gateway/node"]["big_" + op], 2),
                       _num(r["gateway/raw"][op], 2)])
    raw = results.get("raw_copy", {})
    rows.append(["raw loopback copy MB/s", "to file: %s" % _num(raw.get("file", {}).get("mb_s")),
                 "to /dev/null: %s" % _num(raw.get("null", {}).get("mb_s"))] + [""] * (len(shown) + 1))
    for what, fn in (("peak RSS, largest process MiB", max), ("peak RSS, all processes MiB", sum)):
        vals = []
        for s in shown:
            sys_ = results["systems"].get(s)
            rss = sys_.get("rss") if sys_ else None
            vals.append(_num(fn(p["peak_rss_mib"] for p in rss), 1) + (" (%d)" % len(rss) if fn is sum else "")
                        if rss else "-")
        rows.append([what] + vals + ["", "", ""])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = lambda row: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)  # noqa: E731
                                 for i, (x, w) in enumerate(zip(row, widths, strict=True)))
    out = [line(head), line(["-" * w for w in widths])] + [line(row) for row in rows]
    out.append("")
    out.append("systems: " + "; ".join("%s = %s" % (k, n) for k, n in zip(shown, names, strict=True)))
    for s in shown:
        sys_ = results["systems"].get(s)
        if sys_ and sys_.get("status") != "ok":
            out.append("%s: NOT MEASURED: %s" % (s, sys_.get("error", "?").splitlines()[0][:200]))
        elif sys_:
            for cell, c in sys_.get("cells", {}).items():
                if "error" in c:
                    out.append("%s %s: failed: %s" % (s, cell, c["error"].splitlines()[0][:200]))
                elif c.get("errors"):
                    out.append("%s %s: %d errors; diagnosis run: %s" % (s, cell, c["errors"], c.get("diagnosis")))
            for op, b in sys_.get("big", {}).items():
                if "error" in b:
                    out.append("%s 256 MiB %s: failed: %s" % (s, op, b["error"].splitlines()[0][:200]))
    loads = ["%s %.1f->%.1f" % (s, results["systems"][s]["load_before"], results["systems"][s]["load_after"])
             for s in shown if "load_before" in results["systems"].get(s, {})]
    if loads:
        out.append("1-min load average before->after each system (%s CPUs): %s"
                   % (results.get("machine", {}).get("cpus", "?"), ", ".join(loads)))
    out.append("")
    out.append("targets:")
    for desc, val, thr, met in targets(results):
        verdict = "not measured" if met is None else ("met" if met else "MISSED")
        cmp_ = "<" if "RSS" in desc else ">="
        out.append("  %-48s %8s  (target %s %s)  %s" % (desc, _num(val, 2), cmp_, thr, verdict))
    return "\n".join(out)


def profiles(results, top=8):
    """py-spy summaries (run.py --profile) as text: per system, cell and process, the
    functions with the most samples, self time first."""
    out = []
    for key, sys_ in results["systems"].items():
        rss = {str(p["pid"]): p["role"] for p in sys_.get("rss") or []}
        for cell, procs in (sys_.get("profiles") or {}).items():
            for pid, prof in procs.items():
                head = "profile %s %s pid %s (%s)" % (key, cell, pid, rss.get(pid, "?"))
                if "error" in prof:
                    out.append("%s: %s" % (head, prof["error"]))
                    continue
                out.append("%s, %d samples; self:" % (head, prof["samples"]))
                out += ["  %5.1f%%  %s" % (pct, fr) for fr, pct in prof["self"][:top]]
                out.append("  inclusive:")
                out += ["  %5.1f%%  %s" % (pct, fr) for fr, pct in prof["inclusive"][:top]]
    return "\n".join(out)


def chart(results, path):
    """Write a 2x2 PNG: small-file ops/s, p99 latency, 256 MiB MB/s, peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in _systems(results) if results["systems"].get(s, {}).get("status") == "ok"]
    palette = {"upstream": "#888888", "server": "#4c72b0", "node": "#55a868", "gateway": "#c44e52"}
    extra = ["#8172b2", "#ccb974", "#64b5cd"]
    colors = {s: palette.get(s) or extra[i % len(extra)] for i, s in enumerate(systems)}
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    width = 0.8 / max(1, len(systems))

    def bars(ax, labels, value_of, ylabel, title, log=False):
        xs = range(len(labels))
        for i, s in enumerate(systems):
            vals = [value_of(s, k) or 0 for k in labels]
            ax.bar([x + i * width for x in xs], vals, width, label=s, color=colors[s])
        ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in xs])
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    cells = [c for c, _ in CELLS]
    bars(axes[0][0], cells, lambda s, c: (_cell(results, s, c) or {}).get("ops_s"), "ops/s",
         "4 KiB operations per second (higher is better)")
    bars(axes[0][1], cells, lambda s, c: (_cell(results, s, c) or {}).get("p99_ms"), "ms",
         "p99 latency (log scale, lower is better)", log=True)
    bars(axes[1][0], [op for op, _ in BIG], lambda s, op: (_big(results, s, op) or {}).get("mb_s"), "MB/s",
         "256 MiB streaming (higher is better)")
    raw = results.get("raw_copy", {}).get("file", {}).get("mb_s")
    if raw:
        axes[1][0].axhline(raw, color="black", linestyle="--", label="raw loopback copy")
        axes[1][0].axhline(raw / 2, color="black", linestyle=":", label="0.5x raw (target)")
    ax = axes[1][1]
    for i, s in enumerate(systems):
        rss = results["systems"][s].get("rss") or []
        ax.bar(i, max((p["peak_rss_mib"] for p in rss), default=0), 0.4, color=colors[s])
        ax.bar(i + 0.4, sum(p["peak_rss_mib"] for p in rss), 0.4, color=colors[s], alpha=0.4)
    ax.axhline(100, color="black", linestyle=":", label="100 MiB per process (target)")
    ax.set_xticks([i + 0.2 for i in range(len(systems))])
    ax.set_xticklabels(systems)
    ax.set_ylabel("MiB")
    ax.set_title("peak RSS: largest process (solid), all processes (light)")
    ax.grid(axis="y", alpha=0.3)
    for a in (axes[0][0], axes[1][0], axes[1][1]):
        a.legend(fontsize=8)
    m = results.get("machine", {})
    fig.suptitle("filetracker benchmark %s, %s, %s CPUs%s" % (
        results.get("date", ""), m.get("cpu_model", "?"), m.get("cpus", "?"), " (quick)" if results.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
