"""Name resolution and metadata: ``getattr``, ``readdir``, ``statfs``.

:class:`LookupOps` is a mixin of :class:`~.fs.FiletrackerFS` (it uses the
state set up there: ``attrs``/``listings`` caches, ``local_dirs``,
``writers``, ``handles``, ``remote``).  It resolves a path to an
:class:`~.ops.Attr` from, in order, open writers and mount-local folders, the
attribute cache, the parent's cached listing, and finally the server (one
listing with details, or HEAD); a server that is down for a name the
Client's cache holds is answered from that cache.  It also keeps the caches
up to date when the mount itself makes or removes a name
(``_note_exists`` / ``_note_gone``).  No request is made for a name whose
answer is cached and younger than ``attr_timeout``.
"""

import errno
import os
import stat

from filetracker.errors import (
    InvalidNameError,
    NotFoundError,
    RemoteError,
)
from filetracker.fuse import tree
from filetracker.fuse.errnos import FsError
from filetracker.fuse.handles import BufferReader, WriteBuffer
from filetracker.fuse.ops import _NEGATIVE, Attr, _fh_of, logger, operation
from filetracker.names import check_path

#: readdir fetches attributes of at most this many files (beyond: on demand).
MAX_PREFETCH = 5000


class LookupOps:
    """Resolve names and answer metadata operations (mixin of FiletrackerFS)."""

    @staticmethod
    def _check(path):
        try:
            return check_path(path)
        except InvalidNameError as e:
            raise FsError(errno.EINVAL, str(e)) from None

    def _require_writable(self):
        if self.read_only:
            raise FsError(errno.EROFS)

    def _list(self, folder):
        """Entries of ``folder`` from the (cached) recursive listing."""
        entries = self.listings.get(folder)
        if entries is not None:
            return entries

        def fetch():
            stamp = self.clock()  # entries are as old as the request, not its answer
            names, details, itself = self.remote.list_folder(folder)
            groups = tree.folder_entries(folder, names)
            for sub, sub_entries in groups.items():
                self.listings.put(sub, sub_entries, stamp=stamp)
            for rel, (version, size) in (details or {}).items():
                path = tree.join(folder, rel.strip("/"))
                if path not in groups:  # a name that is also a folder shows as the folder
                    self.attrs.put(path, Attr(tree.FILE, size, version), stamp=stamp)
            if itself is not None and not groups[folder] and folder != "/":
                # The empty listing said what the name itself is (see _stat_remote).
                attr = Attr(tree.FILE, itself[1], itself[0]) if itself else _NEGATIVE
                self.attrs.put(folder, attr, stamp=stamp)
            return groups[folder]

        return self._lists.do(folder, fetch)

    def _stat_remote(self, path):
        """Ask the server what ``path`` is: a file, a folder or nothing (cached).

        With a server that offers listings with details (or before we know),
        one listing of ``path`` answers it: not empty, a folder (whose files'
        attributes come with it, so ``ls -l`` of a folder not seen before
        costs that one request); empty, the answer's ``X-List-Self`` says
        whether a file of that name exists.  Otherwise (or when the answer
        does not say) a HEAD, and on 404 a listing decides between a folder
        and nothing.
        """
        try:
            attr = self._resolve_remote(path)
        except RemoteError as e:
            if e.status is not None and e.status < 500:
                raise
            attr = self._stat_cached(path)
            if attr is None:
                raise
            logger.warning("server unavailable (%s); serving %s from the cache", e, path)
            return attr  # not remembered: ask the server again next time
        self.attrs.put(path, attr)
        return attr

    def _resolve_remote(self, path):
        listed = False
        if self.remote.offers_details is not False:
            if path in self.local_dirs or self._list(path):
                return Attr(tree.DIR, 0, None)
            listed = self.remote.offers_details
            said = self.attrs.get(path)  # put there by the listing's X-List-Self
            if said is not None:
                return said
        try:
            version, size = self.remote.stat(path)
            return Attr(tree.FILE, size, version)
        except NotFoundError:
            if path in self.local_dirs or (not listed and self._list(path)):
                return Attr(tree.DIR, 0, None)
            return _NEGATIVE

    def _stat_cached(self, path):
        """The newest cached version of ``path`` (server down), or None.

        The Client's cache keeps ``files/<name>`` with the version as mtime;
        a cached folder there means a folder of the store.
        """
        try:
            st = os.stat(self.store.dir + path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return Attr(tree.DIR, 0, None)
        return Attr(tree.FILE, st.st_size, int(st.st_mtime))

    def _lookup(self, path):
        """The :class:`Attr` of ``path``; raises ENOENT when it does not exist."""
        if path == "/":
            return Attr(tree.DIR, 0, None)
        self._check(path)
        with self._lock:
            writer = self.writers.get(path)
            if writer is not None and not writer.unlinked:
                return Attr(tree.FILE, writer.size(), None)
            if path in self.local_dirs:
                return Attr(tree.DIR, 0, None)
        attr = self.attrs.get(path)
        if attr is None:
            parent, base = tree.parent_and_base(path)
            entries = self.listings.get(parent)
            if entries is not None:
                kind = entries.get(base)
                if kind is None:
                    raise FsError(errno.ENOENT)
                if kind == tree.DIR:
                    return Attr(tree.DIR, 0, None)
            attr = self._stats.do(path, lambda: self._stat_remote(path))
        if attr.kind is None:
            raise FsError(errno.ENOENT)
        return attr

    def _note_reported(self, path, attr):
        """Remember the size and version of the file ``path`` that ``getattr`` gives the kernel.

        The kernel keeps them for half of ``--attr-timeout`` (entries here live
        the whole of it, so they outlast the kernel's): ``open`` compares them
        with the version it resolves (see ``_kernel_size_behind``).
        """
        if attr.kind == tree.FILE:
            self.reported.put(path, (attr.size, attr.version))

    def _stat_dict(self, attr, writer=None):
        if attr.kind == tree.DIR:
            mode = stat.S_IFDIR | (0o555 if self.read_only else 0o755)
            mtime, size, nlink = self.mount_time, 0, 2
        else:
            mode = stat.S_IFREG | (0o444 if self.read_only else 0o644)
            size, nlink = attr.size, 1
            mtime = attr.version if attr.version is not None else self.mount_time
            if writer is not None:
                size, mtime = writer.size(), writer.mtime()
        ns = int(mtime * 1e9)
        return {
            "st_mode": mode, "st_nlink": nlink, "st_size": size,
            "st_uid": self.uid, "st_gid": self.gid,
            "st_mtime": ns, "st_ctime": ns, "st_atime": ns,
            "st_blksize": 128 * 1024, "st_blocks": (size + 511) // 512,
        }

    def _note_exists(self, path, attr):
        """Record a file or folder made through the mount in the caches."""
        self.attrs.put(path, attr)
        parent, base = tree.parent_and_base(path)
        while True:
            entries = self.listings.get(parent)
            if entries is not None:
                if entries.get(base) != tree.DIR:
                    entries[base] = attr.kind
            if parent == "/":
                break
            path, attr = parent, Attr(tree.DIR, 0, None)
            parent, base = tree.parent_and_base(parent)

    def _note_gone(self, path):
        self.attrs.put(path, _NEGATIVE)
        self.listings.pop_prefix(path)
        parent, base = tree.parent_and_base(path)
        entries = self.listings.get(parent)
        if entries is not None:
            entries.pop(base, None)

    @operation
    def getattr(self, path, fh=None):
        handle = self.handles.get(_fh_of(fh)) if fh is not None else None
        if isinstance(handle, BufferReader) or (isinstance(handle, WriteBuffer) and not handle.unlinked):
            return self._stat_dict(Attr(tree.FILE, 0, None), writer=handle)
        if handle is not None and not isinstance(handle, WriteBuffer):
            attr = Attr(tree.FILE, handle.size, handle.version)
            self._note_reported(path, attr)
            return self._stat_dict(attr)
        with self._lock:
            writer = self.writers.get(path)
        if writer is not None and not writer.unlinked:
            return self._stat_dict(Attr(tree.FILE, 0, None), writer=writer)
        attr = self._lookup(path)
        self._note_reported(path, attr)
        return self._stat_dict(attr)

    @operation
    def readdir(self, path, fh):
        attr = self._lookup(path)
        if attr.kind != tree.DIR:
            raise FsError(errno.ENOTDIR)
        entries = dict(self._list(path))
        prefix = path.rstrip("/") + "/"
        with self._lock:
            for d in self.local_dirs:
                if d.startswith(prefix) and "/" not in d[len(prefix):]:
                    entries.setdefault(d[len(prefix):], tree.DIR)
            for p, w in self.writers.items():
                if p.startswith(prefix) and "/" not in p[len(prefix):] and not w.unlinked:
                    entries.setdefault(p[len(prefix):], tree.FILE)
        self._prefetch_attrs(path, entries)
        result = [".", ".."]
        for name, kind in sorted(entries.items()):
            mode = stat.S_IFDIR if kind == tree.DIR else stat.S_IFREG
            result.append((name, {"st_mode": mode}, 0))
        return result

    def _prefetch_attrs(self, folder, entries):
        """Fetch the attributes of the folder's files at once, so the ``stat`` calls after readdir are free.

        One pipelined burst of HEADs (see :mod:`.pipeline`).  All results get
        the time stamp of the end of the burst: a large folder is not half
        expired by the time ``ls -l`` reaches its last entries.  Files whose
        answer is missing are asked for by ``getattr`` as usual.
        """
        missing = [tree.join(folder, n) for n, k in entries.items()
                   if k == tree.FILE and self.attrs.get(tree.join(folder, n)) is None]
        if not missing:
            return
        found = self.remote.stat_many(missing[:MAX_PREFETCH])
        stamp = self.clock()
        for path, (version, size) in found.items():
            self.attrs.put(path, Attr(tree.FILE, size, version), stamp=stamp)

    @operation
    def statfs(self, path):
        st = os.statvfs(self.spool_dir)
        return {
            "f_bsize": st.f_bsize, "f_frsize": st.f_frsize, "f_blocks": st.f_blocks,
            "f_bfree": st.f_bfree, "f_bavail": st.f_bavail, "f_files": st.f_files,
            "f_ffree": st.f_ffree, "f_favail": st.f_favail, "f_namemax": 255,
        }
