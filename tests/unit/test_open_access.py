"""The warning a service logs at start when it listens beyond loopback without a token file
(filetracker/server/main.py): the deploy example's nodes served every file to anyone."""

import pytest

from filetracker.server.main import open_access_warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_needs_no_warning(host):
    assert open_access_warning("filetracker-node", host, 9401, None, "reads") is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.11", "node1.example", ""])
def test_a_token_file_needs_no_warning(host):
    assert open_access_warning("filetracker-gateway", host, 9400, "/etc/filetracker/auth.tokens",
                               "reads and writes") is None


def test_the_warning_beyond_loopback_exact():
    assert open_access_warning("filetracker-node", "0.0.0.0", 9401, None, "reads") == (
        "filetracker-node listens on 0.0.0.0:9401 without --auth-file: anyone who can reach that port "
        "reads every file (--auth-file turns access control on; docs/SECURITY.md)")
    assert open_access_warning("filetracker-server", "", 9999, None, "reads and writes") == (
        "filetracker-server listens on *:9999 without --auth-file: anyone who can reach that port "
        "reads and writes every file (--auth-file turns access control on; docs/SECURITY.md)")
    assert "10.0.0.11:9400" in open_access_warning("filetracker-gateway", "10.0.0.11", 9400, None, "reads")
    assert "node1.example:9400" in open_access_warning("filetracker-gateway", "node1.example", 9400, None, "reads")
