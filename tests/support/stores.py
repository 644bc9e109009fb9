"""Data folders prepared by hand for tests (what a crash leaves behind), and what fsync saw."""

import hashlib
import os


def orphan_blob(data_dir, content):
    """A complete blob file in ``data_dir``'s store that no record references; its path."""
    sha = hashlib.sha256(content).hexdigest()
    folder = os.path.join(data_dir, "blobs", sha[:2])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, sha)
    with open(path, "wb") as f:
        f.write(content)
    return path


class Fsyncs:
    """Records what each ``os.fsync`` made durable while installed (``monkeypatch``):
    ``files`` as (inode, mtime, size), ``dirs`` as paths."""

    def __init__(self, monkeypatch):
        self.files, self.dirs = [], []
        real = os.fsync

        def fsync(fd):
            st = os.fstat(fd)
            if os.path.isdir("/proc/self/fd/%d" % fd):
                self.dirs.append(os.readlink("/proc/self/fd/%d" % fd))
            else:
                self.files.append((st.st_ino, int(st.st_mtime), st.st_size))
            return real(fd)
        monkeypatch.setattr(os, "fsync", fsync)
