"""Issue 3 acceptance 3: 1 GiB up and down through the gateway with bounded memory everywhere."""

import hashlib
import os
import time

import pytest
import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date

SIZE = 1 << 30
BLOCK = 1 << 20
LIMIT_KIB = 100 * 1024


@pytest.mark.slow
def test_one_gib_through_gateway_bounded_rss(tmp_path):
    c = TestCluster(tmp_path, nodes=3, gateway_args=["--timeout", "10"]).start()
    try:
        block = os.urandom(BLOCK)

        def gen():
            for i in range(SIZE // BLOCK):
                yield block[i % 251:] + block[:i % 251]
        want = hashlib.sha256()
        for chunk in gen():
            want.update(chunk)

        t0 = time.monotonic()
        r = requests.put(c.gw + "/files/big/1gib.bin", params={"last_modified": http_date(BASE_VERSION)},
                         data=gen(), timeout=600)
        up = time.monotonic() - t0
        assert r.status_code == 200, (r.status_code, r.headers, c.logs())

        t0 = time.monotonic()
        got = hashlib.sha256()
        n = 0
        with requests.get(c.gw + "/files/big/1gib.bin", stream=True, timeout=600) as r:
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == SIZE
            for chunk in r.iter_content(BLOCK):
                got.update(chunk)
                n += len(chunk)
        down = time.monotonic() - t0
        assert n == SIZE and got.hexdigest() == want.hexdigest()

        peaks = {"gateway": c.gateways[0].peak_rss_kib()}
        for i, node in enumerate(c.nodes):
            peaks["node%d" % i] = node.peak_rss_kib()
        print("\n1 GiB through the gateway: upload %.1f s (%.0f MiB/s), download %.1f s (%.0f MiB/s)"
              % (up, 1024 / up, down, 1024 / down))
        print("peak RSS (VmHWM): " + ", ".join("%s %.1f MiB" % (k, v / 1024) for k, v in peaks.items()))
        for name, kib in peaks.items():
            assert kib is not None and kib < LIMIT_KIB, (name, kib)
    finally:
        c.stop()
