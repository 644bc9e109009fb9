"""The README's "Five-minute tour", run as written.

The ``sh`` blocks of that section are taken from README.md and run in order,
in one bash process (``set -euo pipefail``, so a failing command fails the
step), in a copy of the files the tour uses (README.md, deploy/, scripts/)
whose ``.venv`` is the interpreter running the tests.  The only thing changed
is where the cluster listens: ``FILETRACKER_LOCAL_PORT`` (honoured by the
launcher) picks free ports, so the test never meets a cluster the user runs.
The cluster is stopped at the end whatever happens.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support.procs import ROOT, free_port_range

pytestmark = pytest.mark.slow

SECTION = "## Five-minute tour"


def tour_blocks(readme_text):
    """The ```sh blocks of the tour section, in order."""
    start = readme_text.index(SECTION)
    end = readme_text.find("\n## ", start + len(SECTION))
    section = readme_text[start:end if end != -1 else len(readme_text)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_readme_tour_runs_as_written(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = tour_blocks(readme)
    assert len(blocks) >= 6, "the tour lost its shell blocks"
    # The first command of the README is the tour's first command.
    first = re.search(r"```sh\n(?:#.*\n)*(.+)", readme).group(1).strip()
    assert first == "deploy/local-cluster.sh start" and blocks[0].lstrip().startswith(first)

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(os.path.join(ROOT, "README.md"), repo / "README.md")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), repo / "pyproject.toml")
    for folder in ("deploy", "scripts"):
        shutil.copytree(os.path.join(ROOT, folder), repo / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "local-cluster"))
    os.symlink(sys.prefix, repo / ".venv")

    script = ["set -euo pipefail"]
    for i, block in enumerate(blocks):
        script += ["echo '@@ step %d'" % i, block, "echo '@@ step %d ok'" % i]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FILETRACKER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["FILETRACKER_LOCAL_PORT"] = str(free_port_range(6))
    env["HOME"] = str(tmp_path / "home")
    try:
        proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=150, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run([os.path.join(repo, "deploy", "local-cluster.sh"), "stop"], cwd=repo, env=env,
                       capture_output=True, timeout=60)
    out = proc.stdout
    print(out[-6000:])
    report = "exit %d\n--- stdout\n%s\n--- stderr\n%s" % (proc.returncode, out[-5000:], proc.stderr[-5000:])
    assert proc.returncode == 0, report
    for i in range(len(blocks)):
        assert "@@ step %d ok" % i in out, report

    steps = out.split("@@ step ")
    start, cli, python, kill, back, grow, stop = (steps[2 * i + 1] for i in range(7))
    assert "filetracker cluster is up: 3 nodes + gateway" in start and "all nodes up" in start
    assert "/tour/readme.md@" in cli and "# filetracker, replicated" in cli
    assert "/tour/launcher.py@" in python and "# filetracker, replicated" in python
    assert "# filetracker, replicated" in kill and "/tour/written-while-down.toml@" in kill
    assert "DOWN" in kill and "a node is down" in kill
    assert "balanced" in back and "all nodes up" in back
    assert "ring epoch 2" in grow and re.search(r"4 nodes, N=3", grow) and "balanced" in grow
    assert "stopped the cluster" in stop
    assert not os.path.exists(repo / "local-cluster" / "run" / "node1.pid")
