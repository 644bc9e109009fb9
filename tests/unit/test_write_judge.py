"""The gateway's verdict on a quorum write from the nodes' answers (cluster/gateway/writes.py judge)."""

from cluster.gateway.writes import judge
from filetracker.records import Record

A = Record("/f", 100, "a" * 64, 1)
B = Record("/f", 200, "b" * 64, 1)
DOWN = (None, "http://n1: no answer within the timeout")
FULL = (507, "http://n2: 507 no space left: 10 bytes free")
BAD = (400, "http://n3: 400 content SHA-256 x does not match the announced y")


def test_a_quorum_of_successes_is_200_with_the_winner():
    outcome = judge([A, B], [DOWN], 2, "file")
    assert (outcome.status, outcome.record) == (200, B)


def test_full_only_when_every_node_asked_is_full():
    assert judge([], [FULL, (507, "http://n4: 507 full")], 2, "file").status == 507
    # one full and one down: the write may go through once the other is back, so not "full"
    outcome = judge([A], [FULL, DOWN], 2, "file", retry_after="1")
    assert (outcome.status, outcome.headers) == (503, {"Retry-After": "1"})
    assert outcome.message == ("not enough replicas: 1 of 2 stored the file "
                               "(http://n2: 507 no space left: 10 bytes free; http://n1: no answer within the timeout)")


def test_a_bad_body_is_the_clients_error_whoever_else_failed_with_the_nodes_message():
    for failures in ([BAD], [DOWN, BAD], [BAD, DOWN]):
        outcome = judge([], failures, 2, "file")
        assert (outcome.status, outcome.message) == (400, "content SHA-256 x does not match the announced y")
    outcome = judge([], [DOWN, (413, "http://n3: 413 request body too large once decompressed")], 2, "file")
    assert (outcome.status, outcome.message) == (413, "request body too large once decompressed")
    assert judge([], [BAD, (413, "http://n3: 413 too large")], 2, "file").status == 503
