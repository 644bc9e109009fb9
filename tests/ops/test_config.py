"""``--config FILE`` (TOML) on node, gateway and server: flags override the file, and a bad
file is one error line naming the key, exit status 2."""

import argparse
import glob
import os
import subprocess

import pytest
import requests

from filetracker.configfile import ConfigError, file_arguments, parse_args
from tests.support.procs import ROOT, Service, free_port, script

PROGRAMS = {"node": "filetracker-node", "gateway": "filetracker-gateway", "server": "filetracker-server"}


def run(program, *argv, timeout=30):
    proc = subprocess.run([script(PROGRAMS[program]), *argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.returncode, proc.stdout, proc.stderr


def write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# (program, file text, the key the one-line error must name)
BAD = [
    ("node", 'dir = "d"\nport = 9401\nprot = 9402\n', "prot"),
    ("node", 'dir = "d"\nport = "nine"\n', "port"),
    ("node", 'dir = "d"\nport = 9401\nallow-public-writes = "yes"\n', "allow-public-writes"),
    ("node", 'dir = "d"\nport = 70000\n', "port"),                       # the node's own range check
    ("node", 'dir = "d"\nport = 9401\nlog-level = "LOUD"\n', "log-level"),
    ("node", 'dir = "d"\nport = 9401\n[extra]\nx = 1\n', "extra"),
    ("node", 'dir = "d"\nport = 9401\ncluster-secret-file = "/nonexistent/secret"\n', "cluster-secret-file"),
    ("gateway", 'port = 9400\nnodes = ["http://127.0.0.1:1"]\nwrite_quorum = "two"\n', "write_quorum"),
    ("gateway", 'port = 9400\nnodes = "http://127.0.0.1:1"\nunknown-thing = 1\n', "unknown-thing"),
    ("gateway", 'port = 9400\nnodes = "http://127.0.0.1:1"\nlog-level = "LOUD"\n', "log-level"),
    ("gateway", 'port = 9400\nnodes = "http://127.0.0.1:1"\ntimeout = -1\n', "timeout"),
    ("gateway", 'port = 9400\nnodes = "http://127.0.0.1:1"\ntimeout = nan\n', "timeout"),  # hung every GET
    ("node", 'dir = "d"\nport = 9401\nsync-interval = nan\n', "sync-interval"),         # spun at 100 % CPU
    ("node", 'dir = "d"\nport = 9401\nreclaim-interval = inf\n', "reclaim-interval"),   # killed its thread
    ("node", 'dir = "d"\nport = 9401\nreclaim-interval = 0\n', "reclaim-interval"),     # was 3600, silently
    ("node", 'dir = "d"\nport = 9401\npeer-timeout = 0\n', "peer-timeout"),             # was 10, silently
    ("server", 'dir = "d"\nbody-idle-timeout = nan\n', "body-idle-timeout"),            # 408 on every PUT
    ("server", 'dir = "d"\nworkers = 0\n', "workers"),
    ("server", 'dir = "d"\nport = [1, 2]\n', "port"),
    ("server", 'dir = "d"\nread-only = 1\n', "read-only"),
    ("server", 'dir = "d"\nhelp = true\n', "help"),
]


def _main(program):
    """The service's entry point, called in this process (the bad cases exit before serving)."""
    if program == "node":
        from cluster.node.main import main
    elif program == "gateway":
        from cluster.gateway.main import main
    else:
        from filetracker.server.main import main
    return main


def _check_one_line(program, path, key, code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "'%s'" % key in lines[0] and path in lines[0], lines[0]
    assert lines[0].startswith(PROGRAMS[program] + ": error:"), lines[0]


@pytest.mark.parametrize("program,text,key", BAD, ids=["%s-%s-%d" % (p, k, i) for i, (p, _, k) in enumerate(BAD)])
def test_bad_config_is_one_line_naming_the_key_and_exit_2(tmp_path, capsys, program, text, key):
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as e:
        _main(program)(["--config", path])
    _check_one_line(program, path, key, e.value.code, capsys.readouterr().err)


@pytest.mark.parametrize("program,text,key", [next(b for b in BAD if b[0] == p) for p in PROGRAMS])
def test_bad_config_real_process(tmp_path, program, text, key):
    """The same through the installed console scripts: the exit status of the process is 2."""
    path = write(tmp_path, text)
    code, out, err = run(program, "--config", path)
    _check_one_line(program, path, key, code, err)


def test_unreadable_and_malformed_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _main("node")(["--config", str(tmp_path / "missing.toml")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "missing.toml" in err
    with pytest.raises(SystemExit) as e:
        _main("gateway")(["--config", write(tmp_path, "port = = 1\n")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "not valid TOML" in err
    latin1 = tmp_path / "latin1.toml"  # a comment saved in Latin-1: was a UnicodeDecodeError traceback
    latin1.write_bytes(b'port = 9400\n# caf\xe9\n')
    for program in PROGRAMS:
        code, out, err = run(program, "--config", str(latin1))
        assert code == 2 and err.strip().splitlines() == [
            "%s: error: config %s: not valid TOML: not UTF-8 text (byte 0xe9 at offset 17)" % (PROGRAMS[program], latin1)], err


def test_node_from_a_file_flags_override(tmp_path):
    file_port, flag_port = free_port(), free_port()
    path = write(tmp_path, 'dir = "%s"\nport = %d\nlog_format = "json"\nno-background = true\n'
                 % (tmp_path / "data", file_port), name="node.toml")
    url = "http://127.0.0.1:%d" % flag_port
    svc = Service([script("filetracker-node"), "--config", path, "--port", str(flag_port)],
                  str(tmp_path / "node.log"), ready_url=url + "/version/").start()
    try:
        status = requests.get(url + "/_cluster/status", timeout=10).json()
        assert status["id"] == url                       # the flag's port won
        assert status["tasks"]["sync"]["passes"] == 0     # no-background = true from the file
        assert os.path.isdir(tmp_path / "data")
    finally:
        svc.stop()
    assert '"logger": "cluster.node"' in svc.log_tail()   # log_format = "json" (underscore form)


def test_every_example_configuration_is_valid(capsys):
    """deploy/example/*.toml pass the services' own validation (``--config F --help`` exits 0)."""
    examples = sorted(glob.glob(os.path.join(ROOT, "deploy", "example", "*.toml")))
    assert len(examples) >= 5
    for path in examples:
        base = os.path.basename(path)
        program = "node" if base.startswith("node") else "gateway" if base.startswith("gateway") else "server"
        with pytest.raises(SystemExit) as e:
            _main(program)(["--config", path, "--help"])
        captured = capsys.readouterr()
        assert e.value.code == 0, (path, captured.err)
        assert "usage:" in captured.out


def _parser():
    p = argparse.ArgumentParser(prog="t")
    p.add_argument("--dir", "-d")
    p.add_argument("--port", type=int)
    p.add_argument("--peers", action="append", default=[])
    p.add_argument("--nodes")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--level", choices=["A", "B"])
    p.add_argument("--listen-on", "--host", dest="host")
    return p


def test_file_arguments_exact(tmp_path):
    path = write(tmp_path, 'dir = "/srv/x"\nport = 9401\npeers = ["http://a:1", "http://b:2"]\n'
                           'nodes = ["http://c:3", "http://d:4"]\nfast = true\nlevel = "B"\nhost = "::"\n')
    argv, keys, appended = file_arguments(_parser(), path)
    assert appended == {"peers": 2}
    assert argv == ["--dir=/srv/x", "--port=9401", "--peers=http://a:1", "--peers=http://b:2",
                    "--nodes=http://c:3,http://d:4", "--fast", "--level=B", "--host=::"]
    assert keys["--port"] == "port" and keys["-d"] == "dir" and keys["--listen-on"] == "host"
    args = _parser().parse_args(argv + ["--port", "1"])
    assert args.port == 1 and args.peers == ["http://a:1", "http://b:2"] and args.fast and args.host == "::"
    # false leaves a flag off
    argv, _, _ = file_arguments(_parser(), write(tmp_path, "fast = false\n", "f.toml"))
    assert argv == []


def test_a_repeatable_option_on_the_command_line_replaces_the_files(tmp_path):
    """The command line overrides the file for every option; ``--peers`` was added to the file's
    list instead (peers = [a, b] plus --peers c gave [a, b, c])."""
    path = write(tmp_path, 'peers = ["http://a:1", "http://b:2"]\nport = 9401\n', "p.toml")
    parse = lambda *argv: parse_args(_parser(), ["--config", path, *argv])  # noqa: E731
    assert parse().peers == ["http://a:1", "http://b:2"]
    assert parse("--peers", "http://c:3").peers == ["http://c:3"]
    assert parse("--peers=http://c:3", "--peers", "http://d:4", "--port", "1").peers == ["http://c:3", "http://d:4"]
    assert parse_args(_parser(), ["--peers", "http://e:5"]).peers == ["http://e:5"]   # no file


@pytest.mark.parametrize("text,message", [
    ("porte = 1\n", "key 'porte': unknown key"),
    ("port = 1.5\n", "key 'port': invalid int value: '1.5'"),
    ("level = \"C\"\n", "key 'level': 'C' is not one of A, B"),
    ("fast = 1\n", "key 'fast': expected true or false, got int"),
    ("dir = true\n", "key 'dir': expected a string or a number, got a boolean"),
    ("dir = [\"a\", [\"b\"]]\n", "key 'dir': expected a string or a number, got a list"),
    ("[t]\na = 1\n", "key 't': unknown table (the file is flat: key = value)"),
])
def test_file_arguments_errors_exact(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        file_arguments(_parser(), write(tmp_path, text))
    assert str(e.value) == message
