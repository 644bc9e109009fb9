"""Shared pieces of the operations tests: clusters, /metrics scraping, headless Chromium, artifacts."""

import os
import shutil
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import SECRET, NodeCluster, cluster_factory, wait_until  # noqa: F401 - re-exported
from tests.support.procs import ROOT

#: Screenshots and other files kept after a run ($FILETRACKER_TEST_ARTIFACTS, default tests/artifacts).
ARTIFACTS = os.environ.get("FILETRACKER_TEST_ARTIFACTS") or os.path.join(ROOT, "tests", "artifacts")


def artifacts_dir(sub="ops"):
    path = os.path.join(ARTIFACTS, sub)
    os.makedirs(path, exist_ok=True)
    return path


class Samples(dict):
    """Parsed samples; ``body_bytes`` is the size of the answer (a scrape is a GET the next scrape counts)."""

    body_bytes = 0


def scrape(base_url):
    """``{(sample name, ((label, value), ...)): value}`` of ``GET base_url/metrics``, parsed by prometheus-client."""
    r = requests.get(base_url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    samples = Samples()
    samples.body_bytes = len(r.content)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples, name, **labels):
    """One sample's value (0 when absent: a labelled counter not yet incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def ops_cluster(cluster_factory):  # noqa: F811 - the fixture imported above
    """``make(**NodeCluster kwargs)``: a started cluster, stopped at teardown (``cluster_factory``)."""
    return cluster_factory


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_page(url, profile_dir, screenshot=None, timeout=60):
    """The DOM of ``url`` after loading it in headless Chromium (and a PNG screenshot if asked)."""
    argv = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--user-data-dir=%s" % profile_dir, "--window-size=1200,800"]
    if screenshot:
        argv.append("--screenshot=%s" % screenshot)
    argv += ["--dump-dom", url]
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, start_new_session=True)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    return proc.stdout.decode("utf-8", "replace")
