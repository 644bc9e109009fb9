"""Start our ``filetracker-server`` as a real subprocess for client tests."""

import os

from tests.support.procs import Service, free_port, script


class OurServer:
    """A filetracker-server on 127.0.0.1 with data in ``dir``; restartable on the same port."""

    def __init__(self, data_dir, log_path, port=None):
        self.dir = str(data_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log_path = str(log_path)
        self.service = None

    def start(self):
        self.service = Service(
            [script("filetracker-server"), "-d", self.dir, "-p", str(self.port), "-D",
             "--log-level", "WARNING"],
            self.log_path, ready_url=self.url + "/version/").start()
        return self

    def stop(self):
        if self.service is not None:
            self.service.stop()
            self.service = None


def start_server(tmp_path, name="server"):
    return OurServer(os.path.join(str(tmp_path), name), os.path.join(str(tmp_path), name + ".log")).start()
