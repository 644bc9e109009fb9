"""Background work of a node: anti-entropy, handoff, tombstone reclaim.

Each task is synchronous (it runs in its own thread, never on the event loop)
and exposes :meth:`run_once`, one full pass that returns a summary dict; the
node runs it every interval in a loop (:class:`TaskRunner`) and tests run a
pass on demand through ``POST /_cluster/run/<task>``.  A per-task lock keeps
passes of one task from overlapping.

* **anti-entropy** (``sync``): for every partition this node owns, compare its
  digest with each other owner's, twice (a partition that differs only in the
  first comparison had a write in flight and is left alone, ``transient`` in
  the summary); where they still differ, fetch the peer's record
  list of the partition, pull the records where the peer's wins (the blob from
  ``/_cluster/blobs/<sha>``, then the record merges by the merge rule) and push
  the records where ours wins (``POST /_cluster/records``, then a streamed
  ``PUT`` of the blobs the peer reports missing).  It also adopts a newer ring
  a peer advertises through ``X-Ring-Epoch``, so a node that missed a ring
  change (down while the admin pushed it) catches up by itself.
* **handoff**: records in partitions this node does *not* own (hinted writes
  taken for an owner that was down, or partitions that moved away after a ring
  change) are pushed to every owner; a record is dropped locally (``forget``,
  only if unchanged meanwhile) once *every* owner holds a record at least as
  new.  An owner that is down keeps the hint here until it is back: dropping
  earlier would leave fewer than N copies.
* **reclaim**: tombstones older than ``tombstone_ttl`` are removed.
* **scrub**: every blob is re-hashed at ``scrub_rate`` bytes/s
  (:mod:`cluster.node.scrub`); corrupt ones are quarantined, then repaired.
* **repair**: blobs found corrupt (on a read or by the scrubber) are fetched
  again from peers (:mod:`cluster.node.integrity`).  It runs as soon as a
  repair is queued (``Integrity.wake``), and retries failures every
  ``repair_interval`` seconds.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cluster.node.scrub import Scrubber
from cluster.node.state import EMPTY_DIGEST
from cluster.peers import PeerClient, PeerError, RateLimiter
from filetracker.records import beats
from filetracker.storage import BlobMissing, StorageError

log = logging.getLogger("cluster.node.tasks")

#: Records offered per POST /_cluster/records.
PUSH_BATCH = 500


class Replicator:
    """Moving records (and their blobs) between this node's store and one peer."""

    def __init__(self, node, client):
        self.node = node
        self.client = client

    @property
    def store(self):
        return self.node.store

    def pull(self, url, records):
        """Merge ``records`` (a peer's winners) here, fetching blobs we lack.  Returns the count applied."""
        applied = 0
        for r in records:
            try:
                if r.deleted or self.store.has_blob(r.sha256):
                    try:
                        _, ok = self.store.apply_record(r)
                        applied += ok
                        continue
                    except BlobMissing:
                        pass  # the blob vanished meanwhile: fetch it
                upload = self.store.begin_upload()
                try:
                    self.client.fetch_blob(url, r.sha256, upload.write)
                    _, ok = self.store.commit_upload(upload, r.name, r.version, expected_sha256=r.sha256,
                                                     expected_size=r.size)
                    applied += ok
                finally:
                    upload.abort()  # no-op once committed (the temp file is gone)
            except PeerError as e:
                if e.status is None:
                    raise  # the peer is down: stop talking to it for this pass
                log.warning("pull of %s from %s failed: %s", r.name, url, e)
            except (StorageError, ValueError) as e:
                log.warning("pull of %s from %s failed: %s", r.name, url, e)
        return applied

    def push(self, url, records):
        """Offer ``records`` to a peer and stream the blobs it lacks.  Returns the count sent."""
        sent = 0
        for i in range(0, len(records), PUSH_BATCH):
            batch = records[i:i + PUSH_BATCH]
            missing = set(self.client.post_records(url, batch))
            sent += sum(1 for r in batch if r.deleted or r.sha256 not in missing)
            for r in batch:
                if r.deleted or r.sha256 not in missing:
                    continue
                try:
                    f = self.store.open_blob(r.sha256)
                except (FileNotFoundError, StorageError):
                    continue  # replaced here meanwhile; the newer record travels next pass
                try:
                    self.client.put_file(url, r, f)
                    sent += 1
                except PeerError as e:
                    if e.status is None:
                        raise
                    log.warning("push of %s to %s failed: %s", r.name, url, e)
                finally:
                    f.close()
        return sent


def _parallel(fn, items, pool):
    """``[fn(item) for item in items]``, on ``pool``'s threads when there is one (results in order)."""
    if pool is None or len(items) <= 1:
        return [fn(item) for item in items]
    return list(pool.map(fn, items))


def _by_name(records):
    return {r.name: r for r in records}


class Task:
    """A pass that can be run on demand or every ``interval`` seconds."""

    name = "task"

    def __init__(self, node, interval):
        self.node = node
        self.interval = interval
        self.lock = threading.Lock()
        self.passes = 0
        self.last = None        # summary of the last pass
        # Long-lived workers (each keeps its pooled peer connections across passes).
        workers = getattr(node.config, "sync_concurrency", 1)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="node-" + self.name) if workers > 1 else None
        self.last_error = None

    def run_once(self):
        with self.lock:
            started = time.monotonic()
            try:
                summary = self._run()
                self.last_error = None
            except Exception as e:  # noqa: BLE001 - a failed pass is logged and retried next interval
                log.exception("%s pass failed", self.name)
                self.last_error = str(e)
                summary = {"error": str(e)}
            summary["seconds"] = round(time.monotonic() - started, 3)
            self.passes += 1
            self.last = summary
            return summary

    def _run(self):
        raise NotImplementedError

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


class AntiEntropy(Task):
    name = "sync"

    def __init__(self, node, client, interval):
        super().__init__(node, interval)
        self.client = client
        self.replicator = Replicator(node, client)
        self.newest_epoch_seen = (0, None)   # (epoch, url) from X-Ring-Epoch answers
        self._down = set()

    def _note_down(self, peers, down):
        """Log a peer going down or coming back once, not every pass."""
        down = set(down)
        for url in sorted(down - self._down):
            log.warning("anti-entropy: peer %s is unreachable", url)
        for url in sorted((self._down - down) & set(peers)):
            log.info("anti-entropy: peer %s is back", url)
        self._down = down

    def epoch_seen(self, epoch, url):
        if epoch > self.newest_epoch_seen[0]:
            self.newest_epoch_seen = (epoch, url)

    def adopt_newer_ring(self):
        """Fetch and install a ring a peer advertised with a higher epoch; True if installed."""
        epoch, url = self.newest_epoch_seen
        if url is None or epoch <= self.node.ring.epoch:
            return False
        try:
            ring = self.client.get_ring(url)
            return self.node.rings.install(ring)
        except Exception as e:  # noqa: BLE001 - a peer's bad ring must not stop the pass
            log.warning("could not adopt ring epoch %d from %s: %s", epoch, url, e)
            return False

    def _run(self):
        self.adopt_newer_ring()
        ring = self.node.ring
        me = self.node.id
        owned = sorted(ring.owned_partitions(me))
        peers = {}
        for p in owned:
            for n in ring.partition_owners(p):
                if n.id != me:
                    peers.setdefault(n.url, n)
        summary = {"epoch": ring.epoch, "partitions": len(owned), "peers_down": [], "differing": 0,
                   "transient": 0, "pulled": 0, "pushed": 0}
        theirs = self._peer_digests(sorted(peers), summary["peers_down"])
        work = self._differing(ring, owned, theirs)
        if work:
            # Confirm: writes in flight when the digests were taken (a PUT's
            # replicas land a few milliseconds apart, and a W < N write sends
            # its last replica after answering) make partitions differ for a
            # moment.  Under a write load that was a tenth of all partitions in
            # every pass, each reconciled for nothing (a record list fetched,
            # nothing to exchange).  A real divergence still differs a moment
            # later; a settled one does not.
            again = self._peer_digests(sorted({url for _, url in work}), summary["peers_down"])
            confirmed = set(self._differing(ring, sorted({p for p, _ in work}), again))
            # a peer that stopped answering in between is down (in peers_down), not transient
            summary["transient"] = sum(1 for item in work if item[1] in again and item not in confirmed)
            work = [item for item in work if item in confirmed]
        summary["differing"] = len(work)
        gave_up = set()

        def one(item):
            p, url = item
            if url in gave_up:
                return 0, 0
            try:
                return self.reconcile(p, url)
            except PeerError as e:
                log.info("anti-entropy of partition %d with %s stopped: %s", p, url, e)
                if e.status is None:
                    gave_up.add(url)   # down: no more work with it in this pass
                return 0, 0

        for pulled, pushed in _parallel(one, work, self.pool):
            summary["pulled"] += pulled
            summary["pushed"] += pushed
        summary["peers_down"] = sorted(set(summary["peers_down"]) | gave_up)
        self._note_down(peers, summary["peers_down"])
        self.adopt_newer_ring()
        return summary

    def _peer_digests(self, urls, down):
        """``{url: {partition: digest}}`` of the peers that answer; the others are appended to ``down``."""
        digests = {}
        for url in urls:
            try:
                digests[url] = self.client.digests(url)
            except PeerError as e:
                down.append(url)
                log.debug("anti-entropy: %s unreachable: %s", url, e)
        return digests

    def _differing(self, ring, partitions, theirs):
        """The ``(partition, peer url)`` pairs among ``partitions`` whose digest differs from ours."""
        me = self.node.id
        mine = self.node.store.digests
        work = []
        for p in partitions:
            local = None
            for n in ring.partition_owners(p):
                if n.id == me or n.url not in theirs:
                    continue
                if local is None:
                    local = mine.get(p)
                if theirs[n.url].get(p, EMPTY_DIGEST) != local:
                    work.append((p, n.url))
        return work

    def reconcile(self, partition, url):
        """Exchange the differing records of one partition with one peer: ``(pulled, pushed)``."""
        theirs = _by_name(self.client.partition_records(url, partition))
        mine = _by_name(self.node.store.iter_records(partition))
        pull = [r for name, r in theirs.items() if beats(r, mine.get(name))]
        push = [r for name, r in mine.items() if beats(r, theirs.get(name))]
        pulled = self.replicator.pull(url, pull) if pull else 0
        pushed = self.replicator.push(url, push) if push else 0
        return pulled, pushed


class Handoff(Task):
    name = "handoff"

    def __init__(self, node, client, interval):
        super().__init__(node, interval)
        self.client = client
        self.replicator = Replicator(node, client)

    def pending(self):
        """Number of records held here for partitions this node does not own."""
        ring = self.node.ring
        store = self.node.store
        return sum(sum(1 for _ in store.iter_records(p)) for p in store.partitions()
                   if not ring.owns(self.node.id, p))

    def _run(self):
        ring = self.node.ring
        store = self.node.store
        foreign = [p for p in store.partitions() if not ring.owns(self.node.id, p)]
        summary = {"epoch": ring.epoch, "partitions": len(foreign), "pushed": 0, "dropped": 0, "kept": 0}
        down = set()
        results = _parallel(lambda p: self.hand_off(ring, p, down), foreign, self.pool)
        for pushed, dropped, kept in results:
            summary["pushed"] += pushed
            summary["dropped"] += dropped
            summary["kept"] += kept
        summary["owners_down"] = sorted(down)
        return summary

    def hand_off(self, ring, partition, down):
        """Push one foreign partition to its owners; forget what all of them hold."""
        store = self.node.store
        mine = list(store.iter_records(partition))
        if not mine:
            return 0, 0, 0
        owners = [n for n in ring.partition_owners(partition) if n.id != self.node.id]
        confirmed = dict.fromkeys((r.name for r in mine), 0)
        pushed = 0
        for owner in owners:
            if owner.url in down:
                continue
            try:
                theirs = _by_name(self.client.partition_records(owner.url, partition))
                need = [r for r in mine if beats(r, theirs.get(r.name))]
                if need:
                    pushed += self.replicator.push(owner.url, need)
                    theirs = _by_name(self.client.partition_records(owner.url, partition))
            except PeerError as e:
                log.info("handoff of partition %d to %s stopped: %s", partition, owner.url, e)
                if e.status is None:
                    down.add(owner.url)
                continue
            for r in mine:
                if not beats(r, theirs.get(r.name)):
                    confirmed[r.name] += 1
        dropped = 0
        for r in mine:
            if confirmed[r.name] == len(owners) and store.forget(r.name, r):
                dropped += 1
        return pushed, dropped, len(mine) - dropped


class Reclaim(Task):
    name = "reclaim"

    def __init__(self, node, ttl, interval):
        super().__init__(node, interval)
        self.ttl = ttl

    def _run(self):
        return {"reclaimed": self.node.store.reclaim_tombstones(self.ttl)}


class Scrub(Task):
    """One rate-limited pass over every blob, then the repairs it queued."""

    name = "scrub"

    def __init__(self, node, integrity, rate, interval):
        super().__init__(node, interval)
        self.integrity = integrity
        self.scrubber = Scrubber(node, integrity, rate)
        # a restarted node does not scrub at once: the first pass after a while
        self.first_delay = min(interval, 600.0)

    def _run(self):
        summary = self.scrubber.scrub_pass()
        if self.integrity.pending():
            summary["repair"] = self.integrity.repair_pending()
        summary["quarantine_removed"] = self.integrity.prune_quarantine()   # --quarantine-keep
        return summary

    def close(self):
        self.scrubber.stop()
        super().close()


class Repair(Task):
    """Repairs of quarantined blobs, run as soon as one is queued (``wake``)."""

    name = "repair"

    def __init__(self, node, integrity, interval):
        super().__init__(node, interval)
        self.integrity = integrity
        self.wake = integrity.wake

    def close(self):
        self.integrity.close()
        super().close()

    def _run(self):
        summary = self.integrity.repair_pending()
        summary["quarantine_removed"] = self.integrity.prune_quarantine()   # --quarantine-keep
        summary["integrity"] = self.integrity.summary()   # counters since start (tests, operators)
        return summary


class TaskRunner:
    """Runs each task every ``task.interval`` seconds in its own daemon thread."""

    def __init__(self, tasks):
        self.tasks = tasks
        self._stop = threading.Event()
        self._threads = []

    def start(self):
        for task in self.tasks:
            if not task.interval:
                continue  # disabled (e.g. --scrub-interval 0)
            t = threading.Thread(target=self._loop, args=(task,), name="node-" + task.name, daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, task):
        # A short first delay lets the node finish starting (and its peers too).
        if self._stop.wait(getattr(task, "first_delay", None) or min(task.interval, 1.0)):
            return
        wake = getattr(task, "wake", None)   # a task that may be woken before its interval
        while not self._stop.is_set():
            task.run_once()
            if wake is None:
                self._stop.wait(task.interval)
            else:
                wake.wait(task.interval)

    def stop(self, timeout=5.0):
        self._stop.set()
        for task in self.tasks:
            if getattr(task, "wake", None) is not None:
                task.wake.set()
            if isinstance(task, Scrub):
                task.scrubber.stop()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for task in self.tasks:
            task.close()


def make_tasks(node):
    """The node's tasks by name, sharing one pooled, rate-limited peer client."""
    cfg = node.config
    limiter = RateLimiter(cfg.sync_bandwidth)
    sync_holder = {}

    def on_epoch(epoch, url):
        task = sync_holder.get("sync")
        if task is not None:
            task.epoch_seen(epoch, url)

    client = PeerClient(secret=cfg.cluster_secret, timeout=cfg.peer_timeout, on_epoch=on_epoch, limiter=limiter)
    sync = AntiEntropy(node, client, cfg.sync_interval)
    sync_holder["sync"] = sync
    handoff = Handoff(node, client, cfg.handoff_interval or cfg.sync_interval)
    reclaim = Reclaim(node, cfg.tombstone_ttl, cfg.reclaim_interval)
    tasks = [sync, handoff, reclaim]
    integrity = getattr(node, "integrity", None)   # set by cluster.node.protect.protect_store
    if integrity is not None:
        integrity.client = client
        tasks += [Scrub(node, integrity, cfg.scrub_rate, cfg.scrub_interval),
                  Repair(node, integrity, cfg.repair_interval)]
    return {t.name: t for t in tasks}, client


__all__ = ["AntiEntropy", "Handoff", "Reclaim", "Repair", "Replicator", "Scrub", "TaskRunner", "make_tasks"]
