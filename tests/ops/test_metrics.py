"""``/metrics`` of the gateway, the nodes and the single server, scraped and parsed with prometheus-client.

Counters must move by exactly what the test did; the cluster gauges must
describe the cluster (ring, liveness, disk usage, background passes).
"""

import os

import requests
from prometheus_client.parser import text_string_to_metric_families

from filetracker.httpdate import format_version
from tests.ops.conftest import sample, scrape, wait_until
from tests.support.procs import Service, free_port, script

VERSION = format_version(1_700_000_000)


def _put(base, name, body):
    r = requests.put(base + "/files" + name, params={"last_modified": VERSION}, data=body, timeout=30)
    assert r.status_code == 200, (r.status_code, r.headers, r.text)


def test_gateway_and_node_counters_move(ops_cluster):
    c = ops_cluster(nodes=3, gateway=True)
    gw = c.gateway_url
    before_gw = scrape(gw)
    before_node = scrape(c.urls[0])
    bodies = {"/metrics/f%d" % i: os.urandom(1000 + 17 * i) for i in range(4)}
    bodies["/metrics/big"] = os.urandom(6 << 20)  # a first piece, then relayed: both counted as sent
    for name, body in bodies.items():
        _put(gw, name, body)
    # Every node receives every replica (N=3); the third one may still be in flight after W=2.
    # Waited for before reading: a read that met a lagging replica would repair it (one more
    # PUT and 6 MiB more on node 0's counters below).
    names = list(bodies)
    assert wait_until(lambda: all(c.record(i, n) is not None for i in range(3) for n in names), 30)
    for name, body in bodies.items():
        r = requests.get(gw + "/files" + name, timeout=30)
        assert r.status_code == 200 and r.content == body
    missing = requests.get(gw + "/files/metrics/none", timeout=30)
    assert missing.status_code == 404

    after_gw = scrape(gw)

    def delta(name, **labels):
        return sample(after_gw, name, **labels) - sample(before_gw, name, **labels)

    assert delta("filetracker_http_requests_total", method="PUT", status="200", route="files") == 5
    assert delta("filetracker_http_requests_total", method="GET", status="200", route="files") == 5
    assert delta("filetracker_http_requests_total", method="GET", status="404", route="files") == 1
    assert delta("filetracker_http_request_duration_seconds_count", method="PUT", route="files") == 5
    assert delta("filetracker_http_request_duration_seconds_sum", method="PUT", route="files") > 0
    assert delta("filetracker_http_received_bytes_total", method="PUT") == sum(map(len, bodies.values()))
    assert delta("filetracker_http_sent_bytes_total", method="GET") == \
        sum(map(len, bodies.values())) + len(missing.content) + before_gw.body_bytes
    # the first scrape itself was counted
    assert sample(after_gw, "filetracker_http_requests_total", method="GET", status="200",
                  route="metrics") >= 1
    # cluster gauges of the gateway
    assert sample(after_gw, "filetracker_gateway_ring_epoch") == 1
    assert sample(after_gw, "filetracker_gateway_ring_members") == 3
    assert sample(after_gw, "filetracker_gateway_ring_replicas") == 3
    assert sample(after_gw, "filetracker_gateway_nodes_down") == 0
    for url in c.urls:
        assert sample(after_gw, "filetracker_gateway_node_up", node=url) == 1
    assert sample(after_gw, "process_resident_memory_bytes") > 0

    after_node = scrape(c.urls[0])

    def node_delta(name, **labels):
        return sample(after_node, name, **labels) - sample(before_node, name, **labels)

    # the large file streamed in a PUT of its own; the four small ones in batches (POST /_cluster/store)
    assert node_delta("filetracker_http_requests_total", method="PUT", status="200", route="_cluster/files") == 1
    assert node_delta("filetracker_http_received_bytes_total", method="PUT") == len(bodies["/metrics/big"])
    assert 1 <= node_delta("filetracker_http_requests_total", method="POST", status="200",
                           route="_cluster/store") <= 4
    assert node_delta("filetracker_node_batched_files_total") == 4
    assert node_delta("filetracker_http_received_bytes_total", method="POST") > \
        sum(len(b) for n, b in bodies.items() if n != "/metrics/big")

    # Node 2 is scraped for the first time now, so its disk gauges are fresh (they are cached 5 s).
    node2 = scrape(c.urls[2])
    assert sample(node2, "filetracker_node_store_files") == 5
    assert sample(node2, "filetracker_node_store_bytes") == sum(map(len, bodies.values()))
    assert sample(node2, "filetracker_node_disk_free_bytes") > 0
    assert sample(node2, "filetracker_node_ring_epoch") == 1
    assert sample(node2, "filetracker_node_ring_members") == 3
    assert sample(node2, "filetracker_node_partitions_owned") == 1024
    assert sample(node2, "filetracker_node_partitions_foreign") == 0
    assert sample(node2, "filetracker_node_pending_handoff_records") == 0

    # An anti-entropy pass shows up in the replication gauges.
    passes = sample(scrape(c.urls[1]), "filetracker_node_task_passes_total", task="sync")
    c.run(1, "sync")
    node1 = scrape(c.urls[1])
    assert sample(node1, "filetracker_node_task_passes_total", task="sync") == passes + 1
    assert sample(node1, "filetracker_node_task_last_pass_failed", task="sync") == 0
    assert ("filetracker_node_sync_partitions_differing", ()) in node1
    assert sample(node1, "filetracker_node_sync_partitions_differing") == 0
    assert sample(node1, "filetracker_node_sync_partitions_transient") == 0
    assert sample(node1, "filetracker_node_sync_peers_down") == 0


def test_gateway_marks_a_killed_node_down_in_metrics(ops_cluster):
    c = ops_cluster(nodes=3, gateway=True)
    _put(c.gateway_url, "/metrics/k", b"x" * 100)
    c.kill9(1)
    # a few requests make the gateway notice (refused connection -> marked down)
    for i in range(4):
        _put(c.gateway_url, "/metrics/k%d" % i, b"y" * 10)
    samples = scrape(c.gateway_url)
    assert sample(samples, "filetracker_gateway_node_up", node=c.urls[1]) == 0
    assert sample(samples, "filetracker_gateway_nodes_down") == 1
    assert sample(samples, "filetracker_gateway_node_up", node=c.urls[0]) == 1


def test_single_server_metrics(tmp_path):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    svc = Service([script("filetracker-server"), "-d", str(tmp_path / "data"), "-p", str(port)],
                  str(tmp_path / "server.log"), ready_url=url + "/version/").start()
    try:
        before = scrape(url)
        _put(url, "/m/one", b"12345")
        assert requests.get(url + "/files/m/one", timeout=10).content == b"12345"
        big = os.urandom(3 << 20)  # its body goes out with sendfile: counted too
        _put(url, "/m/big", big)
        assert requests.get(url + "/files/m/big", timeout=10).content == big
        after = scrape(url)
        assert sample(after, "filetracker_http_requests_total", method="PUT", status="200", route="files") \
            - sample(before, "filetracker_http_requests_total", method="PUT", status="200",
                     route="files") == 2
        assert sample(after, "filetracker_http_sent_bytes_total", method="GET") \
            - sample(before, "filetracker_http_sent_bytes_total", method="GET") == 5 + len(big) + before.body_bytes
        assert ("filetracker_store_free_bytes", ()) in after
        # the access line of the PUT (text format, the default)
        assert wait_until(lambda: "PUT /files/m/one 200 in=5" in svc.log_tail(), 15), svc.log_tail()
    finally:
        svc.stop()


def test_metrics_need_a_read_token_when_access_control_is_on(tmp_path):
    from filetracker.auth import add_token

    auth = str(tmp_path / "auth.tokens")
    _, reader = add_token(auth, "prometheus", "read")
    _, scoped = add_token(auth, "grader", "read", prefix="/problems")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    svc = Service([script("filetracker-server"), "-d", str(tmp_path / "data"), "-p", str(port), "--auth-file", auth],
                  str(tmp_path / "server.log"), ready_url=url + "/version/").start()
    try:
        assert requests.get(url + "/metrics", timeout=10).status_code == 401
        assert requests.get(url + "/metrics", headers={"Authorization": "Bearer " + scoped},
                            timeout=10).status_code == 403
        r = requests.get(url + "/metrics", headers={"Authorization": "Bearer " + reader}, timeout=10)
        assert r.status_code == 200 and "filetracker_http_requests_total" in r.text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(r.text) for s in f.samples}
        assert sample(samples, "filetracker_http_requests_total", method="GET", status="401", route="metrics") == 1
    finally:
        svc.stop()
    assert reader not in svc.log_tail(100000) and scoped not in svc.log_tail(100000)
