"""Issue 3 acceptance 4: concurrent writers through two gateways converge by the merge rule."""

import threading

import pytest
import requests

from filetracker.records import Record
from tests.cluster.test_e2e_support import BASE_VERSION, TestCluster, http_date, sha256, wait_until

V = BASE_VERSION


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TestCluster(tmp_path_factory.mktemp("conflicts"), nodes=3, gateways=2).start()
    yield c
    c.stop()


def concurrently(jobs):
    """Run ``jobs`` (callables) at once, released together by a barrier; return their results."""
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)

    def run(i):
        barrier.wait()
        results[i] = jobs[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def putter(gw, name, data, version):
    return lambda: requests.put(gw + "/files" + name, params={"last_modified": http_date(version)},
                                data=data, timeout=30).status_code


def converged(c, name, expect):
    def check():
        return all(c.node_record(u, name) == expect for u in c.node_urls)
    return wait_until(check, 15)


def test_different_versions_highest_wins_everywhere(cluster):
    name = "/conflict/diff"
    datas = [("writer %d " % i).encode() * 100 for i in range(8)]
    jobs = [putter(cluster.gateway_urls[i % 2], name, datas[i], V + i) for i in range(8)]
    assert concurrently(jobs) == [200] * 8
    expect = Record(name, V + 7, sha256(datas[7]), len(datas[7]), False)
    assert converged(cluster, name, expect), [cluster.node_record(u, name) for u in cluster.node_urls]
    for gw in cluster.gateway_urls:
        r = requests.get(gw + "/files" + name, timeout=10)
        assert r.content == datas[7]


def test_equal_versions_same_winner_everywhere(cluster):
    name = "/conflict/equal"
    datas = [("same version, content %d" % i).encode() for i in range(6)]
    jobs = [putter(cluster.gateway_urls[i % 2], name, datas[i], V) for i in range(6)]
    assert concurrently(jobs) == [200] * 6
    best = max(datas, key=sha256)  # the merge rule: the larger SHA-256 wins a tie
    expect = Record(name, V, sha256(best), len(best), False)
    assert converged(cluster, name, expect), [cluster.node_record(u, name) for u in cluster.node_urls]
    assert {requests.get(gw + "/files" + name, timeout=10).content for gw in cluster.gateway_urls} == {best}


def test_late_older_write_does_not_undo_delete(cluster):
    name = "/conflict/deleted"
    gw1, gw2 = cluster.gateway_urls
    assert putter(gw1, name, b"first", V)() == 200
    r = requests.delete(gw2 + "/files" + name, params={"last_modified": http_date(V + 10)}, timeout=10)
    assert r.status_code == 200
    # older writes racing through both gateways after the delete
    codes = concurrently([putter(gw1, name, b"late 1", V + 5), putter(gw2, name, b"late 2", V + 9)])
    assert codes == [409, 409]
    assert converged(cluster, name, Record.tombstone(name, V + 10))
    for gw in cluster.gateway_urls:
        assert requests.get(gw + "/files" + name, timeout=10).status_code == 404
