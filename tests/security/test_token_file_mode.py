"""The token file stays readable by the services: ``filetracker-admin token`` (as root)
creates it mode 0640 and keeps an existing file's mode, owner and group when it adds or
removes a token; a running server that cannot read it keeps its last good table and
says so in its log.

The end-to-end case runs ``filetracker-server`` as ``nobody:nogroup`` (as the systemd
units run it as ``filetracker``) against a token file ``root:nogroup`` 0640, so it needs
root and ``setpriv``; it is skipped otherwise.
"""

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile

import pytest
import requests

from tests.support.procs import Service, free_port, script
from tests.support.waiting import wait_until


def token(path, *argv, umask=None):
    """Run ``filetracker-admin token ...``; returns the CompletedProcess."""
    return subprocess.run([script("filetracker-admin"), "token", *argv, "--auth-file", path],
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def add(path, user, scope="read", **kw):
    r = token(path, "add", "--user", user, "--scope", scope, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def remove(path, user):
    r = token(path, "remove", "--user", user)
    assert r.returncode == 0, r.stderr


def users(path):
    r = token(path, "list")
    assert r.returncode == 0, r.stderr
    return [line.split("\t")[0] for line in r.stdout.splitlines()]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def other_group():
    """A gid other than ours, as (name, gid): nogroup when there is one."""
    try:
        g = grp.getgrnam("nogroup")
        if g.gr_gid != os.getegid():
            return g.gr_name, g.gr_gid
    except KeyError:
        pass
    for g in grp.getgrall():
        if g.gr_gid != os.getegid():
            return g.gr_name, g.gr_gid
    pytest.skip("no second group in /etc/group")


def test_new_file_is_group_readable_never_world_readable(tmp_path):
    for umask in (0o022, 0o077, 0o000):
        path = str(tmp_path / ("tokens-%o" % umask))
        add(path, "alice", umask=umask)
        assert mode(path) == 0o640, (oct(umask), oct(mode(path)))
        assert os.stat(path).st_uid == os.geteuid()


def test_add_and_remove_keep_mode_owner_and_group(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to another group)")
    path = str(tmp_path / "auth.tokens")
    add(path, "alice")
    add(path, "bob")
    _name, gid = other_group()
    os.chown(path, -1, gid)
    for wanted_mode in (0o640, 0o604, 0o660):
        os.chmod(path, wanted_mode)
        before = os.stat(path)
        remove(path, "bob")
        after = os.stat(path)
        assert after.st_ino != before.st_ino  # rewritten (atomic rename), not edited in place
        assert (mode(path), after.st_uid, after.st_gid) == (wanted_mode, before.st_uid, gid)
        add(path, "bob", "write")
        after = os.stat(path)
        assert (mode(path), after.st_uid, after.st_gid) == (wanted_mode, before.st_uid, gid)
        assert users(path) == ["alice", "bob"]
    assert sorted(os.listdir(str(tmp_path))) == ["auth.tokens"]  # no temporary file left behind


def test_remove_through_a_symlink_keeps_the_link(tmp_path):
    real = str(tmp_path / "real.tokens")
    link = str(tmp_path / "auth.tokens")
    add(real, "alice")
    add(real, "bob")
    os.chmod(real, 0o600)
    os.symlink(real, link)
    remove(link, "bob")
    assert os.path.islink(link) and users(real) == ["alice"] and mode(real) == 0o600


def _nobody():
    """``(passwd, group)`` of nobody/nogroup when a server can run as them here, else None: root,
    setpriv, the accounts, and a checkout that ``nobody`` may read (not one under a 0700 folder)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    try:
        ids = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    except KeyError:
        return None
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            script("filetracker-server"), "--help"], capture_output=True, timeout=60, cwd="/")
    return ids if probe.returncode == 0 else None


@pytest.fixture
def shared_dir():
    """A folder under /tmp that ``nobody`` may enter (pytest's tmp_path is 0700 root)."""
    d = tempfile.mkdtemp(prefix="ft-token-mode-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_server_running_as_another_user_follows_add_and_remove(shared_dir):
    ids = _nobody()
    if ids is None:
        pytest.skip("needs root, setpriv, the nobody/nogroup accounts and a checkout nobody may read")
    user, group = ids
    path = os.path.join(shared_dir, "auth.tokens")
    t_keep = add(path, "keep")
    t_gone = add(path, "gone")
    os.chown(path, 0, group.gr_gid)  # as deploy/README.md says: chgrp <service group>, mode 640
    assert mode(path) == 0o640
    data = os.path.join(shared_dir, "data")
    os.mkdir(data)
    os.chown(data, user.pw_uid, group.gr_gid)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    log_path = os.path.join(shared_dir, "server.log")
    svc = Service(["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % group.gr_gid, "--clear-groups",
                   script("filetracker-server"), "-d", data, "-p", str(port), "-l", "127.0.0.1",
                   "--auth-file", path], log_path, ready_url=url + "/version/")
    svc.start()
    try:
        def status(who, tok):
            return requests.get(url + "/list/", auth=(who, tok), timeout=10).status_code

        assert status("keep", t_keep) == 200 and status("gone", t_gone) == 200
        remove(path, "gone")  # as root: the file must stay readable by nobody:nogroup
        assert wait_until(lambda: status("gone", t_gone) == 401, timeout=10), svc.log_tail()
        t_new = add(path, "new")
        assert wait_until(lambda: status("new", t_new) == 200, timeout=10)
        assert status("keep", t_keep) == 200
        assert "cannot read token file" not in svc.log_tail(100000)

        # a file the service cannot read: the last good table stays, with a clear warning
        os.chown(path, 0, 0)
        os.chmod(path, 0o600)
        remove(path, "new")

        def warned():  # the file is looked at when a request comes
            return status("keep", t_keep) == 200 and "cannot read token file" in svc.log_tail(100000)

        assert wait_until(warned, timeout=10), svc.log_tail()
        line = next(x for x in svc.log_tail(100000).splitlines() if "cannot read token file" in x)
        assert "WARNING" in line and "permission denied" in line and path in line, line
        assert status("new", t_new) == 200  # the documented keep-last-good behaviour
        assert t_new not in svc.log_tail(100000)
        # readable again: picked up
        os.chown(path, 0, group.gr_gid)
        os.chmod(path, 0o640)
        assert wait_until(lambda: status("new", t_new) == 401, timeout=10), svc.log_tail()
        assert status("keep", t_keep) == 200
    finally:
        svc.stop()
