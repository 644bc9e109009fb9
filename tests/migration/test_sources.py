"""Offline source on a hand-made 2.x data folder (COMPAT.md layout), no 2.x server needed;
and the pure pieces of the importer (prefixes, summary text, the upload body adapter)."""

import gzip
import hashlib
import os

import pytest

from cluster.migrate.report import Summary
from cluster.migrate.sources import DirSource, SourceError, normalize_prefix
from cluster.migrate.target import _Body


def make_store(root, files):
    """Write a 2.x-style folder: ``files`` maps name -> (bytes, version)."""
    for name, (data, version) in files.items():
        sha = hashlib.sha256(data).hexdigest()
        blob = os.path.join(root, "blobs", sha[:2], sha)
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        with open(blob, "wb") as f:
            f.write(gzip.compress(data))
        link = os.path.join(root, "links", name.lstrip("/"))
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
        os.utime(link, (version, version), follow_symlinks=False)
    os.makedirs(os.path.join(root, "db"), exist_ok=True)


def test_dir_source_entries_and_content(tmp_path):
    files = {"/a/x.txt": (b"hello", 1500000001), "/a/b/y.bin": (os.urandom(300000), 1500000002),
             "/z": (b"", 1500000003), "/a/dup": (b"hello", 1500000004)}
    make_store(str(tmp_path), files)
    src = DirSource(str(tmp_path))
    entries = src.entries()
    assert [e.name for e in entries] == ["/a/b/y.bin", "/a/dup", "/a/x.txt", "/z"]
    for e in entries:
        data, version = files[e.name]
        assert e.version == version
        assert e.sha256 == hashlib.sha256(data).hexdigest()
        with src.open(e) as f:
            got = b"".join(f)
        assert got == data and f.sha256 == e.sha256 and f.bytes_read == len(data) and f.version == version
    assert [e.name for e in DirSource(str(tmp_path), "/a/b/").entries()] == ["/a/b/y.bin"]
    assert DirSource(str(tmp_path), "/nothing").entries() == []


def test_dir_source_corrupt_blob_is_an_error(tmp_path):
    make_store(str(tmp_path), {"/bad": (b"original", 1500000000), "/gone": (b"other", 1500000000)})
    sha = hashlib.sha256(b"original").hexdigest()
    with open(os.path.join(str(tmp_path), "blobs", sha[:2], sha), "wb") as f:
        f.write(gzip.compress(b"tampered"))
    sha2 = hashlib.sha256(b"other").hexdigest()
    os.unlink(os.path.join(str(tmp_path), "blobs", sha2[:2], sha2))
    src = DirSource(str(tmp_path))
    bad, gone = src.entries()
    with pytest.raises(SourceError, match="SHA-256"):
        with src.open(bad) as f:
            b"".join(f)
    with pytest.raises(SourceError, match="blob missing"):
        src.open(gone)


def test_dir_source_needs_links(tmp_path):
    with pytest.raises(SourceError, match="not a filetracker 2.x data folder"):
        DirSource(str(tmp_path))


@pytest.mark.parametrize("given,want", [("", ""), ("/", ""), (None, ""), ("/a/b/", "/a/b"), ("a", "/a")])
def test_normalize_prefix(given, want):
    assert normalize_prefix(given) == want


def test_normalize_prefix_refuses_dotdot():
    with pytest.raises(ValueError):
        normalize_prefix("/a/../b")


def test_body_adapter_reads_in_any_sizes():
    body = _Body(iter([b"abc", b"", b"defgh", b"i"]), 9)
    assert len(body) == 9
    assert [body.read(2), body.read(2), body.read(100), body.read(-1), body.read(3)] == [
        b"ab", b"c", b"defgh", b"i", b""]


def test_summary_text_and_rates():
    s = Summary(total=10, copied=4, copied_bytes=4096, skipped={"present": 3, "deleted": 1},
                failed=[("/x", "PUT answered 503 not enough replicas")], elapsed=2.0)
    assert s.files_per_second() == 2.0 and s.bytes_per_second() == 2048.0
    assert s.text().splitlines() == [
        "copied 4 of 10 files (4.0 KiB) in 2.0s: 2.0 files/s, 2.0 KiB/s",
        "skipped 4",
        "  3 already in the cluster at the same version",
        "  1 deleted in the cluster (the delete wins)",
        "failed 1",
        "  /x: PUT answered 503 not enough replicas",
    ]


def test_progress_plain_lines():
    import io

    from cluster.migrate.report import Progress

    out = io.StringIO()
    p = Progress(3, stream=out, interval=0)
    p.file_done("/a", "copied", 10, version=5)
    p.file_done("/b", "present", 0, version=6)
    p.file_done("/c", "failed", 0, "PUT answered 503", version=7)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "copied /a@5 10"
    assert "failed /c@7: PUT answered 503" in lines
    assert [line.split(",")[0] for line in lines if line.startswith("progress:")] == [
        "progress: 1/3 files", "progress: 2/3 files", "progress: 3/3 files"]


def test_progress_bar_on_a_terminal():
    import io

    from cluster.migrate.report import Progress

    out = io.StringIO()
    p = Progress(2, stream=out, interactive=True)
    p.file_done("/a", "copied", 2048, version=1)
    p.file_done("/b", "failed", 0, "boom", version=2)
    p.close()
    text = out.getvalue()
    assert "2/2" in text and "file" in text          # the tqdm bar counts files
    assert "failed /b@2: boom" in text                # failures are still listed
    assert "copied /a" not in text                    # copies are not, on a terminal
