"""filetracker-migrate: a tree of plain files goes to the server with mtimes as versions."""

import os
import subprocess

from filetracker.client import Client
from tests.support.procs import script


def test_migrate_tree(shared_server, tmp_path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    files = {"top.txt": b"top", "a/one": b"1" * 1000, "a/b/two": b""}
    for i, (rel, data) in enumerate(sorted(files.items())):
        p = tree / rel
        p.write_bytes(data)
        os.utime(p, (1600000000 + i, 1600000000 + i))
    r = subprocess.run([script("filetracker-migrate"), str(tree / "a"), shared_server.url,
                        "--root", str(tree), "-s"], capture_output=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    r = subprocess.run([script("filetracker-migrate"), str(tree), shared_server.url],
                       capture_output=True, timeout=60)
    assert r.returncode == 0
    c = Client(local_store=None, remote_url=shared_server.url)
    for i, (rel, data) in enumerate(sorted(files.items())):
        stream, vname = c.get_stream("/" + rel)
        assert (stream.read(), vname) == (data, "/%s@%d" % (rel, 1600000000 + i))
        stream.close()
    r = subprocess.run([script("filetracker-migrate"), str(tree), "http://127.0.0.1:1", "-s"],
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and b"ERROR when uploading" in r.stderr


def test_migrate_root_below_the_tree_is_a_usage_error(shared_server, tmp_path):
    """Names are paths relative to --root: a root that is not FILES_DIR or above it gave one
    "'..' components" error per file."""
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top")
    for root in (tree / "a", tmp_path / "elsewhere"):
        r = subprocess.run([script("filetracker-migrate"), str(tree), shared_server.url, "--root", str(root), "-s"],
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (2, ""), r.stderr
        assert r.stderr == ("filetracker-migrate: error: --root %s must be FILES_DIR or a folder above it (names "
                            "are paths relative to it)\n" % root)


def test_migrate_follows_links_to_files(shared_server, tmp_path):
    """A symbolic link to a file is uploaded as that file (as 2.x did; it was skipped without a
    word); a link to a folder is not followed."""
    tree, outside = tmp_path / "linked", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    target = outside / "one.txt"
    target.write_bytes(b"through a link")
    os.utime(target, (1600000100, 1600000100))
    (outside / "sub" / "deep.txt").write_bytes(b"not followed")
    tree.mkdir()
    os.symlink(target, tree / "link.txt")
    os.symlink(outside / "sub", tree / "dirlink")
    r = subprocess.run([script("filetracker-migrate"), str(tree), shared_server.url, "-s"],
                       capture_output=True, timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")
    c = Client(local_store=None, remote_url=shared_server.url)
    stream, vname = c.get_stream("/link.txt")
    with stream:
        assert (stream.read(), vname) == (b"through a link", "/link.txt@1600000100")
    assert c.list_remote_files(subpath="/dirlink") == []

