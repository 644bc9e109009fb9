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


def rounds(t, count, **seconds):
    """``count`` rounds of one answer per node (keyword: url), in the keywords' order."""
    for _ in range(count):
        for url, s in seconds.items():
            t.observe(url, s)


def slow_c(clock=None):
    """A tracker where a and b answer in 2 ms and c has just been judged slow (300 ms)."""
    clock = clock or Clock()
    t = ReplicaLatency(clock)
    rounds(t, 3, a=0.002, b=0.002, c=0.3)
    assert t.slow == frozenset({"c"})
    return t, clock


def seconds_to_clear(t, clock, url="c", answer=0.002):
    """Prompt answers from ``url``, one a second, until it is fast again: how many seconds it took."""
    started = clock.now
    while url in t.slow:
        assert clock.now - started <= 2 * lat.MAX_HOLD_SECONDS, "never cleared"
        t.observe("a", 0.002)  # the yardstick stays fresh
        t.observe(url, answer)
        clock.now += 1.0
    return clock.now - 1.0 - started


def test_constants_are_what_the_docs_say():
    assert (lat.ALPHA, lat.RUN, lat.SLOW_FLOOR, lat.SLOW_FACTOR, lat.CLEAR_FACTOR) == (0.3, 3, 0.05, 4.0, 2.0)
    assert (lat.HOLD_SECONDS, lat.MAX_HOLD_SECONDS, lat.RELAPSE_SECONDS) == (2.0, 60.0, 30.0)
    assert (lat.STALE_SECONDS, lat.PROBE_SECONDS) == (30.0, 1.0)


def test_the_mean_starts_at_the_first_answer_then_weighs_the_newest_by_alpha():
    t = ReplicaLatency(Clock())
    assert t.mean("a") is None
    t.observe("a", 0.3)
    assert t.mean("a") == 0.3
    t.observe("a", 0.0)
    assert t.mean("a") == pytest.approx(0.21)
    t.observe("a", 0.1)
    assert t.mean("a") == pytest.approx(0.177)


def test_three_late_answers_in_a_row_make_a_node_slow():
    t = ReplicaLatency(Clock())
    rounds(t, 2, a=0.002, b=0.002, c=0.3)
    assert t.slow == frozenset()  # two are a busy moment
    t.observe("c", 0.3)
    assert t.slow == frozenset({"c"})


def test_an_answer_that_is_not_late_restarts_the_run():
    t = ReplicaLatency(Clock())
    rounds(t, 1, a=0.002, b=0.002)
    for s in (0.3, 0.3, 0.01, 0.3, 0.3):
        t.observe("c", s)
    assert t.slow == frozenset()
    t.observe("c", 0.3)
    assert t.slow == frozenset({"c"})


@pytest.mark.parametrize("seconds, others, slow", [
    (0.049, 0.001, False),   # under the floor: loopback jitter is never late
    (0.051, 0.001, True),
    (0.1, 0.03, False),      # 3.3x the others' median: not late
    (0.1, 0.02, True),       # 5x
    (0.1, 0.025, False),     # exactly 4x is not more than 4x
])
def test_late_needs_both_the_floor_and_the_factor(seconds, others, slow):
    t = ReplicaLatency(Clock())
    rounds(t, 1, a=others, b=others)  # one answer each: the median is exactly ``others``
    rounds(t, 3, c=seconds)
    assert ("c" in t.slow) is slow


def test_the_yardstick_is_the_median_of_the_others_so_one_very_fast_node_flags_no_one():
    t = ReplicaLatency(Clock())
    rounds(t, 5, a=0.01, b=0.05, c=0.2)
    # b against median(a, c) = 105 ms: not late; c against median(a, b) = 30 ms: late
    assert t.slow == frozenset({"c"})
    assert t.yardstick("c") == pytest.approx(0.03)
    assert t.yardstick("a") == pytest.approx(0.05)  # c, slow, is no yardstick


def test_slow_nodes_are_left_out_of_the_yardstick():
    t = ReplicaLatency(Clock())
    rounds(t, 3, a=0.002, b=0.3, c=0.002)
    assert t.slow == frozenset({"b"})
    rounds(t, 3, c=0.3)  # against a alone (with b, the median would be 151 ms: not late)
    assert t.slow == frozenset({"b", "c"})


def test_when_most_nodes_are_slow_that_is_the_norm():
    t = ReplicaLatency(Clock())
    rounds(t, 5, a=0.002, b=0.3, c=0.3)  # b and c each against median(a, the other) = 151 ms
    assert t.slow == frozenset()


def test_a_slow_node_comes_back_after_three_prompt_answers_and_its_hold():
    t, clock = slow_c()
    rounds(t, 5, c=0.002)
    assert t.slow == frozenset({"c"})  # prompt, but held for 2 s
    clock.now = 1001.5
    t.observe("c", 0.002)
    assert t.slow == frozenset({"c"})
    clock.now = 1002.0
    t.observe("c", 0.002)
    assert t.slow == frozenset()


def test_answers_between_prompt_and_late_keep_a_node_as_it_is():
    t = ReplicaLatency(Clock())
    rounds(t, 1, a=0.02, b=0.02)  # the yardstick: 20 ms; late over 80 ms, prompt up to 50 ms
    rounds(t, 10, c=0.07)
    assert t.slow == frozenset()
    rounds(t, 3, c=0.2)
    assert t.slow == frozenset({"c"})
    t._clock.now += 10
    rounds(t, 10, c=0.07)  # not late, not prompt: still slow
    assert t.slow == frozenset({"c"})
    rounds(t, 3, c=0.04)  # 2x the yardstick is prompt
    assert t.slow == frozenset()


def test_a_relapse_within_30_s_doubles_the_hold_up_to_60_s():
    t, clock = slow_c()
    holds = []
    for _ in range(7):
        holds.append(seconds_to_clear(t, clock))
        clock.now += 5.0  # slow again 5 s after it came back
        rounds(t, 3, a=0.002, c=0.3)
    assert holds == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert seconds_to_clear(t, clock) == 60.0
    clock.now += lat.RELAPSE_SECONDS  # well a while: the hold starts over
    rounds(t, 3, a=0.002, c=0.3)
    assert t.slow == frozenset({"c"})
    assert seconds_to_clear(t, clock) == 2.0


def test_runs_do_not_stretch_across_a_silence():
    t = ReplicaLatency(Clock())
    rounds(t, 1, a=0.002, b=0.002)
    rounds(t, 2, c=0.3)
    t._clock.now += lat.STALE_SECONDS  # timeouts, the node down, restarted
    rounds(t, 1, a=0.002, b=0.002)
    t.observe("c", 0.3)
    assert t.slow == frozenset()  # one late answer after the silence, not three in a row
    rounds(t, 2, c=0.3)
    assert t.slow == frozenset({"c"})


def test_without_a_yardstick_an_answer_over_the_floor_only_moves_the_mean():
    t, clock = slow_c()
    clock.now += lat.STALE_SECONDS
    rounds(t, 2, c=0.002)
    before = t.mean("c")
    t.observe("c", 0.06)  # not judged: the prompt run goes on
    assert t.mean("c") == pytest.approx(0.3 * 0.06 + 0.7 * before)
    t.observe("c", 0.002)  # the third prompt answer in a row (the hold is long over)
    assert t.slow == frozenset()


def test_without_a_recent_yardstick_a_slow_node_stays_slow_unless_under_the_floor():
    t, clock = slow_c()
    clock.now += lat.STALE_SECONDS  # a and b have not answered for 30 s
    assert t.yardstick("c") is None
    rounds(t, 5, c=0.3)
    assert t.slow == frozenset({"c"})
    rounds(t, 3, c=0.049)
    assert t.slow == frozenset()


def test_a_lone_node_is_never_slow():
    t = ReplicaLatency(Clock())
    rounds(t, 10, a=5.0)
    assert t.slow == frozenset() and t.yardstick("a") is None


def test_forget_drops_removed_nodes_and_their_marks():
    t, _ = slow_c()
    t.forget(u for u in ("a", "b"))
    assert t.slow == frozenset() and t.mean("c") is None and t.mean("a") == pytest.approx(0.002)


def test_fast_first_moves_slow_nodes_last_keeping_the_order():
    t = ReplicaLatency(Clock())
    rounds(t, 3, a=0.002, b=0.3, c=0.002, d=0.4)
    assert t.slow == frozenset({"b", "d"})
    nodes = [Node(u) for u in "abcd"]
    assert [n.url for n in t.fast_first(nodes)] == ["a", "c", "b", "d"]
    assert t.fast_first(["d", "c", "b", "a"], key=lambda u: u) == ["c", "a", "d", "b"]
    assert ReplicaLatency(Clock()).fast_first(nodes) is nodes  # nothing slow: the same list, no copy


def test_snapshot_for_status():
    t = ReplicaLatency(Clock())
    rounds(t, 1, a=0.002, c=0.3)
    assert t.snapshot() == {"a": {"ms": 2.0, "slow": False}, "c": {"ms": 300.0, "slow": False}}
    rounds(t, 2, a=0.002, c=0.3)
    assert t.snapshot() == {"a": {"ms": 2.0, "slow": False}, "c": {"ms": 300.0, "slow": True}}


def run_probes(t, lookup, seconds=None, live=("a", "b", "c"), until=None):
    """Run :func:`probe_forever` (a round every 10 ms, ``live`` the members not marked down)
    for ``seconds``, or until ``until()`` holds (at most 10 s: a busy machine may run far fewer
    rounds in a given time), then cancel it and whatever probes it left hanging."""
    async def run():
        task = asyncio.ensure_future(probe_forever(t, lookup, lambda: live, interval=0.01))
        if until is None:
            await asyncio.sleep(seconds)
        else:
            deadline = asyncio.get_running_loop().time() + 10
            while not until() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for other in asyncio.all_tasks() - {asyncio.current_task()}:
            other.cancel()

    asyncio.run(run())


def test_probes_go_only_to_slow_nodes_and_their_failures_do_not_stop_the_loop():
    t, _ = slow_c()
    asked = []

    def lookup(url, name):
        asked.append((url, name))
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(OSError("refused"))  # a failed probe: liveness marks handle it
        return fut

    run_probes(t, lookup, until=lambda: len(asked) >= 3)
    assert len(asked) >= 3
    assert set(asked) == {("c", lat.PROBE_NAME)}
    asked.clear()
    run_probes(t, lookup, 0.1, live=("a", "b"))  # c marked down: the liveness probe's
    assert asked == []


def test_quiet_live_members_are_probed_so_there_is_a_yardstick():
    clock = Clock()
    t = ReplicaLatency(clock)
    rounds(t, 1, a=0.002, b=0.002)
    clock.now += lat.STALE_SECONDS / 2 - 0.5
    t.observe("b", 0.002)
    clock.now += 0.5
    assert t.quiet(["a", "b", "c"]) == ["a", "c"]  # a: 15 s without an answer; c: never
    asked = []

    async def lookup(url, name):
        asked.append(url)

    run_probes(t, lookup, until=lambda: {"a", "c"} <= set(asked))
    assert set(asked) == {"a", "c"}


def test_a_hung_probe_does_not_hold_back_the_next_rounds():
    t = ReplicaLatency(Clock())
    rounds(t, 3, a=0.002, b=0.3, c=0.002)
    rounds(t, 3, c=0.3)
    assert t.slow == frozenset({"b", "c"})
    asked = []

    async def lookup(url, name):
        asked.append(url)
        if url == "b":
            await asyncio.sleep(3600)  # hung until its batch's timeout (here: the cancel below)
        raise OSError("refused")

    run_probes(t, lookup, until=lambda: asked.count("c") >= 5)
    assert asked.count("c") >= 5  # one a round, although b's first probe never answered
