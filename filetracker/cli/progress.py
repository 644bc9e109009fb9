"""Progress bars for transfers: a tqdm bar on standard error, only on a terminal."""

import sys

#: Transfers smaller than this get no bar (it would only flicker).
DEFAULT_THRESHOLD = 8 << 20


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def make_progress_factory(stream=None, threshold=DEFAULT_THRESHOLD, force=False):
    """A ``progress_factory(total, description)`` for :class:`RemoteDataStore`.

    Returns a tqdm bar (bytes, on ``stream``, default standard error) when
    ``stream`` is a terminal (or ``force``) and ``total`` is unknown or at
    least ``threshold`` bytes; otherwise an object that does nothing.
    """
    stream = stream or sys.stderr

    def factory(total, description):
        interactive = force or (hasattr(stream, "isatty") and stream.isatty())
        if not interactive or (total is not None and total < threshold):
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, desc=description[-40:], unit="B", unit_scale=True, unit_divisor=1024,
                    file=stream, leave=False, dynamic_ncols=True)

    return factory
