"""When closes upload: only the opener's close publishes, never an empty overwrite first.

Shell redirections duplicate descriptors and hand them to children; a child's
exit, a reader's close or the dup-and-close of ``> file`` must neither
publish a partial or empty file nor, when a child dies from a signal, make
the mount drop the parent's output.  Against our server.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.parse

import requests

from filetracker.client import Client
from filetracker.httpdate import format_version, parse_version
from tests.fuse.proxy import CountingProxy
from tests.fuse.test_fuse_semantics import eventually, remote, sh


def put(server, tmp_path, name, data):
    client = Client(cache_dir=str(tmp_path / "put-cache"), remote_url=server.url)
    src = tmp_path / "put-src"
    src.write_bytes(data)
    client.put_file(name, str(src), to_local_store=False)


def test_overwrite_stores_no_empty_version_first(server, mount_factory, tmp_path):
    put(server, tmp_path, "/o/conf.txt", b"old content\n")
    m = mount_factory(server.url)
    f = m.p("o/conf.txt")
    # What ``> file`` does: open with O_TRUNC, duplicate, close the original.
    fd = os.open(f, os.O_WRONLY | os.O_TRUNC)
    fd2 = os.dup(fd)
    os.close(fd)
    assert remote(server, "/o/conf.txt") == b"old content\n"
    os.write(fd2, b"new content\n")
    os.close(fd2)
    assert remote(server, "/o/conf.txt") == b"new content\n"
    # A writer killed after its redirection truncated the file: the old content stays.
    proc = subprocess.Popen(["bash", "-c", "exec > %s; echo started >&2; while :; do echo x; sleep 0.01; done" % f],
                            stderr=subprocess.PIPE)
    try:
        assert proc.stderr.readline().strip() == b"started"
        time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
    m.wait_writers_released()  # release comes after the kill; nothing is uploaded at it
    assert remote(server, "/o/conf.txt") == b"new content\n"
    # Emptying a file on purpose still stores the empty file (at release).
    assert sh(": > %s" % f).returncode == 0
    eventually(lambda: remote(server, "/o/conf.txt") == b"")


def test_child_killed_by_signal_keeps_the_parents_output(server, mount_factory):
    m = mount_factory(server.url)
    proc = sh("ulimit -c 0; { echo before; sh -c 'kill -SEGV $$'; echo after; } > %s; echo $?" % m.p("seg.txt"))
    assert proc.stdout.strip() == "0", proc.stderr
    assert remote(server, "/seg.txt") == b"before\nafter\n"
    with open(m.p("py.txt"), "w") as out:
        out.write("header\n")
        out.flush()
        crash = "import os, signal; print('child', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
        assert subprocess.run([sys.executable, "-c", crash], stdout=out).returncode == -signal.SIGKILL
        out.write("footer\n")
    assert remote(server, "/py.txt") == b"header\nchild\nfooter\n"


def test_closes_by_children_and_readers_publish_nothing(server, mount_factory):
    m = mount_factory(server.url)
    # A child (/bin/true) exiting while the shell still writes: nothing published yet.  The shell
    # writes part2 only when told (a fixed 2 s sleep could end before the check on a busy machine);
    # it says when /bin/true is over through another child (a builtin's >&2 would make the shell
    # itself, the opener, save and close its standard output: a close that uploads)
    writer = subprocess.Popen(["bash", "-c", "{ echo part1; /bin/true; /bin/echo child-done >&2; read go; echo part2; } > %s"
                               % m.p("p2.txt")], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert writer.stderr.readline().strip() == b"child-done"
        time.sleep(1.2)   # a close at the child's exit would have uploaded by now
        assert remote(server, "/p2.txt") is None
    finally:
        writer.stdin.write(b"go\n")
        writer.stdin.close()
        writer.wait(timeout=20)
        writer.stderr.close()
    assert remote(server, "/p2.txt") == b"part1\npart2\n"
    # A reader's close of a file being written does not publish the writer's partial buffer.
    with open(m.p("r.txt"), "w") as out:
        out.write("partial\n")
        out.flush()
        assert subprocess.run(["cat", m.p("r.txt")], capture_output=True).stdout == b"partial\n"
        assert remote(server, "/r.txt") is None
        out.write("complete\n")
    assert remote(server, "/r.txt") == b"partial\ncomplete\n"


def test_loop_of_children_uploads_once(server, mount_factory):
    target = urllib.parse.urlsplit(server.url)
    proxy = CountingProxy((target.hostname, target.port))
    try:
        m = mount_factory(proxy.url)
        assert sh("for i in $(seq 20); do /bin/echo line $i; done > %s" % m.p("loop.log")).returncode == 0
        assert remote(server, "/loop.log") == b"".join(b"line %d\n" % i for i in range(1, 21))
        m.wait_writers_released()  # the last release must not upload again either
        puts = [t for method, t in proxy.requests if method == "PUT" and t.startswith("/files/loop.log")]
        assert len(puts) == 1, puts
    finally:
        proxy.close()


def test_rapid_saves_stay_close_to_the_clock(server, mount_factory):
    """Saved four times at once: each save still wins, and no version runs ahead of the clock."""
    m = mount_factory(server.url)
    assert sh("for i in 1 2 3 4; do echo $i > %s; done" % m.p("status.txt")).returncode == 0
    version = parse_version(requests.head(server.url + "/files/status.txt", timeout=10).headers["Last-Modified"])
    assert version <= time.time() + 1
    assert remote(server, "/status.txt") == b"4\n"
    # Another client's put at the current time is not hidden behind a future version.
    put_at = int(time.time()) + 2  # above any version at most 1 s ahead
    requests.put(server.url + "/files/status.txt", data=b"other\n", timeout=10,
                 params={"last_modified": format_version(put_at)}).raise_for_status()
    assert remote(server, "/status.txt") == b"other\n"


def test_a_child_killed_after_the_opener_closed_stores_nothing(server, mount_factory, tmp_path):
    """The opener closes at once and leaves the writing to a child, which is killed mid-way: what
    it wrote may be cut off mid-line, so the complete old content stays."""
    put(server, tmp_path, "/k/log.txt", b"old complete\n")
    m = mount_factory(server.url)
    # the child starts writing only when told, after the opener's close (so that close has nothing to upload)
    loop = "import sys, time\nsys.stdin.readline()\nwhile True:\n    print('line ' * 20, flush=True)\n    time.sleep(0.005)\n"
    with open(m.p("k/log.txt"), "w") as out:
        child = subprocess.Popen([sys.executable, "-c", loop], stdout=out, stdin=subprocess.PIPE)
    try:
        child.stdin.write(b"go\n")
        child.stdin.close()
        time.sleep(0.3)
    finally:
        child.kill()
        child.wait(timeout=10)
    m.wait_writers_released()  # the last close (release) comes after the child's exit
    assert remote(server, "/k/log.txt") == b"old complete\n"


def test_a_new_open_after_a_killed_writer_is_stored(server, mount_factory, tmp_path):
    """A writer is killed while a process it started keeps the descriptor open: that buffer is
    never uploaded, and a later complete write of the name (appending here) must still be."""
    put(server, tmp_path, "/k/orig.txt", b"orig\n")
    m = mount_factory(server.url)
    f = m.p("k/orig.txt")
    holder = subprocess.Popen(["bash", "-c", "exec >> %s; echo partial; sleep 30 & sleep 0.3; kill -9 $$" % f],
                              start_new_session=True)
    try:
        holder.wait(timeout=10)
        with open(f, "a") as out:
            out.write("appended\n")
        assert remote(server, "/k/orig.txt") == b"orig\nappended\n"
    finally:
        os.killpg(holder.pid, signal.SIGKILL)   # the orphaned sleep holding the old descriptor

