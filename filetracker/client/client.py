"""The filetracker client: a remote store plus an optional local cache.

Semantics (the same as the 2.x client's):

- The cache is trusted only for *versioned* names (``/a/b@123``), or for
  every name when no remote store is configured.  An unversioned get always
  asks the server, because only the server knows the newest version.
- Every name has one cross-process lock (see :mod:`.lock_manager`): readers
  of the cache hold it shared, writers to the cache exclusive.  Files appear
  in the cache by ``rename``, so no reader ever sees a torn file; the lock
  keeps an older version from replacing a newer one and keeps the cache
  cleaner away from files in use.  Locks are held only around cache work,
  never during a network transfer.
"""

import logging
import os
import time

from filetracker.client._files import own_descriptor, special_destination, write_stream
from filetracker.client.data_store import close_stream
from filetracker.client.local_data_store import LocalDataStore
from filetracker.client.lock_manager import FcntlLockManager, NoOpLockManager
from filetracker.client.remote_data_store import RemoteDataStore
from filetracker.errors import FiletrackerError, NotFoundError
from filetracker.names import check_name, versioned_name

logger = logging.getLogger("filetracker")


def _cache_failed(vname, exc):
    """Log that ``vname`` could not be cached: one line for a filesystem refusal (a full disk,
    a file where its folder should be), the traceback only for anything else (a bug)."""
    if isinstance(exc, OSError):
        logger.warning("could not add %s to the cache: %s", vname, exc)
    else:
        logger.warning("could not add %s to the cache", vname, exc_info=exc)


class Client:
    """A filetracker client.

    ``Client()`` takes its configuration from the environment:
    ``FILETRACKER_DIR`` (the cache folder; default ``~/.filetracker-store``;
    set but empty: no cache) and ``FILETRACKER_URL`` (the server; without it the client is local-only,
    which several processes on one machine may share safely).  The same can
    be given as ``cache_dir`` and ``remote_url``; power users pass their own
    ``local_store`` / ``remote_store`` / ``lock_manager`` objects, or ``None``
    to go without one.  ``remote_timeout`` (seconds) bounds every wait on the
    server (default: none).
    """

    DEFAULT_CACHE_DIR = os.path.expanduser(os.path.join("~", ".filetracker-store"))

    def __init__(self, local_store="auto", remote_store="auto", lock_manager="auto",
                 cache_dir=None, remote_url=None, locks_dir=None, remote_timeout=None):
        if cache_dir is None:
            # set but empty means no cache, as with 2.x (cache_dir="" does the same)
            cache_dir = os.environ.get("FILETRACKER_DIR")
        if cache_dir is None:
            cache_dir = self.DEFAULT_CACHE_DIR
        if remote_url is None:
            remote_url = os.environ.get("FILETRACKER_URL")
        if locks_dir is None and cache_dir:
            locks_dir = os.path.join(cache_dir, "locks")
        if local_store == "auto":
            local_store = LocalDataStore(cache_dir) if cache_dir else None
        if remote_store == "auto":
            remote_store = RemoteDataStore(remote_url, timeout=remote_timeout) if remote_url else None
        if lock_manager == "auto":
            lock_manager = FcntlLockManager(locks_dir) if (local_store and locks_dir) else NoOpLockManager()
        if not local_store and not remote_store:
            raise ValueError("Neither local nor remote Filetracker store has been configured")
        self.local_store = local_store
        self.remote_store = remote_store
        self.lock_manager = lock_manager or NoOpLockManager()

    # -- helpers -----------------------------------------------------------------

    def _cache_usable(self, version, force_refresh):
        return self.local_store is not None and (
            self.remote_store is None or (version is not None and not force_refresh))

    def _commit_to_cache(self, staged, vname, replace_equal=False):
        """Move a staged file into the cache under the name's exclusive lock.

        ``replace_equal``: the staged bytes are what the server holds at ``vname``
        (just uploaded and confirmed, or downloaded on a forced refresh), so they replace
        a cached copy of the same version, which may be another content: two uploads
        within one second store one of them (equal versions go by content).  Other
        downloads leave an equal version alone (no rewrite and fsync of a cached file
        on every unversioned get).
        A failure only costs the cache entry (logged), never the caller's result.
        """
        try:
            with self.lock_manager.lock_for(vname) as lock:
                lock.lock_exclusive()
                return self.local_store.commit(staged, vname, replace_equal=replace_equal)
        except Exception as e:
            self.local_store.discard(staged)
            _cache_failed(vname, e)
            return None

    def _add_file_to_cache(self, vname, filename, link, replace_equal=False):
        try:
            staged = self.local_store.stage_file(filename, link=link)
        except Exception as e:
            _cache_failed(vname, e)
            return None
        return self._commit_to_cache(staged, vname, replace_equal)

    # -- reads -------------------------------------------------------------------

    def get_file(self, name, save_to, add_to_cache=True, force_refresh=False):
        """Save the file ``name`` as ``save_to``; return its versioned name.

        A versioned name is served from the cache when it is there (unless
        ``force_refresh``); otherwise the file comes from the server and, with
        ``add_to_cache``, is added to the cache (on ``force_refresh`` replacing
        the cached copy of that version).  ``save_to`` is a file of its own, never
        linked to the cache: it may be edited.

        ``save_to`` is replaced whole by a rename (nobody sees it half written), except
        that a symbolic link is followed (its target is replaced, the link stays) and an
        existing ``save_to`` that is not a regular file (a FIFO, a terminal) is
        written into, as the 2.x client wrote into any destination; a name of
        one of this process's descriptors (``/dev/stdout``, ``/dev/fd/N``) is
        written into that descriptor at its offset, even when it is a regular file.
        """
        uname, version = check_name(name)
        descriptor = own_descriptor(save_to)
        if descriptor is not None or special_destination(save_to):
            stream, vname = self.get_stream(name, force_refresh=force_refresh, serve_from_cache=add_to_cache)
            try:
                # /dev/stdout and the like: into the open descriptor, at its offset (``>>`` appends)
                out = os.fdopen(os.dup(descriptor), "wb") if descriptor is not None else open(save_to, "wb")
                with out:
                    write_stream(out, stream)
            finally:
                close_stream(stream)
            return vname
        if os.path.islink(save_to):
            save_to = os.path.realpath(save_to)
        t = time.monotonic()
        try:
            if self._cache_usable(version, force_refresh):
                with self.lock_manager.lock_for(uname) as lock:
                    lock.lock_shared()
                    try:
                        return self.local_store.get_file(name, save_to)
                    except NotFoundError:
                        if self.remote_store is None:
                            raise
            if self.remote_store is None:
                raise NotFoundError("file not available: %s" % name)
            if add_to_cache and self.local_store is not None and isinstance(self.remote_store, RemoteDataStore):
                return self._get_into_cache_too(name, save_to, force_refresh)
            vname = self.remote_store.get_file(name, save_to)
            if add_to_cache and self.local_store is not None:
                # a copy: the user may edit save_to, which must not change the cache's file
                self._add_file_to_cache(vname, save_to, link=False, replace_equal=force_refresh)
            return vname
        finally:
            logger.debug("get_file %s took %.3fs", name, time.monotonic() - t)

    def _get_into_cache_too(self, name, save_to, force_refresh):
        """Download ``name`` to ``save_to`` and cache a copy made from the download itself
        before it is renamed to ``save_to``: read back from ``save_to``, the copy would be
        whatever another process renamed there meanwhile (another version got to the same
        path), cached under this version's name.  A cache that cannot take it costs only
        the cache entry."""
        staged = []

        def stage(f):
            try:
                staged.append(self.local_store.stage_stream(f))
            except Exception as e:
                _cache_failed(name, e)
        try:
            vname = self.remote_store.get_file(name, save_to, before_visible=stage)
        except BaseException:
            for path in staged:
                self.local_store.discard(path)
            raise
        if staged:
            self._commit_to_cache(staged[0], vname, replace_equal=force_refresh)
        return vname

    def get_stream(self, name, force_refresh=False, serve_from_cache=False):
        """Return ``(binary file-like, versioned name)`` of the file ``name``.

        Like :meth:`get_file`.  With ``serve_from_cache`` (and both stores) the
        file is first downloaded into the cache (if not there yet) and served
        from it.
        """
        uname, version = check_name(name)
        if self._cache_usable(version, force_refresh):
            with self.lock_manager.lock_for(uname) as lock:
                lock.lock_shared()
                try:
                    # The open file stays readable after the lock is released,
                    # even if a newer version is renamed over it.
                    return self.local_store.get_stream(name)
                except NotFoundError:
                    if self.remote_store is None:
                        raise
        if self.remote_store is None:
            raise NotFoundError("file not available: %s" % name)
        if self.local_store is None or not serve_from_cache:
            return self.remote_store.get_stream(name)
        if version is None:
            name = versioned_name(uname, self.remote_store.file_version(name))
        if force_refresh or not self.local_store.exists(name):
            stream, vname = self.remote_store.get_stream(name)
            try:
                staged = self.local_store.stage_stream(stream)
            finally:
                close_stream(stream)
            self._commit_to_cache(staged, vname, replace_equal=force_refresh)
            name = vname
        with self.lock_manager.lock_for(uname) as lock:
            lock.lock_shared()
            try:
                return self.local_store.get_stream(name)
            except NotFoundError:
                pass
        # The cache could not keep it (or a newer version won): serve from the server.
        return self.remote_store.get_stream(name)

    def file_version(self, name):
        """The newest version (an int): the server's if there is one, else the cache's."""
        if self.remote_store is not None:
            return self.remote_store.file_version(name)
        return self.local_store.file_version(name)

    def file_size(self, name, force_refresh=False):
        """The file's size in bytes (no locking: informational)."""
        uname, version = check_name(name)
        if self._cache_usable(version, force_refresh):
            try:
                return self.local_store.file_size(name)
            except NotFoundError:
                if self.remote_store is None:
                    raise
        if self.remote_store is None:
            raise NotFoundError("file not available: %s" % name)
        return self.remote_store.file_size(name)

    # -- writes ------------------------------------------------------------------

    def put_file(self, name, filename, to_local_store=True, to_remote_store=True, compress_hint=True):
        """Store the local file ``filename`` as ``name``; return the versioned name.

        Without a version in ``name`` the current time is the version.  The
        file goes to the server (``to_remote_store``) and to the cache
        (``to_local_store``); with only one store configured, that one.  When
        both are used the server goes first and the cache keeps exactly the
        version the server stored (so cache and server agree); if the server
        kept a newer version, that version's name is returned and the cache is
        left alone.  If it keeps another content at this very version (two
        uploads in one second: equal versions go by content), or the name was
        deleted at this second: with the version given,
        :class:`~filetracker.errors.ContentConflictError` (another content) or
        :class:`~filetracker.errors.VersionConflictError` (the delete; the former
        is a kind of the latter) is raised and the cache is left alone; without,
        the upload is made again a second up, so the later upload wins (and a later
        upload without a version goes past a version so moved ahead of the clock:
        :mod:`filetracker.client.implicit`).
        ``compress_hint=False`` uploads uncompressed.
        """
        if not to_local_store and not to_remote_store:
            raise ValueError("Neither to_local_store nor to_remote_store set in a call to put_file")
        uname, version = check_name(name)
        use_remote = self.remote_store is not None and (to_remote_store or self.local_store is None)
        use_local = self.local_store is not None and (to_local_store or self.remote_store is None)
        if not use_remote:
            staged = self.local_store.stage_file(filename)
            with self.lock_manager.lock_for(uname) as lock:
                lock.lock_exclusive()
                return self.local_store.commit(staged, name)
        if version is None and not isinstance(self.remote_store, RemoteDataStore):
            # A store of the user's own gets the name as given, as the 2.x client passed
            # it (it may key objects by name and pick versions itself); what it kept is
            # then unknown, so nothing is cached.
            return self.remote_store.add_file(name, filename, compress_hint=compress_hint)
        if version is None:
            # now, or past another upload's or a delete's claim on this second
            # (RemoteDataStore.add_file_now)
            vname, ours = self.remote_store.add_file_now(uname, filename, compress_hint=compress_hint)
        else:
            vname = self.remote_store.add_file(versioned_name(uname, version), filename,
                                               compress_hint=compress_hint)
            ours = check_name(vname)[1] == version   # another content at it raised instead
        if use_local and ours:
            # the server kept these bytes at this version
            self._add_file_to_cache(vname, filename, link=False, replace_equal=True)
        return vname

    def delete_file(self, name):
        """Delete the file from the cache and from the server.

        With a version in ``name``: only if that version is not older than
        the stored one.
        """
        uname, version = check_name(name)
        if self.local_store is not None:
            lock = self.lock_manager.lock_for(uname)
            lock.lock_exclusive()
            deleted = False
            try:
                self.local_store.delete_file(name)
                deleted = not self.local_store.exists(uname)
            finally:
                lock.close(delete=deleted)
        if self.remote_store is not None:
            self.remote_store.delete_file(name)

    # -- listings ----------------------------------------------------------------

    def list_local_files(self):
        """A list of :class:`DataStore.FileInfoEntry` of every cached file."""
        return self.local_store.list_files() if self.local_store is not None else []

    def list_remote_files(self, version_cutoff_timestamp=None, subpath="", absolute_paths=False):
        """Names on the server under ``subpath`` not newer than the cutoff (see RemoteDataStore.list_files)."""
        if self.remote_store is None:
            return []
        return self.remote_store.list_files(version_cutoff_timestamp, subpath, absolute_paths)


__all__ = ["Client", "FiletrackerError"]
