"""Credentials of a URL (``http://user:token@host``) never reach a message.

A server's or gateway's ``--fallback-url``, the FUSE client's ``--url`` and
``filetracker-admin import --from/--to`` may carry ``user:token``; when the
other end is down, the answers (``X-Exception``, body), standard output/error
and logs name it without them (``filetracker.client.remote_data_store.safe_url``)
and say in one line what happened ("connection refused", not Tornado's
"Stream is closed" nor a urllib3 retry story).  Real processes, a closed port.
"""

import os
import subprocess

import pytest
import requests

from tests.security.conftest import start_gateway
from tests.server.conftest import start_server
from tests.support.procs import free_port, script

SECRET = "SECRETTOKEN123"


def closed_url(user="old", secret=SECRET):
    """A URL with credentials to a port nobody listens on."""
    return "http://%s:%s@127.0.0.1:%d" % (user, secret, free_port())


def check_fallback_failures(url, log_path):
    for method, path in (("GET", "/files/zz/none"), ("HEAD", "/files/zz/none"), ("GET", "/list/zz/")):
        r = requests.request(method, url + path, timeout=30)
        why = r.headers.get("X-Exception", "")
        assert r.status_code == 502, (method, path, r.status_code, why)
        assert SECRET not in why and SECRET not in r.text, why
        assert "connection refused" in why and "Stream is closed" not in why, why
        assert "old:" not in why and "@127.0.0.1" not in why, why
    with open(log_path, errors="replace") as f:
        assert SECRET not in f.read()


def test_server_fallback_failure_names_no_credentials(tmp_path):
    server = start_server(tmp_path, extra=["--fallback-url", closed_url()])
    try:
        check_fallback_failures(server.url, server.service.log_path)
    finally:
        server.stop()


def test_gateway_fallback_failure_names_no_credentials(nodes3, tmp_path):
    gw = start_gateway(nodes3, ["--fallback-url", closed_url(), "--log-level", "DEBUG"], tmp_path)
    try:
        check_fallback_failures(gw.url, gw.log_path)
    finally:
        gw.stop()


def fuse_unavailable():
    from tests.fuse.conftest import fuse_unavailable as why

    return why()


def test_fuse_unreachable_server_names_no_credentials(tmp_path):
    reason = fuse_unavailable()
    if reason:
        pytest.skip(reason)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    url = closed_url("judge")
    r = subprocess.run([script("filetracker-fuse"), str(mnt), "--url", url, "--timeout", "2"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert SECRET not in out and "judge:" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, out
    port = url.rsplit(":", 1)[1]
    assert "the server at http://127.0.0.1:%s does not answer" % port in lines[0], out
    assert "connection refused" in lines[0].lower() and lines[0].count("127.0.0.1") == 1, out


def admin(*argv, timeout=60):
    env = dict(os.environ)
    env.pop("FILETRACKER_ADMIN_URL", None)
    return subprocess.run([script("filetracker-admin"), *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_admin_import_messages_name_no_credentials(tmp_path):
    target = start_server(tmp_path, "target")
    source = start_server(tmp_path, "source")
    try:
        # the old server down: one short line, no token, no urllib3 retry story
        url = closed_url("judge")
        port = url.rsplit(":", 1)[1]
        for command in ("import", "compare"):
            r = admin(command, "--from", url, "--to", target.url)
            out = r.stdout + r.stderr
            assert r.returncode == 1, out
            assert SECRET not in out and "judge:" not in out, out
            assert r.stderr.strip() == ("filetracker-admin: cannot list http://127.0.0.1:%s/list/: "
                                        "Connection refused" % port), out
        # the cluster down
        r = admin("import", "--from", source.url, "--to", closed_url("boss"))
        out = r.stdout + r.stderr
        assert r.returncode == 1 and SECRET not in out and "boss:" not in out, out
        assert "cannot reach the cluster at http://127.0.0.1:" in r.stderr
        assert "Connection refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1, out
        # both up, both with credentials: the progress lines do not show them either
        requests.put(source.url + "/files/a/b.txt", params={"last_modified": "Thu, 01 Jan 2015 00:00:00 GMT"},
                     data=b"x", timeout=10).raise_for_status()
        creds = "http://judge:%s@" % SECRET
        r = admin("import", "--from", source.url.replace("http://", creds), "--to",
                  target.url.replace("http://", "http://boss:%s-2@" % SECRET), "--verify")
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert SECRET not in out and "judge:" not in out and "boss:" not in out, out
        assert "import from %s into %s" % (source.url, target.url) in r.stderr, out
        assert requests.get(target.url + "/files/a/b.txt", timeout=10).content == b"x"
    finally:
        source.stop()
        target.stop()


@pytest.mark.parametrize("url", ["http://[::1", "http://old:%s@[::1" % SECRET, "http://old:%s@[::1]:x" % SECRET])
def test_a_url_urllib_cannot_split_is_a_remote_error_naming_no_credentials(tmp_path, url):
    """``safe_url`` itself raised urllib's ValueError for such a URL, in place of the
    RemoteError whose message it was building (review, 2026-11-29)."""
    from filetracker.client import Client
    from filetracker.errors import RemoteError

    with pytest.raises(RemoteError) as e:
        Client(cache_dir="", remote_url=url).get_file("/a", str(tmp_path / "out"))
    assert SECRET not in str(e.value) and "cannot reach http://" in str(e.value), str(e.value)
