"""Small filesystem helpers shared by the local store and the remote store.

Everything that makes a file visible under its final path does so with one
``rename``: a reader sees either the old file or the complete new one, never
a torn one (a download into a FIFO or a device is written into it instead:
:func:`special_destination`).
"""

import errno
import os
import secrets
import stat

from filetracker.writeback import Writeback

#: Copy buffer size: big enough for throughput, small enough to never matter in memory.
CHUNK = 1 << 16


def fsync_dir(path):
    """fsync a folder so that a rename inside it survives a crash (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_temp_file(folder, prefix, suffix=""):
    """A new, empty file in ``folder`` under a unique random name, made as ``open(..., "w")``
    makes one: mode 0666 less the umask (``mkstemp``'s 0600 would stay on every file moved
    into place from it: a ``get`` destination, a cache entry)."""
    for _ in range(100):
        path = os.path.join(folder, "%s%s%s" % (prefix, secrets.token_hex(6), suffix))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", folder)


def replace_into(tmp, path):
    """``os.replace(tmp, path)``, whose error names ``path`` alone when a folder is in the way
    (the user gave a folder as the file to write; the temporary name means nothing to them)."""
    try:
        os.replace(tmp, path)
    except IsADirectoryError:
        raise IsADirectoryError(errno.EISDIR, "a folder is in the way of the file to write", path) from None


def temp_path_beside(path):
    """A new, empty temporary file in the folder of ``path`` (created, so unique).

    An error names ``path``, the file the user asked for, not the temporary name."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        return new_temp_file(folder, "." + os.path.basename(path)[:40] + ".", ".ft-tmp")
    except (FileExistsError, NotADirectoryError):
        blocker = _file_in_the_way(folder)
        if blocker is None:
            raise
        # makedirs said "File exists" about the path the user gave, which hides the culprit
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the folder to write into",
                                 blocker) from None
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def _file_in_the_way(folder):
    """The nearest existing one of ``folder`` and its parents, if it is not a folder; else None."""
    found = nearest_existing(folder)
    return None if os.path.isdir(found) else found


def special_destination(path):
    """True when ``path`` exists and is neither a regular file nor a folder (after symbolic
    links): a FIFO, a terminal, ``/dev/stdout``.  A download is written into such a file;
    replacing it by a rename would replace the device or pipe with a plain file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # missing (or a dangling link): a new regular file will do
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_stream(fileobj, stream, progress=None, fsync_follows=False):
    """Copy ``stream`` into the open binary ``fileobj`` chunk by chunk; return the byte count.

    ``fsync_follows``: the caller fsyncs the file afterwards, so its bytes are
    sent to the disk while the rest is copied (:mod:`filetracker.writeback`)
    instead of all at that fsync.
    """
    writeback = Writeback(fileobj.fileno(), fileobj.flush) if fsync_follows else None
    total = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return total
        fileobj.write(chunk)
        total += len(chunk)
        if writeback is not None:
            writeback.written(total)
        if progress is not None:
            progress(len(chunk))


def atomic_write_stream(path, stream, mtime=None, progress=None, fsync=True):
    """Write ``stream`` to ``path`` through a temporary file and a rename.

    ``mtime`` (an int) is set on the file before it becomes visible, and the mode of a
    file it replaces is kept (as writing into it would).
    Returns the number of bytes written.  On failure nothing appears at ``path``.
    """
    tmp = temp_path_beside(path)
    try:
        _keep_mode(path, tmp)
        with open(tmp, "wb") as f:
            n = write_stream(f, stream, progress, fsync_follows=fsync)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        replace_into(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return n


def _keep_mode(path, tmp):
    """Give ``tmp`` the permission bits of the regular file at ``path``, if there is one."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))


def link_or_copy(src, dst_tmp):
    """Make ``dst_tmp`` (which must not exist) a hard link of ``src``, or a copy when linking fails.

    Returns True when a link was made.
    """
    try:
        os.link(src, dst_tmp)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    with open(src, "rb") as fin, open(dst_tmp, "xb") as fout:
        write_stream(fout, fin, fsync_follows=True)
        fout.flush()
        os.fsync(fout.fileno())
    return False


def remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_file(path):
    """fsync the file at ``path``: its data and its inode (size, mtime).  A filesystem that
    cannot fsync (EINVAL, ENOTSUP: some FUSE ones) is let be; an I/O error is raised."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def nearest_existing(path):
    """``path`` or the nearest of its ancestors that exists (as an absolute path)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def makedirs_durably(path):
    """``os.makedirs(path, exist_ok=True)``, then fsync the parent of every folder it created,
    so the new entries survive a crash (not only the last folder's content)."""
    top = nearest_existing(path)
    os.makedirs(path, exist_ok=True)
    created = []
    p = os.path.abspath(path)
    while p != top and p.startswith(top):
        created.append(p)
        p = os.path.dirname(p)
    for folder in reversed(created):   # parent first
        fsync_dir(os.path.dirname(folder))


def remove_empty_dirs(path, stop):
    """Remove empty folders from ``path`` upwards, never ``stop`` or above it."""
    stop = os.path.abspath(stop)
    path = os.path.abspath(path)
    while path != stop and path.startswith(stop + os.sep):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)
