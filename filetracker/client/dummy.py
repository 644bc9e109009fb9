"""Re-export of :class:`filetracker.dummy.DummyClient` (the 2.x import path)."""

from filetracker.dummy import DummyClient

__all__ = ["DummyClient"]
