"""filetracker.server.offload.DiskExecutor: results, errors and cancellation of ``run``."""

import asyncio
import threading
import time

import pytest

from filetracker.server.offload import DiskExecutor


@pytest.fixture
def executor():
    ex = DiskExecutor(max_workers=4, thread_name_prefix="test-disk")
    yield ex
    ex.shutdown(wait=True)


def test_run_returns_results_computed_on_worker_threads(executor):
    async def main():
        return await asyncio.gather(*(executor.run(lambda i=i: (i * i, threading.current_thread().name))
                                      for i in range(200)))

    out = asyncio.run(main())
    assert [v for v, _ in out] == [i * i for i in range(200)]
    assert all(name.startswith("test-disk") for _, name in out)


def test_run_passes_arguments_and_raises_the_job_exception(executor):
    def job(a, b, *, c):
        if c:
            raise KeyError(a + b)
        return a + b

    async def main():
        assert await executor.run(job, 1, 2, c=False) == 3
        with pytest.raises(KeyError, match="5"):
            await executor.run(job, 2, 3, c=True)

    asyncio.run(main())


def test_a_cancelled_waiter_does_not_break_later_runs(executor):
    gate = threading.Event()

    async def main():
        slow = asyncio.ensure_future(executor.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        slow.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return await executor.run(lambda: "after")

    assert asyncio.run(main()) == "after"


def test_two_loops_share_one_executor(executor):
    results = {}

    def loop_main(key):
        async def main():
            return await asyncio.gather(*(executor.run(time.sleep, 0.001) for _ in range(50)))

        results[key] = len(asyncio.run(main()))

    threads = [threading.Thread(target=loop_main, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {0: 50, 1: 50, 2: 50}


def test_run_in_executor_still_works(executor):
    async def main():
        return await asyncio.get_running_loop().run_in_executor(executor, sum, [1, 2, 3])

    assert asyncio.run(main()) == 6
