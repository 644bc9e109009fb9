"""Issue 5, acceptance 3: access control with ``--auth-file`` on the single server and on a gateway.

Tokens are made with ``filetracker-admin token add`` (the real command).  Each
behaviour runs against both a ``filetracker-server`` and a gateway over 3 nodes:
401 + ``WWW-Authenticate`` without credentials, 403 outside the scope or prefix,
HTTP Basic (``http://user:token@host``, our Client and the published 2.x client)
and Bearer accepted, ``/version/`` open, and no token in any log line or message.
"""

import json
import subprocess
import textwrap

import pytest
import requests

from filetracker.client import Client
from filetracker.errors import RemoteError
from tests.cluster.conftest import NodeCluster
from tests.interop.ft2 import clean_env, require
from tests.security.conftest import start_gateway
from tests.security.support import basic, raw, wait_until
from tests.support.procs import Service, free_port, script

pytestmark = pytest.mark.security

LM = {"last_modified": "Sat, 23 Nov 2024 22:13:20 -0000"}


def add_token(path, user, scope, prefix=None):
    argv = [script("filetracker-admin"), "token", "add", "--auth-file", path, "--user", user, "--scope", scope]
    if prefix:
        argv += ["--prefix", prefix]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token and "\n" not in token and token not in r.stderr
    return token


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    path = str(d / "tokens.jsonl")
    t = {"path": path}
    for user, scope, prefix in [("w", "write", None), ("r", "read", None), ("p", "write", "/p"),
                                ("adm", "admin", None)]:
        t[user] = add_token(path, user, scope, prefix)
    text = open(path).read()
    assert not any(t[u] in text for u in ("w", "r", "p", "adm"))
    return t


class AuthTarget:
    def __init__(self, kind, url, logs):
        self.kind = kind
        self.url = url
        self.logs = logs  # callable -> text of every log of the processes behind url

    def with_creds(self, user, token):
        return self.url.replace("http://", "http://%s:%s@" % (user, token))


@pytest.fixture(scope="module", params=["server", "gateway"])
def target(request, tokens, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "server":
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        log = str(d / "server.log")
        svc = Service([script("filetracker-server"), "-d", str(d / "data"), "-p", str(port),
                       "--auth-file", tokens["path"], "--log-level", "DEBUG"], log,
                      ready_url=url + "/version/").start()
        try:
            yield AuthTarget("server", url, lambda: open(log, errors="replace").read())
        finally:
            svc.stop()
    else:
        nodes3 = request.getfixturevalue("nodes3")
        g = start_gateway(nodes3, ["--auth-file", tokens["path"], "--log-level", "DEBUG"], d)

        def logs():
            return g.log() + "".join(open(s.log_path, errors="replace").read() for s in nodes3.services)
        try:
            yield AuthTarget("gateway", g.url, logs)
        finally:
            g.stop()


def test_no_credentials_401_version_open(target):
    r = requests.put(target.url + "/files/a/x", params=LM, data=b"x", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
    assert "authentication required" in r.headers["X-Exception"]
    for path in ("/files/a/x", "/list/a", "/list/"):
        r = requests.get(target.url + path, timeout=10)
        assert r.status_code == 401 and r.headers.get("X-Exception"), path
    r = requests.get(target.url + "/version/", timeout=10)
    assert r.status_code == 200 and r.json() == {"protocol_versions": [2]}


def test_our_client_write_and_read_tokens(target, tokens, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"written with a write token\n" * 100)
    writer = Client(cache_dir=str(tmp_path / "c1"), remote_url=target.with_creds("w", tokens["w"]))
    vname = writer.put_file("/auth/ours.txt@1732400000", str(src))
    assert vname == "/auth/ours.txt@1732400000"
    reader = Client(cache_dir=str(tmp_path / "c2"), remote_url=target.with_creds("r", tokens["r"]))
    reader.get_file("/auth/ours.txt", str(tmp_path / "got"), add_to_cache=False)
    assert (tmp_path / "got").read_bytes() == src.read_bytes()
    assert "ours.txt" in reader.list_remote_files(subpath="/auth")
    with pytest.raises(RemoteError) as e:
        reader.put_file("/auth/refused.txt@1732400000", str(src), to_local_store=False)
    assert e.value.status == 403 and "may not write /auth/refused.txt" in str(e.value)
    with pytest.raises(RemoteError) as e:
        reader.delete_file("/auth/ours.txt")
    assert e.value.status == 403
    bad = Client(cache_dir=str(tmp_path / "c3"), remote_url=target.with_creds("w", "not-the-token"))
    with pytest.raises(RemoteError) as e:
        bad.get_file("/auth/ours.txt", str(tmp_path / "x"), add_to_cache=False)
    assert e.value.status == 401 and "not-the-token" not in str(e.value)


def test_bearer_and_token_as_user(target, tokens):
    h = {"Authorization": "Bearer " + tokens["w"]}
    r = requests.put(target.url + "/files/auth/bearer", params=LM, data=b"bearer", headers=h, timeout=10)
    assert r.status_code == 200, r.headers
    r = requests.get(target.url + "/files/auth/bearer", headers={"Authorization": "Bearer " + tokens["r"]},
                     timeout=10)
    assert r.status_code == 200 and r.content == b"bearer"
    # http://TOKEN@host: Basic with an empty password
    r = requests.get(target.url + "/files/auth/bearer", auth=(tokens["r"], ""), timeout=10)
    assert r.status_code == 200
    r = requests.get(target.url + "/files/auth/bearer", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401 and r.headers["X-Exception"] == "invalid credentials"


def test_prefix_scope(target, tokens):
    p = ("p", tokens["p"])
    ok = requests.put(target.url + "/files/p/x", params=LM, data=b"in p", auth=p, timeout=10)
    assert ok.status_code == 200, ok.headers
    for path in ("/files/q/x", "/files/pq"):
        r = requests.put(target.url + path, params=LM, data=b"no", auth=p, timeout=10)
        assert r.status_code == 403 and "under /p" in r.headers["X-Exception"], path
    assert requests.get(target.url + "/files/p/x", auth=p, timeout=10).content == b"in p"
    assert requests.get(target.url + "/list/p", auth=p, timeout=10).text == "x\n"
    assert requests.get(target.url + "/list/", auth=p, timeout=10).status_code == 403
    assert requests.get(target.url + "/files/auth/bearer", auth=p, timeout=10).status_code == 403
    r = requests.delete(target.url + "/files/p/x", params=LM, auth=p, timeout=10)
    assert r.status_code == 200
    # an admin token may do everything
    a = ("adm", tokens["adm"])
    assert requests.put(target.url + "/files/q/adm", params=LM, data=b"a", auth=a, timeout=10).status_code == 200


def test_malformed_credentials_401(target):
    for value in ("Basic !!!", "Digest x=1", "Bearer a b", basic("nobody", "x")):
        a = raw(target.url, "GET", "/files/auth/bearer", headers={"Authorization": value})
        assert a.status == 401 and a.exception and a.headers.get("WWW-Authenticate"), (value, a)


def test_token_file_reloaded_while_running(target, tokens):
    late = add_token(tokens["path"], "late-" + target.kind, "read")
    # accepted once the file is read again: 404 or 200 (whether another test stored the file), not 401
    assert wait_until(lambda: requests.get(target.url + "/files/auth/bearer", auth=("late-" + target.kind, late),
                                           timeout=10).status_code in (200, 404), timeout=5)


DRIVER = textwrap.dedent(r'''
    import json, os, sys
    import filetracker
    from filetracker.client import Client
    assert "site-packages" in filetracker.__file__, filetracker.__file__  # the 2.x package, not ours
    write_url, read_url, work = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}
    src = os.path.join(work, "src")
    with open(src, "wb") as f:
        f.write(b"from the 2.x client\n" * 500)
    w = Client(cache_dir=os.path.join(work, "cw"), remote_url=write_url)
    out["put"] = w.put_file("/ft2/a.txt@1732400000", src)
    r = Client(cache_dir=os.path.join(work, "cr"), remote_url=read_url)
    got = os.path.join(work, "got")
    out["get"] = r.get_file("/ft2/a.txt", got, add_to_cache=False)
    out["same"] = open(got, "rb").read() == open(src, "rb").read()
    out["list"] = sorted(r.list_remote_files(subpath="/ft2"))
    try:
        r.put_file("/ft2/b.txt@1732400000", src, to_local_store=False)
        out["put_read"] = "no error"
    except Exception as e:
        out["put_read"] = "%s: %s" % (type(e).__name__, e)
    print("RESULT " + json.dumps(out))
''')


@pytest.mark.interop
def test_published_client_with_credentials_in_url(target, tokens, tmp_path):
    py = require()
    work = tmp_path / "ft2"
    work.mkdir()
    (work / "driver.py").write_text(DRIVER)
    r = subprocess.run([py, str(work / "driver.py"), target.with_creds("w", tokens["w"]),
                        target.with_creds("r", tokens["r"]), str(work)],
                       cwd=str(work), env=clean_env(work), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads([x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    assert out["put"] == "/ft2/a.txt@1732400000" and out["get"] == "/ft2/a.txt@1732400000"
    assert out["same"] and out["list"] == ["a.txt"]
    assert out["put_read"] != "no error" and "403" in out["put_read"], out
    assert requests.get(target.url + "/files/ft2/b.txt", auth=("r", tokens["r"]), timeout=10).status_code == 404


def test_zz_tokens_never_logged(target, tokens):
    """Runs last in the module (name order): every earlier request is in the logs by now."""
    # one more failing request of each kind, with the token in every credential form
    for tok in (tokens["w"], tokens["r"]):
        requests.get(target.url + "/files/nowhere", auth=("nobody", tok), timeout=10)
        requests.get(target.url + "/files/nowhere", headers={"Authorization": "Bearer " + tok + "x"}, timeout=10)
        requests.put(target.url + "/files/nowhere", data=b"x", auth=("r", tok), timeout=10)
    text = target.logs()
    assert "/files/nowhere" in text or target.kind == "gateway"  # the access log is there to be searched
    for user in ("w", "r", "p", "adm"):
        assert tokens[user] not in text, "token of %s in the log" % user
    assert "Authorization: Basic" not in text and "Bearer " + tokens["w"][:8] not in text


def test_node_with_auth_file_guards_its_public_api_only(tokens, tmp_path):
    """A node given --auth-file wants tokens on its public API; the internal API keeps the secret."""
    c = NodeCluster(tmp_path, nodes=1, replicas=1, node_args=["--auth-file", tokens["path"]]).start()
    try:
        assert c.put(0, "/n/a", b"via the internal API", 1700000000).status_code == 200
        url = c.urls[0] + "/files/n/a"
        r = requests.get(url, timeout=10)
        assert r.status_code == 401 and r.headers.get("WWW-Authenticate")
        assert requests.get(url, auth=("r", tokens["r"]), timeout=10).content == b"via the internal API"
        r = requests.get(c.urls[0] + "/_cluster/status", auth=("adm", tokens["adm"]), timeout=10)
        assert r.status_code == 403  # a token is no cluster secret
    finally:
        c.stop()


def test_the_deploy_examples_cluster_every_port_asks_for_a_token(tokens, tmp_path):
    """deploy/example: nodes and gateway given the same token file.  Nodes answer the public
    protocol too, so without the file every node served every file to anyone (the example's
    nodes had none); with it the cluster works as before through the gateway (small and
    streamed PUTs, reads, the admin's status over the internal API)."""
    c = NodeCluster(tmp_path, node_args=["--auth-file", tokens["path"]], gateway=True,
                    gateway_args=["--auth-file", tokens["path"]]).start()
    try:
        gateway = c.gateway_url.replace("http://", "http://w:%s@" % tokens["w"])
        client = Client(remote_url=gateway, cache_dir=str(tmp_path / "cache"))
        small, large = b"s" * 1000, b"L" * (3 << 20)
        client.put_file("/deploy/small", _write(tmp_path / "small", small))
        client.put_file("/deploy/large", _write(tmp_path / "large", large))
        for name, data in (("/deploy/small", small), ("/deploy/large", large)):
            assert requests.get(c.gateway_url + "/files" + name, auth=("r", tokens["r"]), timeout=30).content == data
            assert requests.get(c.gateway_url + "/files" + name, timeout=10).status_code == 401
            for url in c.urls:   # around the gateway: a token is asked for too
                assert requests.get(url + "/files" + name, timeout=10).status_code == 401
                assert requests.get(url + "/files" + name, auth=("r", tokens["r"]), timeout=30).content == data
        status = subprocess.run([script("filetracker-admin"), "--cluster", c.urls[0], "--cluster-secret-file",
                                 c.secret_file, "status"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "all nodes up" in status.stdout, status.stdout + status.stderr
    finally:
        c.stop()


def _write(path, data):
    path.write_bytes(data)
    return str(path)
