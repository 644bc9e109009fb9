"""A reproducible 2.x store for migration tests: fill a real 2.x server, keep a model.

:func:`fill` writes ``count`` files into a running 2.x server: nested names
(a few with spaces), sizes from 0 bytes up to ``max_bytes`` (log-uniform, so
most are small and a few are large, plus one of exactly ``max_bytes``),
explicit old versions, about 10 % of the names overwritten with a newer
version (and some "overwritten" with an older one, which the 2.x server
ignores), about 5 % deleted.  Bodies are sent gzip-compressed (level 1) with
their SHA-256 and logical size, as the 2.x client does, which keeps filling
fast.  The returned :class:`Model` holds, per live name, ``(version, sha256,
size)`` (never the content: a full-size store does not fit in memory), and
the deleted names.

Sizes are parameters: ``FT_MIGRATION_FILES`` (default 300) and
``FT_MIGRATION_MAX_MIB`` (default 5); the issue's full size is 1000 / 20.
"""

import email.utils
import gzip
import hashlib
import math
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

BASE_VERSION = 1500000000  # 2017: "old" versions, far before any test's clock


def sizes_from_env():
    return (int(os.environ.get("FT_MIGRATION_FILES", "300")),
            int(float(os.environ.get("FT_MIGRATION_MAX_MIB", "5")) * 1024 * 1024))


@dataclass
class Model:
    live: dict = field(default_factory=dict)     # name -> (version, sha256, size)
    deleted: set = field(default_factory=set)

    @property
    def total_bytes(self):
        return sum(s for _, _, s in self.live.values())


def content(rng_seed, size):
    """Deterministic bytes: half the files incompressible, half text-like."""
    rng = random.Random(rng_seed)
    if rng_seed % 2:
        return rng.randbytes(size)
    line = ("line %d of a text-like test file %d\n" % (rng_seed, rng.random())).encode()
    return (line * (size // len(line) + 1))[:size]


def name_for(i):
    if i % 50 == 7:
        return "/mig/with space/d%d/file %d.txt" % (i % 3, i)
    return "/mig/d%d/s%d/f%04d.bin" % (i % 7, i % 5, i)


def size_for(rng, i, count, max_bytes):
    if i == 0:
        return 0
    if i == 1:
        return max_bytes
    return min(max_bytes, int(math.exp(rng.uniform(0, math.log(max_bytes)))))


def put(session, url, name, data, version):
    body = gzip.compress(data, compresslevel=1)
    r = session.put(url + "/files" + quote(name), params={"last_modified": email.utils.formatdate(version)},
                    data=body, headers={"Content-Encoding": "gzip", "Logical-Size": str(len(data)),
                                        "SHA256-Checksum": hashlib.sha256(data).hexdigest()}, timeout=120)
    assert r.status_code == 200, (name, r.status_code, r.text[:300])
    return email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"]))


def fill(url, count, max_bytes, seed=10, parallel=4):
    """Fill the 2.x server at ``url``; returns the :class:`Model` of what it now holds."""
    rng = random.Random(seed)
    plan = []
    for i in range(count):
        plan.append((i, name_for(i), size_for(rng, i, count, max_bytes), BASE_VERSION + i * 1000 + rng.randrange(500)))
    model = Model()
    lock = threading.Lock()
    local = threading.local()

    def one(item):
        i, name, size, version = item
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        data = content(seed * 100003 + i, size)
        put(s, url, name, data, version)
        final = (version, hashlib.sha256(data).hexdigest(), size)
        if i % 10 == 3:  # overwritten later with a newer version (other content)
            data2 = content(seed * 100003 + i + 7 * count, max(0, size // 2))
            v2 = version + 400
            put(s, url, name, data2, v2)
            final = (v2, hashlib.sha256(data2).hexdigest(), len(data2))
        if i % 10 == 4:  # an older version arrives later: the 2.x server keeps the newer one
            stored = put(s, url, name, b"stale", version - 100)
            assert stored == version, (name, stored, version)
        if i % 20 == 5:  # deleted
            r = s.delete(url + "/files" + quote(name), params={"last_modified": email.utils.formatdate(version)},
                         timeout=30)
            assert r.status_code == 200, (name, r.status_code)
            with lock:
                model.deleted.add(name)
            return
        with lock:
            model.live[name] = final

    with ThreadPoolExecutor(parallel) as ex:
        list(ex.map(one, plan))
    return model


def digest_of(session, url, name, timeout=60):
    """``(version, sha256, size)`` served by ``url`` for ``name``, or None on 404."""
    r = session.get(url + "/files" + quote(name), timeout=timeout, stream=True)
    with r:
        if r.status_code == 404:
            return None
        assert r.status_code == 200, (name, r.status_code, r.headers.get("X-Exception"))
        h = hashlib.sha256()
        n = 0
        for chunk in r.iter_content(256 * 1024):
            h.update(chunk)
            n += len(chunk)
        version = email.utils.mktime_tz(email.utils.parsedate_tz(r.headers["Last-Modified"]))
    return version, h.hexdigest(), n


def check_all(url, model, parallel=4, names=None):
    """Every live name of ``model`` (or ``names``) read from ``url``: the list of mismatches."""
    local = threading.local()
    names = sorted(model.live) if names is None else names

    def one(name):
        s = getattr(local, "s", None) or requests.Session()
        local.s = s
        got = digest_of(s, url, name)
        want = model.live[name]
        return None if got == want else (name, want, got)

    with ThreadPoolExecutor(parallel) as ex:
        return [m for m in ex.map(one, names) if m is not None]
