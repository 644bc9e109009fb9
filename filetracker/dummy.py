"""An in-memory filetracker client for users' tests.

:class:`DummyClient` has the :class:`filetracker.client.Client` API but keeps
every file in a dict: no server, no cache folder, no locks on disk.  It is
thread-safe.  Semantics follow a client with only a local store: an
unversioned put creates a new version ``max(now, previous + 1)``; a
versioned put older than the stored version changes nothing, one of the
stored version replaces its content (as the 2.x ``DummyClient`` did, so
users' tests that upload a fixture again at a fixed version keep working); a
versioned get of a version that is not the stored one raises
:class:`NotFoundError`.
"""

import io
import os
import threading
import time

from filetracker.client.client import Client
from filetracker.client.data_store import DataStore
from filetracker.errors import NotFoundError
from filetracker.names import check_folder, check_name, versioned_name


class DummyClient(Client):
    """In-memory stand-in for :class:`filetracker.client.Client` (``isinstance`` holds)."""

    def __init__(self):  # no stores: every method is overridden below
        self.local_store = None
        self.remote_store = None
        self._files = {}  # unversioned name -> (version, bytes)
        self._lock = threading.Lock()

    def _lookup(self, name):
        uname, version = check_name(name)
        with self._lock:
            entry = self._files.get(uname)
        if entry is None:
            raise NotFoundError("file not found: %s" % uname)
        if version is not None and entry[0] != version:
            raise NotFoundError("version %d of %s not found (have %d)" % (version, uname, entry[0]))
        return uname, entry

    def put_file(self, name, filename, to_local_store=True, to_remote_store=True, compress_hint=True):
        if not to_local_store and not to_remote_store:
            raise ValueError("Neither to_local_store nor to_remote_store set in a call to put_file")
        with open(filename, "rb") as f:
            return self.put_stream(name, f)

    def put_stream(self, name, stream):
        """Store the bytes of ``stream`` (an extra of the dummy, handy in tests)."""
        uname, version = check_name(name)
        data = stream.read()
        with self._lock:
            current = self._files.get(uname)
            if version is None:
                version = int(time.time())
                if current is not None:
                    version = max(version, current[0] + 1)
            elif current is not None and current[0] > version:
                return versioned_name(uname, current[0])
            self._files[uname] = (version, bytes(data))
        return versioned_name(uname, version)

    def get_file(self, name, save_to, add_to_cache=True, force_refresh=False):
        uname, (version, data) = self._lookup(name)
        folder = os.path.dirname(os.path.abspath(save_to))
        os.makedirs(folder, exist_ok=True)
        with open(save_to, "wb") as f:
            f.write(data)
        return versioned_name(uname, version)

    def get_stream(self, name, force_refresh=False, serve_from_cache=False):
        uname, (version, data) = self._lookup(name)
        return io.BytesIO(data), versioned_name(uname, version)

    def file_version(self, name):
        _, (version, _) = self._lookup(check_name(name)[0])
        return version

    def file_size(self, name, force_refresh=False):
        _, (_, data) = self._lookup(name)
        return len(data)

    def delete_file(self, name):
        """Delete the file; with a version, only when the stored one is not newer.  Missing: no-op."""
        uname, version = check_name(name)
        with self._lock:
            current = self._files.get(uname)
            if current is None or (version is not None and current[0] > version):
                return
            del self._files[uname]

    def list_local_files(self):
        with self._lock:
            items = sorted(self._files.items())
        return [DataStore.FileInfoEntry(name=versioned_name(n, v), mtime=float(v), size=len(d))
                for n, (v, d) in items]

    def list_remote_files(self, version_cutoff_timestamp=None, subpath="", absolute_paths=False):
        """Names under ``subpath`` (relative to it, like the server's listing)."""
        folder = check_folder("/" + subpath.lstrip("/")) if subpath else "/"
        prefix = folder.rstrip("/") + "/"
        cutoff = version_cutoff_timestamp
        with self._lock:
            items = sorted(self._files.items())
        names = [n[len(prefix):] for n, (v, _) in items
                 if n.startswith(prefix) and (cutoff is None or v <= cutoff)]
        if absolute_paths and folder != "/":
            names = [prefix.lstrip("/") + n for n in names]
        return names
