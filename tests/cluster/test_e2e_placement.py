"""Issue 3 acceptance 2: 1,000 files through the gateway to 4 nodes (N=3) land on exactly their owners."""

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date, wait_until

FILES = 1000


def test_thousand_files_on_exactly_their_owners(tmp_path):
    c = TestCluster(tmp_path, nodes=4, replicas=3).start()
    try:
        names = ["/place/%03d/f%d.txt" % (i % 37, i) for i in range(FILES)]
        sessions = {}

        def put(name):
            import threading
            s = sessions.setdefault(threading.get_ident(), requests.Session())
            r = s.put(c.gw + "/files" + name, params={"last_modified": http_date(BASE_VERSION)},
                      data=name.encode(), timeout=30)
            return r.status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(put, names))
        assert codes.count(200) == FILES, set(codes)

        expected = {u: {n for n in names if u in {o.url for o in c.ring.owners(n)}} for u in c.node_urls}

        def placed():
            held = {u: set(c.node_listing(u, "/place")) for u in c.node_urls}
            return held if held == expected else None
        held = wait_until(placed, 20, interval=0.5)
        if held is None:
            held = {u: set(c.node_listing(u, "/place")) for u in c.node_urls}
            for u in c.node_urls:
                print(u, "missing", len(expected[u] - held[u]), "extra", len(held[u] - expected[u]))
        assert held == expected
        print("files per node:", {u[-5:]: len(v) for u, v in held.items()})
        for n in names[:50]:
            assert sum(n in held[u] for u in c.node_urls) == 3
    finally:
        c.stop()
