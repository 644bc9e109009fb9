"""Hooks of the whole suite: the fault suite's figures, printed at the end of the run
(:mod:`tests.support.figures`), also when pytest-xdist runs the tests in workers."""

import pytest

from tests.support.figures import FIGURES, summary_lines


def pytest_sessionfinish(session):
    """An xdist worker hands its figures to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_figures"] = dict(FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """(xdist controller) Take the figures of a worker that finished."""
    FIGURES.update(getattr(node, "workeroutput", {}).get("fault_figures", {}))


def pytest_terminal_summary(terminalreporter):
    lines = summary_lines()
    if lines:
        terminalreporter.write_sep("-", "fault suite figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the files holding a ``slow`` test go out first (each worker takes a
    file at a time, in collection order): the longest files start early instead of leaving
    one worker busy at the end while the other idles.  Order within a file is unchanged,
    and every worker sorts alike (xdist requires identical collections)."""
    if not hasattr(config, "workerinput"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
