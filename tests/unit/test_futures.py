"""mark_retrieved: a dropped failed future is not reported as "never retrieved"."""

import asyncio
import gc

from filetracker.server.futures import mark_retrieved


def _unretrieved_reports(with_callback):
    reports = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reports.append(ctx["message"]))
        fut = asyncio.get_running_loop().create_future()
        if with_callback:
            fut.add_done_callback(mark_retrieved)
        fut.set_exception(OSError("disk gone"))
        await asyncio.sleep(0)  # the callback runs
        del fut
        gc.collect()

    asyncio.run(main())
    return reports


def test_a_marked_failure_is_not_reported_when_dropped():
    assert _unretrieved_reports(with_callback=True) == []


def test_an_unmarked_failure_is_reported_when_dropped():
    # the control: without the callback asyncio does complain
    assert _unretrieved_reports(with_callback=False) == ["Future exception was never retrieved"]


def test_a_cancelled_future_is_left_alone():
    async def main():
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(mark_retrieved)
        fut.cancel()
        await asyncio.sleep(0)
        return fut.cancelled()

    assert asyncio.run(main())
