"""Which nodes the gateway reads last: cluster/gateway/latency.py's rules, with exact values."""

import asyncio

import pytest

from cluster.gateway import latency as lat
from cluster.gateway.latency import ReplicaLatency, probe_forever


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Node:
    def __init__(self, url):
        self.url = url

    def __repr__(self):
        return self.url


def tracker(**means):
    """A tracker with two samples per node of the given seconds (keyword: url)."""
    clock = Clock()
    t = ReplicaLatency(clock)
    for _ in range(2):
        for url, seconds in means.items():
            t.observe(url, seconds)
    return t, clock


def test_constants_are_what_the_docs_say():
    assert (lat.ALPHA, lat.MIN_SAMPLES, lat.SLOW_FLOOR, lat.SLOW_FACTOR) == (0.3, 2, 0.05, 4.0)
    assert (lat.STALE_SECONDS, lat.PROBE_SECONDS) == (30.0, 1.0)


def test_the_mean_starts_at_the_first_sample_then_weighs_the_newest_by_alpha():
    t = ReplicaLatency(Clock())
    assert t.mean("a") is None
    t.observe("a", 0.3)
    assert t.mean("a") == 0.3
    t.observe("a", 0.0)
    assert t.mean("a") == pytest.approx(0.21)
    t.observe("a", 0.1)
    assert t.mean("a") == pytest.approx(0.177)


def test_a_node_far_slower_than_the_others_is_slow_after_two_samples():
    clock = Clock()
    t = ReplicaLatency(clock)
    t.observe("a", 0.002)
    t.observe("b", 0.002)
    t.observe("c", 0.3)
    assert t.slow == frozenset()  # one sample is not enough
    t.observe("c", 0.3)
    assert t.slow == frozenset({"c"})


@pytest.mark.parametrize("seconds, fastest_other, slow", [
    (0.049, 0.001, False),   # under the floor: loopback jitter is never "slow"
    (0.051, 0.001, True),
    (0.1, 0.03, False),      # 3.3x the fastest other: not slow
    (0.1, 0.02, True),       # 5x
    (0.1, 0.025, False),     # exactly 4x is not more than 4x
])
def test_slow_needs_both_the_floor_and_the_factor(seconds, fastest_other, slow):
    t, _ = tracker(a=fastest_other, b=fastest_other * 3, c=seconds)
    assert ("c" in t.slow) is slow


def test_the_yardstick_is_the_fastest_other_node():
    t, _ = tracker(a=0.01, b=0.2, c=0.3)
    assert t.slow == frozenset({"b", "c"})
    t, _ = tracker(a=0.1, b=0.2, c=0.3)
    assert t.slow == frozenset()


def test_a_lone_node_is_never_slow():
    t, _ = tracker(a=5.0)
    assert t.slow == frozenset()


def test_others_without_recent_samples_are_no_yardstick():
    t, clock = tracker(a=0.002, c=0.3)
    assert t.slow == frozenset({"c"})
    clock.now += lat.STALE_SECONDS - 0.1
    t.observe("c", 0.3)
    assert t.slow == frozenset({"c"})
    clock.now += 0.2  # a's last sample is now 30 s old: nothing to compare c with
    t.observe("c", 0.3)
    assert t.slow == frozenset()


def test_fast_probes_bring_a_slow_node_back_after_six():
    t, _ = tracker(a=0.002, b=0.002, c=0.3)
    means = []
    for _ in range(6):
        assert t.slow == frozenset({"c"})
        t.observe("c", 0.002)
        means.append(round(t.mean("c"), 6))
    assert means == [0.2106, 0.14802, 0.104214, 0.07355, 0.052085, 0.037059]
    assert t.slow == frozenset()


def test_fast_first_moves_slow_nodes_last_keeping_the_order():
    t, _ = tracker(a=0.002, b=0.3, c=0.002, d=0.4)
    nodes = [Node(u) for u in "abcd"]
    assert [n.url for n in t.fast_first(nodes)] == ["a", "c", "b", "d"]
    quiet, _ = tracker(a=0.002, b=0.002)
    assert quiet.fast_first(nodes) is nodes  # nothing slow: the same list, no copy


def test_forget_drops_removed_nodes_and_their_marks():
    t, _ = tracker(a=0.002, b=0.002, c=0.3)
    t.forget(["a", "b"])
    assert t.slow == frozenset() and t.mean("c") is None and t.mean("a") == 0.002


def test_snapshot_for_status_and_metrics():
    t, _ = tracker(a=0.002, c=0.3)
    assert t.snapshot() == {"a": {"ms": 2.0, "slow": False}, "c": {"ms": 300.0, "slow": True}}


def test_probes_go_only_to_slow_nodes_and_their_failures_do_not_stop_the_loop():
    t, _ = tracker(a=0.002, b=0.002, c=0.3)
    asked = []

    def lookup(url, name):
        asked.append((url, name))
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(OSError("refused"))  # a failed probe: liveness marks handle it
        return fut

    async def run():
        task = asyncio.ensure_future(probe_forever(t, lookup, interval=0.01))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert len(asked) >= 3
    assert set(asked) == {("c", lat.PROBE_NAME)}
