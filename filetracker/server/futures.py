"""Small helpers for asyncio futures and tasks shared by the servers."""


def mark_retrieved(future):
    """Done-callback: mark a failed future's exception as seen.

    For futures whose failure is reported elsewhere (awaited later, or a
    failure the owner learns another way): without it asyncio logs "exception
    was never retrieved" when such a future is dropped unawaited.
    """
    if not future.cancelled():
        future.exception()
