"""A :class:`DataStore` in a local folder: the client's cache.

Layout under ``dir``: ``files/<name>`` holds the newest cached version of each
name, and the file's modification time *is* its version.  ``tmp/`` holds
staged files (a download gets a name there only once complete, see
:meth:`LocalDataStore.stage_stream`); they become visible with one ``rename`` into ``files/``,
so a reader never sees a torn file, even without locks.  What locks (see
:mod:`filetracker.client.lock_manager`) add on top is ordering: with the
exclusive lock held around :meth:`LocalDataStore.commit`, an older version
never replaces a newer one.
"""

import os
import stat
import time

from filetracker.client._files import (
    atomic_write_stream,
    fsync_dir,
    fsync_file,
    link_or_copy,
    makedirs_durably,
    name_unnamed,
    nearest_existing,
    new_temp_file,
    remove_empty_dirs,
    remove_quietly,
    unnamed_file_in,
    write_stream,
)
from filetracker.client.data_store import DataStore
from filetracker.errors import NotFoundError, VersionNotFoundError
from filetracker.names import check_name, versioned_name


def _write_durably(f, stream, progress=None):
    write_stream(f, stream, progress, fsync_follows=True)
    f.flush()
    os.fsync(f.fileno())


def _version_of(st):
    return int(st.st_mtime)


class LocalDataStore(DataStore):
    """Versioned files in ``<dir>/files``; see the module docstring."""

    def __init__(self, dir):
        self.base_dir = os.path.abspath(dir)
        #: Folder of the cached files (same attribute name as in 2.x).
        self.dir = os.path.join(self.base_dir, "files")
        self.tmp_dir = os.path.join(self.base_dir, "tmp")
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    # -- paths ---------------------------------------------------------------

    def _parse(self, name):
        uname, version = check_name(name)
        return self.dir + uname, uname, version

    def path_of(self, name):
        """Where the cached file of ``name`` lives (whether or not it exists)."""
        return self._parse(name)[0]

    def _stat(self, path):
        try:
            return os.stat(path)
        except FileNotFoundError:
            return None

    def _file_stat(self, path):
        """``_stat`` of a cached file; None for a folder or a name below a file."""
        try:
            st = self._stat(path)
        except NotADirectoryError:
            return None
        return st if st is not None and stat.S_ISREG(st.st_mode) else None

    # -- staging and committing ----------------------------------------------

    def _new_temp(self):
        return new_temp_file(self.tmp_dir, "stage.")

    def stage_stream(self, stream, progress=None):
        """Write ``stream`` to a new temporary file here (fsynced); return its path.

        Pass the path to :meth:`commit` or :meth:`discard`.  The bytes go into a file
        without a name (``O_TMPFILE``) that is named in ``tmp/`` only once complete: a
        download killed midway leaves nothing in the cache (a named ``tmp/stage.*`` stayed
        until the cache cleaner's hour had passed).  Where unnamed files are not available
        a named temporary file is used throughout.
        """
        fd = unnamed_file_in(self.tmp_dir)
        if fd is None:
            return self._stage_named(stream, progress)
        with os.fdopen(fd, "w+b") as f:
            _write_durably(f, stream, progress)
            tmp = name_unnamed(f.fileno(), self.tmp_dir, "stage.")
            if tmp is None:  # it cannot be named after all (rare): copy it into a named file
                f.seek(0)
                return self._stage_named(f)
        return tmp

    def _stage_named(self, stream, progress=None):
        tmp = self._new_temp()
        try:
            with open(tmp, "wb") as f:
                _write_durably(f, stream, progress)
        except BaseException:
            remove_quietly(tmp)
            raise
        return tmp

    def stage_file(self, filename, link=False):
        """Stage a copy of ``filename`` (a hard link instead when ``link``; copy if linking fails).

        Linking is cheap but shares the inode: whoever later modifies
        ``filename`` in place modifies the cache too.  The client links only
        files it wrote itself.  A copy is made as :meth:`stage_stream` makes one.
        """
        if not link:
            with open(filename, "rb") as fin:
                return self.stage_stream(fin)
        tmp = self._new_temp()
        try:
            os.unlink(tmp)
            link_or_copy(filename, tmp)
        except BaseException:
            remove_quietly(tmp)
            raise
        return tmp

    def discard(self, staged):
        remove_quietly(staged)

    def commit(self, staged, name, replace_equal=False):
        """Make the staged file the cached ``name``; return the versioned name now cached.

        With a version in ``name``: kept only when newer than the cached one
        (an equal or newer cached version stays); with ``replace_equal`` also
        when equal (bytes the server just gave or confirmed: two contents of one
        version can exist, and the server's is the one to keep).  Without: a new
        version, ``max(now, cached + 1)``, always replaces.  The staged file is consumed
        either way.  Callers that share the cache hold the name's exclusive
        lock around this call.
        """
        path, uname, version = self._parse(name)
        try:
            st = self._stat(path)
            if version is None:
                version = int(time.time())
                if st is not None:
                    version = max(version, _version_of(st) + 1)
            elif st is not None and (_version_of(st) > version
                                     or (_version_of(st) == version and not replace_equal)):
                return versioned_name(uname, _version_of(st))
            os.utime(staged, (version, version))
            # The version is the mtime, and a linked stage (a download of ours) was never
            # fsynced: without this a power cut could leave the name durable with the right
            # version and none of the data, which the cache then serves as that version.
            fsync_file(staged)
            self._rename_into(staged, path)
            staged = None
            return versioned_name(uname, version)
        finally:
            if staged is not None:
                remove_quietly(staged)

    def _rename_into(self, staged, path):
        # Another process may remove an empty parent folder between our
        # makedirs and rename (delete_file prunes folders): retry a few times.
        # (The makedirs itself meets that too: a folder it is creating the child of vanishes.)
        for attempt in range(5):
            try:
                makedirs_durably(os.path.dirname(path))
                os.replace(staged, path)
                remove_quietly(staged)  # left behind when both were links of one inode
                break
            except FileNotFoundError:
                if attempt == 4 or not os.path.exists(staged):
                    raise
        try:
            fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            pass   # a delete since took the file and pruned its folder: nothing left to make durable

    # -- the DataStore API ---------------------------------------------------

    def add_stream(self, name, stream):
        return self.commit(self.stage_stream(stream), name)

    def add_file(self, name, filename, compress_hint=True):
        return self.commit(self.stage_file(filename), name)

    def get_stream(self, name):
        path, uname, version = self._parse(name)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError("file not in the local store: %s" % name) from None
        # fstat of the open file: the version we report is the content we return.
        have = _version_of(os.fstat(f.fileno()))
        if version is not None and have != version:
            f.close()
            raise VersionNotFoundError("version %d of %s not in the local store (it has %d)" % (version, uname, have))
        return f, versioned_name(uname, have)

    def get_file(self, name, filename):
        """Save a copy of the cached file as ``filename`` (its mtime the version), replaced
        whole by a rename.

        A copy, not a hard link: users edit the files they get (2.x wrote copies), and an
        edit made through a link changed the cache's copy, and its mtime, which is its
        version, so the cache served the edit as the store's file and a refresh could not
        replace it (it looked newer).
        """
        stream, vname = self.get_stream(name)
        with stream:
            _uname, version = check_name(vname)
            atomic_write_stream(filename, stream, mtime=version, fsync=False)
        return vname

    def exists(self, name):
        path, _, version = self._parse(name)
        st = self._file_stat(path)
        if st is None:
            return False
        return version is None or _version_of(st) == version

    def file_version(self, name):
        path, uname, _ = self._parse(name)
        st = self._file_stat(path)
        if st is None:
            raise NotFoundError("file not in the local store: %s" % uname)
        return _version_of(st)

    def file_size(self, name):
        path, uname, version = self._parse(name)
        st = self._file_stat(path)
        if st is None:
            raise NotFoundError("file not in the local store: %s" % uname)
        if version is not None and _version_of(st) != version:
            raise VersionNotFoundError("version %d of %s not in the local store" % (version, uname))
        return st.st_size

    def delete_file(self, name):
        """Remove the cached file (a versioned name: only if the cached version is not newer).

        Missing files are ignored (it is a cache).  Callers that share the
        cache hold the name's exclusive lock.
        """
        path, _, version = self._parse(name)
        st = self._file_stat(path)
        if st is None:
            return
        if version is not None and _version_of(st) > version:
            return
        remove_quietly(path)
        remove_empty_dirs(os.path.dirname(path), self.dir)
        fsync_dir(nearest_existing(os.path.dirname(path)))   # or a power cut brings the file back

    def list_files(self):
        result = []
        for root, _dirs, files in os.walk(self.dir):
            for base in files:
                path = os.path.join(root, base)
                st = self._stat(path)
                if st is None:
                    continue
                name = "/" + os.path.relpath(path, self.dir).replace(os.sep, "/")
                result.append(DataStore.FileInfoEntry(
                    name=versioned_name(name, _version_of(st)), mtime=st.st_mtime, size=st.st_size))
        return result

    def clean_temporary(self, older_than=3600):
        """Remove staged files left by crashed writers (older than ``older_than`` s)."""
        cutoff = time.time() - older_than
        removed = 0
        for base in os.listdir(self.tmp_dir):
            path = os.path.join(self.tmp_dir, base)
            st = self._stat(path)
            if st is not None and st.st_mtime < cutoff and st.st_ctime < cutoff:
                remove_quietly(path)
                removed += 1
        return removed
