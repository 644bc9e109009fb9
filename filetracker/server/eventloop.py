"""Which asyncio event loop the servers run on.

``run(coro)`` is ``asyncio.run`` with the loop chosen by ``FILETRACKER_EVENT_LOOP``:

* ``auto`` (default): uvloop when it is installed (``pip install 'filetracker[fast]'``),
  else the standard loop;
* ``uvloop``: uvloop, and an error naming the missing package when it is not installed;
* ``asyncio``: the standard loop.

Why: Tornado runs on any asyncio loop, and uvloop's C transports and callback
scheduling take a large share of the per-request CPU of small requests away
(see bench/README.md for the figures).  Nothing else differs between the loops.
"""

import asyncio
import os
import sys

ENV = "FILETRACKER_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The event loop named in FILETRACKER_EVENT_LOOP cannot be used."""


def loop_factory(choice=None):
    """The ``new_event_loop`` callable for ``choice`` (default: the environment), or None for asyncio's."""
    choice = (choice or os.environ.get(ENV) or "auto").strip().lower()
    if choice not in CHOICES:
        raise EventLoopError("%s=%s: expected one of %s" % (ENV, choice, ", ".join(CHOICES)))
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopError("%s=uvloop but uvloop is not installed (pip install uvloop)" % ENV) from None
        return None
    return uvloop.new_event_loop


def loop_name(choice=None):
    """``"uvloop"`` or ``"asyncio"``: what ``run`` would use."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(coro, choice=None):
    """Run ``coro`` to completion on a new loop of the configured kind (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(coro)


def check_or_exit(prog):
    """Validate the environment's choice at startup: on error print one line and exit 2."""
    try:
        loop_factory()
    except EventLoopError as e:
        print("%s: %s" % (prog, e), file=sys.stderr)
        raise SystemExit(2) from None
