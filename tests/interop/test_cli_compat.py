"""The 2.x ``filetracker`` command forms give the same output and exit status with our command.

Both tools run the same script of COMPAT.md forms against our server (each on
its own fresh names); stdout and the exit status of every step must match.
Versioned names differ only by the version, which we normalise.
"""

import os
import re
import subprocess

import pytest

from tests.client.servers import start_server
from tests.interop.ft2 import clean_env, ft2_script, require
from tests.support.procs import script

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def steps(prefix):
    n = "/compat/%s/file.txt" % prefix
    return [
        ["put", "in.txt", n],
        ["put", "in.txt", n + "@1000"],            # stale: the server keeps the newer version
        ["put", "--no-remote-cache", "in.txt", n + ".local"],
        ["get", n, "out.txt"],
        ["get", "-c", "-f", n, "out2.txt"],
        ["cat", n],
        ["version", n],
        ["version", "/compat/%s/missing" % prefix],
        ["get", "/compat/%s/missing" % prefix, "x.txt"],
        ["cat", "/compat/%s/missing" % prefix],
        ["put", "--no-local-cache", "in.txt", n + ".nolocal"],
        ["get", "--no-cache", "--refresh", n, "out3.txt"],   # long spellings
        ["-v", "version", n],                                # -v: stdout unchanged
        ["ENV", "version", n],                               # FILETRACKER_URL / FILETRACKER_DIR defaults
        ["ENV", "cat", n + ".nolocal"],
        ["NOGLOBALS", "--remote-url", "URL", "--cache-dir", "CACHE", "--verbose", "get", n, "out4.txt"],
        ["rm", n],
        ["rm", n],                                  # already gone
        ["put", "missing-local-file", n],
        ["get", n],                                  # usage error
        [],                                          # no command
        ["frobnicate"],                              # unknown command
    ]


def run_all(tool, url, work, prefix, env):
    work.mkdir()
    (work / "in.txt").write_bytes(b"hello compat\n")
    results = []
    cache = str(work / "cache")
    for args in steps(prefix):
        run_env = env
        if args[:1] == ["ENV"]:  # defaults from the environment instead of -r/-c
            argv = [tool] + args[1:]
            run_env = dict(env, FILETRACKER_URL=url, FILETRACKER_DIR=cache)
        elif args[:1] == ["NOGLOBALS"]:
            argv = [tool] + [url if a == "URL" else cache if a == "CACHE" else a for a in args[1:]]
        else:
            argv = [tool, "-r", url, "-c", cache] + args
        r = subprocess.run(argv, cwd=str(work), env=run_env, capture_output=True, timeout=60)
        out = r.stdout.decode("utf-8", "replace").replace(prefix, "P")
        out = re.sub(r"@\d+", "@V", out)
        out = re.sub(r"^\d{9,}$", "V", out, flags=re.M)
        results.append((args, r.returncode, out))
    files = {}
    for f in ("out.txt", "out2.txt", "out3.txt", "out4.txt"):
        p = work / f
        files[f] = p.read_bytes() if p.exists() else None
    return results, files


def test_filetracker_command_matches_2x(tmp_path):
    require()
    server = start_server(tmp_path)
    try:
        theirs = run_all(ft2_script("filetracker"), server.url, tmp_path / "ft2", "two", clean_env(tmp_path))
        env = dict(os.environ, HOME=str(tmp_path))
        env.pop("FILETRACKER_URL", None)
        ours = run_all(script("filetracker"), server.url, tmp_path / "ours", "our", env)
    finally:
        server.stop()
    for (args, rc2, out2), (_, rc3, out3) in zip(theirs[0], ours[0], strict=True):
        assert (args, rc3, out3) == (args, rc2, out2)
    assert ours[1] == theirs[1] == dict.fromkeys(("out.txt", "out2.txt", "out3.txt", "out4.txt"), b"hello compat\n")
