"""Unit tests of filetracker.auth: hashing, file format, credentials, scope decisions (pinned values)."""

import base64
import os
import stat
import threading

import pytest

from filetracker.auth import (
    AuthFileError,
    BadCredentials,
    Credentials,
    Need,
    Token,
    TokenFile,
    TokenTable,
    add_token,
    hash_token,
    make_token,
    new_token,
    normalize_prefix,
    parse_authorization,
    prefix_covers,
    remove_tokens,
    required_access,
)

pytestmark = pytest.mark.security

SALT = "00" * 16


def basic(user, token):
    return "Basic " + base64.b64encode(("%s:%s" % (user, token)).encode()).decode()


def test_hash_is_salted_sha256_pinned():
    assert hash_token("secret-token", "00112233445566778899aabbccddeeff") == \
        "7f46bda10478b9467f6489f1ebf59181e95d825612edc40d9d26d47a854e2546"
    assert hash_token("tok", SALT) == "09ef7f8601729600f420114648b3e922c0230f02e26b81b26f7018cfd659b0cd"
    assert hash_token("tok", "11" * 16) != hash_token("tok", SALT)


def test_make_token_line_pinned():
    entry, token = make_token("alice", "write", "/p/", token="tok", salt=SALT)
    assert token == "tok"
    assert entry.to_json() == ('{"user": "alice", "scope": "write", "prefix": "/p", "salt": "%s", '
                               '"sha256": "09ef7f8601729600f420114648b3e922c0230f02e26b81b26f7018cfd659b0cd"}' % SALT)
    assert entry.matches("tok") and not entry.matches("tok2") and not entry.matches("")
    # no prefix: the key is left out
    entry, _ = make_token("bob", "read", None, token="x", salt=SALT)
    assert '"prefix"' not in entry.to_json() and entry.prefix == "/"


def test_new_token_is_random_and_url_safe():
    a, b = new_token(), new_token()
    assert a != b and len(a) == 43
    assert all(c.isalnum() or c in "-_" for c in a)


@pytest.mark.parametrize("raw,norm", [(None, "/"), ("", "/"), ("/", "/"), ("/p", "/p"), ("/p/", "/p"),
                                      ("/a//b/", "/a/b")])
def test_normalize_prefix(raw, norm):
    assert normalize_prefix(raw) == norm


@pytest.mark.parametrize("bad", ["p", "/a/../b", "/./a", "/a@1", "/a\0b"])
def test_normalize_prefix_refuses(bad):
    with pytest.raises(ValueError):
        normalize_prefix(bad)


def test_prefix_covers_folder_boundaries():
    assert prefix_covers("/", "/anything")
    assert prefix_covers("/p", "/p") and prefix_covers("/p", "/p/x/y")
    assert not prefix_covers("/p", "/pq") and not prefix_covers("/p", "/") and not prefix_covers("/p/x", "/p")


def test_scopes_imply_lower_ones():
    r = Token("u", "read", "/", SALT, hash_token("t", SALT))
    w = Token("u", "write", "/p", SALT, hash_token("t", SALT))
    a = Token("u", "admin", "/", SALT, hash_token("t", SALT))
    assert r.allows("read", "/x") and not r.allows("write", "/x") and not r.allows("admin")
    assert w.allows("read", "/p/x") and w.allows("write", "/p/x") and not w.allows("write", "/q")
    assert not w.allows("admin")
    assert a.allows("read", "/x") and a.allows("write", "/x") and a.allows("admin")


@pytest.mark.parametrize("header,expected", [
    (None, None),
    ("", None),
    ("Bearer abc", Credentials(None, "abc")),
    ("bearer  abc ", Credentials(None, "abc")),
    (basic("alice", "tok"), Credentials("alice", "tok")),
    (basic("alice", "t:o:k"), Credentials("alice", "t:o:k")),  # only the first colon splits
    (basic("tok", ""), Credentials(None, "tok")),  # http://TOKEN@host
])
def test_parse_authorization(header, expected):
    assert parse_authorization(header) == expected


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                                    "Basic " + base64.b64encode(b":").decode(), "Digest x=1", "Token abc",
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
def test_parse_authorization_refuses(header):
    with pytest.raises(BadCredentials):
        parse_authorization(header)


def test_credentials_repr_hides_token():
    assert "secret" not in repr(Credentials("u", "secret"))


@pytest.mark.parametrize("method,path,need", [
    ("GET", "/version/", None),
    ("GET", "/version", None),
    ("PUT", "/_cluster/files/a", None),
    ("GET", "/_cluster/ring", None),
    ("GET", "/files/a/b", Need("read", "/a/b")),
    ("HEAD", "/files/a/b", Need("read", "/a/b")),
    ("PUT", "/files/a/b", Need("write", "/a/b")),
    ("DELETE", "/files/a/b@1700000000", Need("write", "/a/b")),
    ("POST", "/files/a", Need("write", "/a")),
    ("GET", "/files/a%20b/c%2Fd", Need("read", "/a b/c/d")),
    ("GET", "/list", Need("read", "/")),
    ("GET", "/list/", Need("read", "/")),
    ("GET", "/list/p/q/", Need("read", "/p/q")),
    ("GET", "/metrics", Need("read", "/")),
    ("GET", "/status", Need("read", "/")),
    ("GET", "/nothing", Need("read", "/")),
])
def test_required_access(method, path, need):
    assert required_access(method, path) == need


@pytest.fixture
def table():
    lines = [make_token("w", "write", None, token="wtok", salt=SALT)[0],
             make_token("r", "read", None, token="rtok", salt=SALT)[0],
             make_token("p", "write", "/p", token="ptok", salt=SALT)[0],
             make_token("adm", "admin", None, token="atok", salt=SALT)[0]]
    return TokenTable.parse("# tokens\n\n" + "\n".join(e.to_json() for e in lines) + "\n")


@pytest.mark.parametrize("auth,method,path,status", [
    (None, "GET", "/version/", 200),
    (None, "GET", "/files/a", 401),
    (basic("w", "wtok"), "PUT", "/files/a", 200),
    ("Bearer wtok", "PUT", "/files/a", 200),
    (basic("r", "rtok"), "GET", "/files/a", 200),
    (basic("r", "rtok"), "PUT", "/files/a", 403),
    (basic("r", "rtok"), "DELETE", "/files/a", 403),
    (basic("r", "wtok"), "GET", "/files/a", 401),  # w's token under r's name
    (basic("nobody", "wtok"), "GET", "/files/a", 401),
    (basic("wtok", ""), "PUT", "/files/a", 200),
    ("Bearer nope", "GET", "/files/a", 401),
    ("Digest x", "GET", "/files/a", 401),
    (basic("p", "ptok"), "PUT", "/files/p/x", 200),
    (basic("p", "ptok"), "PUT", "/files/pq", 403),
    (basic("p", "ptok"), "GET", "/list/p", 200),
    (basic("p", "ptok"), "GET", "/list/", 403),
    (basic("p", "ptok"), "GET", "/metrics", 403),
    (basic("r", "rtok"), "GET", "/metrics", 200),
    (basic("adm", "atok"), "DELETE", "/files/a", 200),
])
def test_decide(table, auth, method, path, status):
    d = table.decide(auth, method, path)
    assert d.status == status, d
    for secret in ("wtok", "rtok", "ptok", "atok"):
        assert secret not in d.message


def test_decide_messages(table):
    d = table.decide(basic("p", "ptok"), "PUT", "/files/q/x")
    assert d.message == "user p (scope write under /p) may not write /q/x" and d.user == "p"
    d = table.decide(basic("r", "rtok"), "PUT", "/files/a")
    assert d.message == "user r (scope read) may not write /a"
    assert table.decide(basic("r", "bad"), "GET", "/files/a").message == "invalid credentials"


@pytest.mark.parametrize("line,why", [
    ("not json", "Expecting value"),
    ('{"user": "a b", "scope": "read", "salt": "%s", "sha256": "%s"}' % (SALT, "0" * 64), "user must be"),
    ('{"user": "a", "scope": "root", "salt": "%s", "sha256": "%s"}' % (SALT, "0" * 64), "scope must be"),
    ('{"user": "a", "scope": "read", "salt": "zz", "sha256": "%s"}' % ("0" * 64), "salt must be"),
    ('{"user": "a", "scope": "read", "salt": "%s", "sha256": "abc"}' % SALT, "sha256 must be"),
    ('{"user": "a", "scope": "read", "salt": "%s", "sha256": "%s", "token": "x"}' % (SALT, "0" * 64), "unknown keys"),
    ('["a"]', "JSON object"),
])
def test_file_errors_name_the_line(line, why):
    with pytest.raises(AuthFileError) as e:
        TokenTable.parse("# c\n" + line + "\n", "tokens.jsonl")
    assert str(e.value).startswith("tokens.jsonl:2: ") and why in str(e.value)


def test_add_token_file_mode_and_no_plain_token(tmp_path):
    path = str(tmp_path / "tokens")
    entry, token = add_token(path, "alice", "write", "/p")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640   # group-readable: the service's group
    text = open(path).read()
    assert token not in text and text.endswith("\n") and text.count("\n") == 1
    # a hand-edited file without a final newline still gets one line per token
    with open(path, "a") as f:
        f.write("# note")
    _e2, t2 = add_token(path, "bob", "read")
    table = TokenTable.load(path)
    assert [e.user for e in table.tokens] == ["alice", "bob"]
    assert table.authenticate(Credentials("bob", t2)) and table.authenticate(Credentials(None, token))
    with pytest.raises(ValueError):
        add_token(path, "bad user", "read")
    with open(path, "a") as f:
        f.write("garbage\n")
    with pytest.raises(AuthFileError):
        add_token(path, "carol", "read")  # never append to a file the servers would refuse


def test_token_adds_are_not_lost_to_a_concurrent_remove(tmp_path):
    """``token remove`` rewrites the file (a rename): an add landing between its read and its
    rename was lost although the token had been shown as added.  Changes take turns."""
    path = str(tmp_path / "tokens")
    add_token(path, "first", "read")
    added = []

    def adder():
        for _ in range(40):
            added.append(add_token(path, "keep", "read")[1])

    def churner():
        for _ in range(40):
            add_token(path, "temp", "read")
            assert remove_tokens(path, "temp") >= 1

    threads = [threading.Thread(target=adder), threading.Thread(target=churner)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    table = TokenTable.load(path)
    assert [e.user for e in table.tokens].count("keep") == 40
    assert all(table.authenticate(Credentials("keep", token)) for token in added)
    assert "temp" not in [e.user for e in table.tokens]


def test_token_file_reloads_and_keeps_last_good(tmp_path):
    path = str(tmp_path / "tokens")
    _e, t1 = add_token(path, "a", "read")
    now = [0.0]
    tf = TokenFile(path, check_interval=1.0, clock=lambda: now[0])
    assert tf.decide(basic("a", t1), "GET", "/files/x").status == 200
    _e, t2 = add_token(path, "b", "write")
    assert tf.decide(basic("b", t2), "PUT", "/files/x").status == 401  # not looked at yet
    now[0] = 1.5
    assert tf.decide(basic("b", t2), "PUT", "/files/x").status == 200
    with open(path, "a") as f:
        f.write("{broken\n")
    now[0] = 3.0
    assert tf.decide(basic("b", t2), "PUT", "/files/x").status == 200  # last good table kept
    assert tf.last_error and "tokens:3" in tf.last_error
