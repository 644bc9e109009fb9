"""Fixtures for client tests: a real server subprocess and cache folders."""

import pytest

from tests.client.servers import start_server


@pytest.fixture
def server(tmp_path):
    s = start_server(tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("client-shared"))
    yield s
    s.stop()


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "cache")
