"""The filetracker command against a real server: outputs, exit statuses, cache use."""

import os
import stat
import subprocess

import pytest

from tests.support.procs import script


def ft(*args, env=None, cwd=None):
    return subprocess.run([script("filetracker"), *args], capture_output=True, timeout=60, env=env, cwd=cwd)


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ, HOME=str(tmp_path), FILETRACKER_DIR=str(tmp_path / "cache"))
    e.pop("FILETRACKER_URL", None)
    return e


def test_commands(shared_server, tmp_path, env):
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00\x01binary\xff" * 100)
    url = shared_server.url
    r = ft("--url", url, "put", str(src), "/sh/a.bin@1700000000", env=env)
    assert r.returncode == 0
    assert r.stdout == b"Settled for protocol version 2\n/sh/a.bin@1700000000\n"
    env2 = dict(env, FILETRACKER_URL=url)  # the URL from the environment
    assert ft("version", "/sh/a.bin", env=env2).stdout == b"1700000000\n"
    assert ft("size", "/sh/a.bin", env=env2).stdout == b"900\n"
    assert ft("cat", "/sh/a.bin", env=env2).stdout == src.read_bytes()
    out = tmp_path / "out.bin"
    r = ft("-r", url, "get", "/sh/a.bin", str(out), env=env)
    assert (r.returncode, r.stdout, out.read_bytes()) == (0, b"", src.read_bytes())
    assert ft("-r", url, "put", str(src), "/sh/d/b.bin", env=env).returncode == 0
    assert ft("-r", url, "ls", "/sh", env=env).stdout == b"/sh/a.bin\n/sh/d/b.bin\n"
    assert ft("-r", url, "ls", "/sh/d/", env=env).stdout == b"/sh/d/b.bin\n"
    r = ft("-r", url, "rm", "/sh/a.bin", env=env)
    assert (r.returncode, r.stdout) == (0, b"Settled for protocol version 2\n")
    r = ft("-r", url, "version", "/sh/a.bin", env=env)
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr == b"filetracker: error: not found: /sh/a.bin\n"
    # a URL with a path is a wrong URL, not a missing file (it said "not found: /sh/d/b.bin")
    for argv in (("version", "/sh/d/b.bin"), ("put", str(src), "/sh/c.bin")):
        r = ft("-r", url + "/prefix", *argv, env=env)
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.endswith(b": HTTP 404: no such endpoint: /prefix/files%s (give the server's base URL, "
                                 b"without a path)\n" % argv[-1].encode()), r.stderr
    # a missing file whose name holds those words is still just missing
    r = ft("-r", url, "cat", "/sh/no such endpoint.txt", env=env)
    assert (r.returncode, r.stderr) == (1, b"filetracker: error: not found: /sh/no such endpoint.txt\n")


def test_versioned_get_from_cache_without_server(tmp_path, env):
    src = tmp_path / "in"
    src.write_bytes(b"local only")
    r = ft("put", str(src), "/loc/x@1700000000", env=env)  # no URL: the cache is the store
    assert (r.returncode, r.stdout) == (0, b"/loc/x@1700000000\n")
    out = tmp_path / "out"
    assert ft("-r", "http://127.0.0.1:1", "get", "/loc/x@1700000000", str(out), env=env).returncode == 0
    assert out.read_bytes() == b"local only"
    r = ft("-r", "http://127.0.0.1:1", "get", "/loc/x", str(out), env=env)
    assert r.returncode == 1 and r.stderr.startswith(b"filetracker: error: ")
    assert b"Connection refused" in r.stderr and len(r.stderr.splitlines()) == 1


def test_usage_errors(env):
    for args in ([], ["bogus"], ["get", "/a"], ["put", "only-one"], ["rm"], ["version", "/a", "/b"],
                 ["--timeout", "-1", "ls"], ["--timeout", "0", "ls"],
                 ["--timeout", "inf", "ls"], ["--timeout", "nan", "ls"], ["--timeout", "1e10", "ls"]):  # were tracebacks
        r = ft(*args, env=env)
        assert r.returncode == 2, args
        assert b"usage:" in r.stderr


def test_bad_name_is_an_error_not_a_traceback(env):
    r = ft("-r", "http://127.0.0.1:1", "version", "no-slash", env=env)
    assert r.returncode == 1
    assert r.stderr == b"filetracker: error: file name must be absolute (start with '/'): 'no-slash'\n"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_and_folders_get_the_umask_modes(shared_server, tmp_path, env, umask):
    """A fetched file, the cache's entries and its folders are made as a plain ``open``/``mkdir``
    would make them (the umask decides), as the 2.x client does: mkstemp's 0600 made a
    fetched file unreadable to the rest of the group."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"shared with the group\n")
    out = tmp_path / "out.txt"
    run_env = dict(env, FILETRACKER_URL=shared_server.url)

    def ft_masked(*args):
        return subprocess.run([script("filetracker"), *args], capture_output=True, timeout=60, env=run_env,
                              preexec_fn=lambda: os.umask(umask))

    assert ft_masked("put", str(src), "/modes/%o/f.txt" % umask).returncode == 0
    cache = tmp_path / "cache"
    assert ft_masked("get", "/modes/%o/f.txt" % umask, str(out)).returncode == 0
    assert out.read_bytes() == src.read_bytes()
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(out) == 0o666 & ~umask
    cached = [os.path.join(d, f) for d, _, fs in os.walk(cache / "files") for f in fs]
    assert cached and all(mode(p) == 0o666 & ~umask for p in cached)
    folders = [d for d, _, _ in os.walk(cache)]
    assert all(mode(d) == 0o777 & ~umask for d in folders), [(d, oct(mode(d))) for d in folders]


@pytest.mark.parametrize("cache", ["with-cache", "no-cache"])
@pytest.mark.parametrize("dest", ["a-folder", "a-folder/", "missing-folder/"])
def test_get_into_a_folder_names_the_folder(shared_server, tmp_path, env, cache, dest):
    """``get NAME FOLDER`` (or ``FOLDER/``, existing or not): one line naming the folder, not
    the temporary file beside it ("Not a directory: '.../..a1b2.ft-tmp' -> 'missing-folder/'")."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"x")
    (tmp_path / "a-folder").mkdir()
    target = str(tmp_path) + "/" + dest
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/intofolder/f", env=run_env).returncode == 0
    args = ["get", "/intofolder/f", target] + (["--no-cache"] if cache == "no-cache" else [])
    r = ft(*args, env=run_env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr == b"filetracker: error: [Errno 21] a folder is in the way of the file to write: '%s'\n" \
        % target.encode(), r.stderr
    assert os.listdir(tmp_path / "a-folder") == [] and not [n for n in os.listdir(tmp_path) if "ft-tmp" in n]
    assert not (tmp_path / "missing-folder").exists()


@pytest.mark.parametrize("under", ["sub", "sub/deeper"])
def test_get_under_a_file_names_the_file_in_the_way(shared_server, tmp_path, env, under):
    """``get NAME FILE/sub``: one line naming FILE (it said "File exists: 'FILE/sub'")."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"x")
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/underfile/f", env=run_env).returncode == 0
    r = ft("get", "/underfile/f", str(src / under), env=run_env)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (b"filetracker: error: [Errno 20] a file is in the way of the folder to write into: '%s'\n"
                        % str(src).encode())
    assert src.read_bytes() == b"x"


def test_a_name_under_a_cached_file_is_fetched_with_a_one_line_warning(shared_server, tmp_path, env):
    """``/a`` and ``/a/b`` both stored: the cache (a folder tree) can hold only ``/a``; ``get
    /a/b`` still works, with one warning line, not a traceback."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"both")
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/fileanddir/a", env=run_env).returncode == 0
    assert ft("put", str(src), "/fileanddir/a/b", env=run_env).returncode == 0
    assert ft("get", "/fileanddir/a", str(tmp_path / "o1"), env=run_env).returncode == 0
    r = ft("get", "/fileanddir/a/b", str(tmp_path / "o2"), env=run_env)
    assert r.returncode == 0 and (tmp_path / "o2").read_bytes() == b"both"
    assert b"Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert b"could not add /fileanddir/a/b@" in r.stderr and b"Not a directory" in r.stderr, r.stderr


def test_get_keeps_the_mode_of_the_file_it_replaces(shared_server, tmp_path, env):
    src = tmp_path / "in.txt"
    src.write_bytes(b"secret")
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/keepmode/f", env=run_env).returncode == 0
    out = tmp_path / "out.txt"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    assert ft("get", "/keepmode/f", str(out), "--no-cache", env=run_env).returncode == 0
    assert out.read_bytes() == b"secret" and stat.S_IMODE(os.stat(out).st_mode) == 0o640


def test_get_into_an_unwritable_folder_names_the_file(shared_server, tmp_path, env):
    src = tmp_path / "in.txt"
    src.write_bytes(b"x")
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/unwritable/f", env=run_env).returncode == 0
    r = ft("get", "/unwritable/f", "/proc/cannot-write-here", "--no-cache", env=run_env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert b"/proc/cannot-write-here" in r.stderr and b"ft-tmp" not in r.stderr, r.stderr


def test_cat_into_a_closed_pipe_ends_quietly(shared_server, tmp_path, env):
    """``filetracker cat big | head -c 10``: the reader stops; no error text, status 141
    (as a tool killed by SIGPIPE)."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 << 20))
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/pipe/big", env=run_env).returncode == 0
    r = subprocess.run("set -o pipefail; %s cat /pipe/big | head -c 10 > /dev/null" % script("filetracker"),
                       shell=True, executable="/bin/bash", capture_output=True, timeout=60, env=run_env)
    assert (r.returncode, r.stderr) == (141, b"")



def test_cat_keeps_the_file_in_the_cache_unless_no_cache(shared_server, tmp_path, env):
    """2.x ``cat`` was a ``get`` with the cache on: scripts that cat online read offline later.
    Ours cached nothing, and ``cat -c`` was accepted and meant nothing."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"cat me\n")
    put_env = dict(env, FILETRACKER_URL=shared_server.url, FILETRACKER_DIR=str(tmp_path / "putcache"))
    assert ft("put", str(src), "/catcache/f", env=put_env).returncode == 0
    online = dict(env, FILETRACKER_URL=shared_server.url)
    r = ft("cat", "-c", "/catcache/f", env=online)
    assert r.returncode == 0 and r.stdout == b"cat me\n"
    assert ft("cat", "/catcache/f", env=env).returncode == 1   # offline: -c left nothing behind
    r = ft("cat", "/catcache/f", env=online)
    assert r.returncode == 0 and r.stdout == b"cat me\n"
    r = ft("cat", "/catcache/f", env=env)                       # offline, from the cache
    assert (r.returncode, r.stdout) == (0, b"cat me\n"), r.stderr


def test_a_version_the_server_does_not_have_is_named_with_the_one_it_has(shared_server, tmp_path, env):
    """It said "not found: NAME@V", as if the file did not exist (2.x: "Version ... not available.
    Server has ...", in a traceback)."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"x")
    run_env = dict(env, FILETRACKER_URL=shared_server.url)
    assert ft("put", str(src), "/vna/f@1700000000", env=run_env).returncode == 0
    for cmd in (["get", "/vna/f@1600000000", str(tmp_path / "out")], ["cat", "/vna/f@1600000000"]):
        r = ft(*cmd, env=run_env)
        assert (r.returncode, r.stderr) == (1, b"filetracker: error: version 1600000000 of /vna/f is not "
                                               b"available (the server has version 1700000000)\n"), r.stderr
    r = ft("get", "/vna/missing@1600000000", str(tmp_path / "out"), env=run_env)
    assert r.stderr == b"filetracker: error: not found: /vna/missing@1600000000\n"
