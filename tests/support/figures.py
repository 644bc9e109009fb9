"""What the fault tests tried, totalled at the end of the run.

Each fault test calls :func:`figures` once; ``tests/conftest.py`` prints the
table at the end of the session (``pytest_terminal_summary``, visible without
``-s``).  Under pytest-xdist every worker hands its figures to the controller
when it finishes, so the table covers the whole run there too.
"""

import collections

#: test name -> {"cases", "faults", "acked_checked", "lost"}
FIGURES = collections.OrderedDict()


def figures(test, cases=0, faults=0, acked_checked=0, lost=0):
    """Record (and print) one test's figures."""
    FIGURES[test] = {"cases": cases, "faults": faults, "acked_checked": acked_checked, "lost": lost}
    print("\nFIGURES %s: cases tried %d, faults injected %d, acknowledged writes checked %d, lost: %d"
          % (test, cases, faults, acked_checked, lost))


def summary_lines():
    """The table's lines (none when no fault test ran)."""
    if not FIGURES:
        return []
    tot = {k: sum(f[k] for f in FIGURES.values()) for k in ("cases", "faults", "acked_checked", "lost")}
    lines = ["%-34s cases %5d  faults %4d  acked writes checked %5d  lost %d"
             % (name, f["cases"], f["faults"], f["acked_checked"], f["lost"]) for name, f in FIGURES.items()]
    lines.append("TOTAL: cases tried %d, faults injected %d, acknowledged writes checked %d, lost: %d"
                 % (tot["cases"], tot["faults"], tot["acked_checked"], tot["lost"]))
    return lines
