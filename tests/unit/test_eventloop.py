"""filetracker.server.eventloop: the FILETRACKER_EVENT_LOOP choice."""

import asyncio
import os
import subprocess
import sys

import pytest

from filetracker.server import eventloop


async def _loop_type():
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_asyncio_choice_runs_on_the_standard_loop():
    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(_loop_type(), "asyncio") == "asyncio"


def test_auto_and_uvloop_use_uvloop_when_installed():
    pytest.importorskip("uvloop")
    assert eventloop.loop_name("auto") == "uvloop"
    assert eventloop.run(_loop_type(), "uvloop") == "uvloop"


def test_unknown_choice_names_the_variable(monkeypatch):
    monkeypatch.setenv(eventloop.ENV, "gevent")
    with pytest.raises(eventloop.EventLoopError, match="FILETRACKER_EVENT_LOOP=gevent"):
        eventloop.loop_factory()


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_name() == "asyncio"


def test_a_server_started_with_a_bad_choice_exits_2_with_one_line(tmp_path):
    env = dict(os.environ, FILETRACKER_EVENT_LOOP="nope")
    proc = subprocess.run([sys.executable, "-m", "cluster.node.main", "--dir", str(tmp_path), "--port", "65001"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "FILETRACKER_EVENT_LOOP=nope" in proc.stderr
    assert "Traceback" not in proc.stderr
