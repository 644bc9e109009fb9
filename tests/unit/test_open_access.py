"""The warning a service logs at start when it listens beyond loopback without a token file
(filetracker/server/main.py): the deploy example's nodes served every file to anyone."""

import pytest

from filetracker.server.main import open_access_warning


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_needs_no_warning(host):
    assert open_access_warning("filetracker-node", host, 9401, None, "reads") is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.11", "node1.example", ""])
def test_a_token_file_needs_no_warning(host):
    assert open_access_warning("filetracker-gateway", host, 9400, "/etc/filetracker/auth.tokens",
                               "reads and writes") is None


def test_the_warning_beyond_loopback_exact():
    assert open_access_warning("filetracker-node", "0.0.0.0", 9401, None, "reads") == (
        "filetracker-node listens on 0.0.0.0:9401 without --auth-file: anyone who can reach that port "
        "reads every file (--auth-file turns access control on; docs/SECURITY.md)")
    assert open_access_warning("filetracker-server", "", 9999, None, "reads and writes") == (
        "filetracker-server listens on *:9999 without --auth-file: anyone who can reach that port "
        "reads and writes every file (--auth-file turns access control on; docs/SECURITY.md)")
    assert "10.0.0.11:9400" in open_access_warning("filetracker-gateway", "10.0.0.11", 9400, None, "reads")
    assert "node1.example:9400" in open_access_warning("filetracker-gateway", "node1.example", 9400, None, "reads")


def _node_config(tmp_path, *extra):
    from cluster.node.main import build_parser, config_from_args

    parser = build_parser()
    args = parser.parse_args(["--dir", str(tmp_path), "--port", "9401", *extra])
    return config_from_args(parser, args)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.11", "node1.example"])
def test_a_node_beyond_loopback_without_a_cluster_secret_refuses_to_start(tmp_path, capsys, host):
    """/_cluster/* is guarded by the cluster secret alone (--auth-file does not cover it): a node
    reachable from other machines without one served writes, deletes and rings to anyone."""
    tokens = tmp_path / "auth.tokens"
    tokens.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        _node_config(tmp_path, "--host", host, "--auth-file", str(tokens))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "without --cluster-secret-file would open the internal API" in err, err
    assert "--insecure-open-internal-api" in err


def test_a_node_on_loopback_or_told_so_starts_without_a_cluster_secret(tmp_path):
    assert _node_config(tmp_path).cluster_secret is None
    config = _node_config(tmp_path, "--host", "0.0.0.0", "--insecure-open-internal-api")
    assert config.cluster_secret is None
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    secret.chmod(0o600)
    assert _node_config(tmp_path, "--host", "0.0.0.0", "--cluster-secret-file", str(secret)).cluster_secret
