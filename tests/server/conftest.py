"""Fixtures: a real ``filetracker-server`` subprocess on a free port."""

import os

import pytest

from tests.support.procs import Service, free_port, script


class ServerProc:
    """A filetracker-server we started: ``url``, ``dir``, ``service``."""

    def __init__(self, data_dir, log_path, extra=()):
        self.dir = str(data_dir)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.service = Service(
            [script("filetracker-server"), "-d", self.dir, "-p", str(self.port), "-D", *extra],
            str(log_path), ready_url=self.url + "/version")

    def start(self):
        self.service.start()
        return self

    def stop(self):
        self.service.stop()

    def tmp_files(self):
        return os.listdir(os.path.join(self.dir, "tmp"))

    def blob_files(self):
        out = []
        for _root, _dirs, files in os.walk(os.path.join(self.dir, "blobs")):
            out.extend(files)
        return sorted(out)


def start_server(tmp_path, name="server", extra=()):
    return ServerProc(tmp_path / name, tmp_path / (name + ".log"), extra).start()


@pytest.fixture
def server(tmp_path):
    s = start_server(tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("shared"))
    yield s
    s.stop()
