"""``filetracker-fuse``: the store mounted as a filesystem.

Modules, bottom to top:

- :mod:`.errnos`: filetracker errors and HTTP statuses to ``errno`` values;
- :mod:`.tree`: pure logic turning a (recursive) listing into directory entries;
- :mod:`.attrcache`: a small time-to-live cache (clock injectable, pure);
- :mod:`.singleflight`: one computation per key shared by concurrent callers;
- :mod:`.remote`: the read side of the HTTP protocol (HEAD, listing, ranged GET,
  whole GET into the Client's cache), every request bounded by ``--timeout``;
- :mod:`.handles`: open files: cached reads, ranged reads, staged writes;
- :mod:`.ops`: what the operation modules share (``Attr``, the errno wrapper);
- :mod:`.lookup`, :mod:`.reading`, :mod:`.writing`, :mod:`.namespace`: the
  FUSE operations, grouped by responsibility (mixins);
- :mod:`.readahead`: raising the mount's kernel read-ahead (best effort);
- :mod:`.fs`: the FUSE operations object (:class:`~.fs.FiletrackerFS`:
  state, lifecycle, handle table), composed of those mixins;
- :mod:`.main`: the command line, checks and daemonisation.
"""
