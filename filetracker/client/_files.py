"""Small filesystem helpers shared by the local store and the remote store.

Everything that makes a file visible under its final path does so with one
``rename``: a reader sees either the old file or the complete new one, never
a torn one (a download into a FIFO or a device is written into it instead:
:func:`special_destination`).
"""

import errno
import os
import re
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


_FOLDER_IN_THE_WAY = "a folder is in the way of the file to write"


def replace_into(tmp, path):
    """``os.replace(tmp, path)``, whose error names ``path`` alone when a folder is in the way
    (the user gave a folder as the file to write; the temporary name means nothing to them)."""
    try:
        os.replace(tmp, path)
    except IsADirectoryError:
        raise IsADirectoryError(errno.EISDIR, _FOLDER_IN_THE_WAY, path) from None


def _temp_prefix(path):
    return "." + os.path.basename(path)[:40] + "."


def temp_path_beside(path):
    """A new, empty temporary file in the folder of ``path`` (created, so unique).

    An error names ``path``, the file the user asked for, not the temporary name."""
    return _beside(path, lambda folder: new_temp_file(folder, _temp_prefix(path), ".ft-tmp"))


def _unnamed_file_beside(path):
    """An open descriptor of a new file without a name in the folder of ``path``
    (:func:`unnamed_file_in`, the folder made first if missing), or None where that is
    not available."""
    return _beside(path, unnamed_file_in)


def unnamed_file_in(folder):
    """An open descriptor (read-write) of a new file without a name in ``folder``
    (``O_TMPFILE``), or None where that is not available (the filesystem, or no ``/proc``
    to give it a name later: :func:`name_unnamed`).  A crash before it is named leaves
    nothing behind.  Made with mode 0666 less the umask, as ``open`` does."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_RDWR | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # this filesystem (or kernel) has no unnamed files
        raise


def name_unnamed(fd, folder, prefix, suffix=""):
    """Give the unnamed file ``fd`` a new random name ``<prefix><hex><suffix>`` in ``folder``
    (a hard link through ``/proc/self/fd``); the path, or None when the link failed (the
    caller copies instead)."""
    for _ in range(100):
        tmp = os.path.join(folder, "%s%s%s" % (prefix, secrets.token_hex(6), suffix))
        try:
            os.link("/proc/self/fd/%d" % fd, tmp, follow_symlinks=True)
            return tmp
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def _name_unnamed(fd, path):
    """:func:`name_unnamed` beside ``path``, under the name a named temporary would have."""
    return name_unnamed(fd, os.path.dirname(os.path.abspath(path)), _temp_prefix(path), ".ft-tmp")


def _beside(path, make):
    """``make(folder)`` for the folder of ``path``, made first if missing; an error names
    ``path``, the file the user asked for, not a temporary name.

    A ``path`` that is a folder, or ends in ``/`` (a folder, existing or not), is refused
    before anything is made or written."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, _FOLDER_IN_THE_WAY, path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        return make(folder)
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


#: the names of a process's own descriptors (``/proc/<pid>/fd`` is matched against our pid)
_DESCRIPTOR_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")


def own_descriptor(path):
    """The descriptor number when ``path`` names one of this process's open descriptors
    (``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N``, ``/proc/self/fd/N``, or a link to
    one), else None.

    A download to such a name is written into that descriptor, as ``cat`` writes to its
    output: reopening the name would truncate a file the shell opened for appending
    (``>> log``), and replacing it by a rename would cut it off from its writers."""
    path = os.path.abspath(path)
    for _ in range(8):  # /dev/stdout -> /proc/self/fd/1; a user's link to it: one more
        found = _DESCRIPTOR_PATH.match(path)
        if found:
            pid, fd = found.groups()
            return int(fd) if pid is None or int(pid) == os.getpid() else None
        if path.startswith("/proc/") or not os.path.islink(path):
            return None  # /proc's own links point at the files themselves
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return None


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


def atomic_write_stream(path, stream, mtime=None, progress=None, fsync=True, before_visible=None):
    """Write ``stream`` to ``path`` through a temporary file and a rename.

    ``mtime`` (an int) is set on the file before it becomes visible, and the mode of a
    file it replaces is kept (as writing into it would).  ``before_visible(f)``, when
    given, is called with the complete file open for reading at its start before the
    rename: what it reads is these bytes, whatever is renamed to ``path`` afterwards.
    Returns the number of bytes written.  On failure nothing appears at ``path``.

    The bytes go into a file without a name (``O_TMPFILE``) that is named only once
    complete, just before the rename: a process killed mid-download (or a power cut)
    leaves no ``.NAME.*.ft-tmp`` file in the user's folder.  Where unnamed files are not
    available a named temporary file is used throughout.
    """
    fd = _unnamed_file_beside(path)
    if fd is None:
        return _write_through_named(path, stream, mtime, progress, fsync, before_visible)
    with os.fdopen(fd, "w+b") as f:
        n = _fill(f, path, stream, mtime, progress, fsync)
        _show(f, before_visible)
        tmp = _name_unnamed(f.fileno(), path)
        if tmp is None:  # it cannot be named after all (rare): copy it into a named file
            f.seek(0)
            return _write_through_named(path, f, mtime, None, fsync)
    try:
        replace_into(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return n


def _write_through_named(path, stream, mtime, progress, fsync, before_visible=None):
    """:func:`atomic_write_stream` through a named temporary file beside ``path``."""
    tmp = temp_path_beside(path)
    try:
        with open(tmp, "w+b") as f:
            n = _fill(f, path, stream, mtime, progress, fsync)
            _show(f, before_visible)
        replace_into(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return n


def _fill(f, path, stream, mtime, progress, fsync):
    """Copy ``stream`` into the new file ``f`` with the mode of the file at ``path`` (if
    any), set ``mtime`` and fsync it (with ``fsync``); the byte count."""
    _keep_mode(path, f.fileno())
    n = write_stream(f, stream, progress, fsync_follows=fsync)
    f.flush()
    if mtime is not None:
        os.utime(f.fileno(), (mtime, mtime))
    if fsync:  # after the utime: the version a get sets is durable with the bytes
        os.fsync(f.fileno())
    return n


def _show(f, before_visible):
    if before_visible is not None:
        f.seek(0)
        before_visible(f)


def _keep_mode(path, fd):
    """Give the open file ``fd`` the permission bits of the regular file at ``path``, if there is one."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        os.fchmod(fd, stat.S_IMODE(st.st_mode))


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
