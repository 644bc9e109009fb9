"""Access lines: one per request, ``--log-format json`` lines parse, and no secret reaches a log."""

import json
import os
import socket
import time

import requests

from filetracker.httpdate import format_version
from tests.ops.conftest import SECRET, wait_until

TOKEN = "tok-Zq8mW3vY0-never-log-me"


def _json_lines(path):
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line must be one JSON object


def test_json_access_lines_and_no_secrets(ops_cluster):
    c = ops_cluster(nodes=3, gateway=True, node_args=["--log-format", "json"],
                    gateway_args=["--log-level", "INFO", "--log-format", "json"])
    gw = c.gateway_url
    body = os.urandom(4321)
    secret_headers = {"Authorization": "Bearer " + TOKEN, "X-Cluster-Secret": SECRET, "Cookie": "s=" + TOKEN}
    r = requests.put(gw + "/files/logs/one.bin", params={"last_modified": format_version(1_700_000_000),
                                                         "token": TOKEN},
                     data=body, headers=secret_headers, timeout=30)
    assert r.status_code in (200, 401, 403), r.text   # with or without access control, the line is logged
    if r.status_code != 200:   # an auth layer refused the made-up token: write without it
        r = requests.put(gw + "/files/logs/one.bin", params={"last_modified": format_version(1_700_000_000)},
                         data=body, timeout=30)
        assert r.status_code == 200
    assert requests.get(gw + "/files/logs/one.bin", timeout=30).content == body
    assert requests.get(gw + "/files/logs/none", timeout=30).status_code == 404

    def access(path, predicate):
        return [d for d in _json_lines(path) if d.get("logger") == "filetracker.access" and predicate(d)]

    gw_log = c.gateway.log_path
    assert wait_until(lambda: access(gw_log, lambda d: d["status"] == 404), 15)
    put = access(gw_log, lambda d: d["method"] == "PUT" and d["status"] == 200)[-1]
    assert put["name"] == "/logs/one.bin" and put["path"] == "/files/logs/one.bin"
    assert put["bytes_in"] == len(body) and put["duration_ms"] > 0 and put["remote"] == "127.0.0.1"
    get = access(gw_log, lambda d: d["method"] == "GET" and d["name"] == "/logs/one.bin")[-1]
    assert get["status"] == 200 and get["bytes_out"] == len(body)
    for d in access(gw_log, lambda d: True):
        assert set(d) >= {"time", "level", "pid", "message", "method", "path", "name", "status", "bytes_in",
                          "bytes_out", "duration_ms", "remote"}
        assert d["level"] == "INFO" and d["time"].endswith("Z")
    # each node logged the internal write of its replica (N=3): a small file travels in a batch of
    # the gateway's small PUTs (cluster/gateway/smallput.py)
    for svc in c.services:
        assert wait_until(lambda svc=svc: access(svc.log_path, lambda d: d["method"] == "POST"
                                                 and d["path"] == "/_cluster/store"
                                                 and d["status"] == 200 and d["bytes_in"] > len(body)), 5)

    # No header value, token or cluster secret in any log; the query string is not logged.
    for path in [gw_log] + [s.log_path for s in c.services]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert TOKEN not in text and SECRET not in text and "last_modified" not in text, path


def test_formatters_mask_url_credentials_and_route_labels_are_bounded():
    import logging

    from filetracker.server.observe import JsonFormatter, TextFormatter, file_name, route_of

    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "fallback %s down", ("http://u:pw@old:9999/",),
                               None)
    assert "u:pw" not in TextFormatter().format(record)
    assert json.loads(JsonFormatter().format(record))["message"] == "fallback http://***@old:9999/ down"
    assert [route_of(p) for p in ("/", "/files/a/b", "/list/", "/version/", "/metrics", "/status",
                                  "/_cluster/files/a", "/_cluster/ring", "/_cluster/zzz", "/whatever/x")] == \
        ["root", "files", "list", "version", "metrics", "status", "_cluster/files", "_cluster/ring",
         "_cluster/other", "other"]
    assert file_name("/files/a%20b/c") == "/a b/c" and file_name("/_cluster/files/x") == "/x"
    assert file_name("/list/a") is None


def test_error_lines_drop_the_query_string_and_cut_long_paths(ops_cluster):
    """The reason line beside the access line logged the whole request target: its query string
    (the README says none is logged) and, for a 414, a 20 KB URI in two lines of every service."""
    c = ops_cluster(nodes=1, replicas=1, gateway=True, gateway_args=["--log-level", "INFO"])
    gw = c.gateway_url
    r = requests.put(gw + "/files/logs/bad", params={"last_modified": "garbage", "token": TOKEN}, data=b"x",
                     timeout=30)
    assert r.status_code == 400
    long_name = "/logs/" + "x" * 3000
    assert requests.get(gw + "/files" + long_name, timeout=30).status_code == 400
    assert requests.get(gw + "/files/" + "/".join(["u" * 200] * 100), timeout=30).status_code == 414

    def logged():
        with open(c.gateway.log_path, encoding="utf-8") as f:
            return f.read()

    assert wait_until(lambda: "(3012 characters)" in logged(), 15), logged()[-3000:]
    text = logged()
    assert TOKEN not in text and "token=" not in text
    assert "x" * 1200 not in text and "u" * 200 + "/" + "u" * 200 + "/" + "u" * 200 + "/" + "u" * 200 + "/" \
        + "u" * 200 + "/" + "u" * 200 not in text
    assert "(20106 characters)" in text


def test_an_upload_cut_by_its_client_leaves_a_log_line(ops_cluster):
    """No answer goes out, so there is no access line: an upload cut by its client left no trace."""
    c = ops_cluster(nodes=1, replicas=1, gateway=True, gateway_args=["--log-level", "INFO"])
    host, port = c.gateway_url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"PUT /files/logs/cut?last_modified=Sun%2C%2029%20Nov%202026%2010%3A00%3A00%20GMT HTTP/1.1\r\n"
                  b"Host: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
        time.sleep(0.5)

    def logged():
        with open(c.gateway.log_path, encoding="utf-8") as f:
            return f.read()

    assert wait_until(lambda: "PUT /files/logs/cut: the client closed the connection after 50000 of 100000 "
                              "body bytes" in logged(), 15), logged()[-2000:]
