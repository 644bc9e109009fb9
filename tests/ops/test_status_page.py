"""The gateway's ``/status`` page in headless Chromium: a node killed with SIGKILL shows as DOWN
within a few seconds.  The screenshots are kept under tests/artifacts/ops/ (or
``$FILETRACKER_TEST_ARTIFACTS/ops``)."""

import os
import re
import time

import msgpack
import pytest
import requests

from filetracker.httpdate import format_version
from tests.ops.conftest import artifacts_dir, chromium_binary, chromium_page

pytestmark = pytest.mark.skipif(chromium_binary() is None,
                                reason="chromium is not installed (scripts/setup.sh installs it when run as root)")


def _rows(dom):
    """``{node url: (state, row html)}`` of the nodes table."""
    rows = {}
    for m in re.finditer(r'<tr class="node (up|down)" data-node="([^"]+)">(.*?)</tr>', dom, re.S):
        rows[m.group(2)] = (m.group(1), m.group(3))
    return rows


def test_status_page_shows_a_killed_node_down(ops_cluster, tmp_path):
    c = ops_cluster(nodes=3, gateway=True)
    for i in range(3):
        r = requests.put(c.gateway_url + "/files/status/f%d" % i, params={"last_modified": format_version(1_700_000_000)},
                         data=b"z" * (1000 * (i + 1)), timeout=30)
        assert r.status_code == 200
    out = artifacts_dir()
    profile = str(tmp_path / "chromium-profile")
    page = c.gateway_url + "/status"

    dom = chromium_page(page, profile, screenshot=os.path.join(out, "status-page-all-up.png"))
    assert '<meta http-equiv="refresh"' in dom
    assert "3 of 3 nodes up" in dom
    ring = re.search(r'<table id="ring">.*?</table>', dom, re.S).group(0)
    assert "<td>1</td><td>1024 (2^10)</td><td>3</td><td>2</td><td>2</td>" in ring   # epoch, partitions, N, W, R
    rows = _rows(dom)
    assert sorted(rows) == sorted(c.urls)
    for url in c.urls:
        state, html = rows[url]
        assert state == "up" and '<td class="state">up</td>' in html
        assert "<td>3</td><td>5.9 KiB</td>" in html             # files, data size
        assert "GiB</td>" in html or "MiB</td>" in html         # disk free

    c.kill9(1)
    killed = time.monotonic()
    shot = os.path.join(out, "status-page-node-down.png")
    # "Within a few seconds" is about the page, not about how long Chromium takes to start on a
    # loaded machine: what counts is when the load that showed DOWN was started.
    while True:
        launched = time.monotonic() - killed
        dom = chromium_page(page, profile, screenshot=shot)
        state, html = _rows(dom)[c.urls[1]]
        if state == "down" or time.monotonic() - killed > 30:
            break
        time.sleep(0.2)
    assert state == "down", dom
    assert launched < 5, "a page load started %.1f s after the kill still showed the node up" % launched
    elapsed = time.monotonic() - killed
    assert '<td class="state">DOWN</td>' in html
    assert "2 of 3 nodes up; DOWN: %s" % c.urls[1] in dom
    assert _rows(dom)[c.urls[0]][0] == "up" and _rows(dom)[c.urls[2]][0] == "up"
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # A member being removed (the nodes' draining list, written by filetracker-admin remove-node) is marked.
    doc = msgpack.packb({"version": 1, "members": [{"id": c.urls[1], "url": c.urls[1]}]})
    for i in (0, 2):
        r = requests.put(c.urls[i] + "/_cluster/draining", data=doc, headers=c.headers(), timeout=10)
        assert r.status_code == 200, r.text
    time.sleep(1.1)  # the page's document is cached for a second
    nodes = {n["url"]: n for n in requests.get(page, params={"format": "json"}, timeout=10).json()["nodes"]}
    assert nodes[c.urls[1]]["leaving"] and not nodes[c.urls[1]]["up"]
    assert not nodes[c.urls[0]]["leaving"] and nodes[c.urls[0]]["up"]
    assert "%s (leaving)" % c.urls[1] in requests.get(page, timeout=10).text
    print("status page screenshots: %s (DOWN on the load started %.1f s after kill -9, rendered %.1f s after)"
          % (out, launched, elapsed))
