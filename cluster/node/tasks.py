"""Background work of a node: anti-entropy, handoff, tombstone reclaim.

Each task is synchronous (it runs in its own thread, never on the event loop)
and exposes :meth:`run_once`, one full pass that returns a summary dict; the
node runs it every interval in a loop (:class:`TaskRunner`) and tests run a
pass on demand through ``POST /_cluster/run/<task>``.  A per-task lock keeps
passes of one task from overlapping.

* **anti-entropy** (``sync``): for every partition this node owns, compare its
  digest with each other owner's, twice (a partition that differs only in the
  first comparison had a write in flight and is left alone, ``transient`` in
  the summary); where they still differ, fetch the peer's record lists of those
  partitions (up to :data:`PARTITION_GROUP` in one ``POST /_cluster/partitions``),
  pull the records where the peer's wins and push the records where ours wins
  (:class:`~cluster.node.replicator.Replicator`: ``POST /_cluster/records`` offers them; small blobs then
  travel many to a request, larger ones are streamed one by one; every record
  merges by the merge rule).  It also adopts a newer ring
  a peer advertises through ``X-Ring-Epoch``, so a node that missed a ring
  change (down while the admin pushed it) catches up by itself.
* **handoff**: records in partitions this node does *not* own (hinted writes
  taken for an owner that was down, or partitions that moved away after a ring
  change) are pushed to every owner; a record is dropped locally (``forget``,
  only if unchanged meanwhile) once *every* owner holds a record at least as
  new.  An owner that is down keeps the hint here until it is back: dropping
  earlier would leave fewer than N copies.
* **reclaim**: tombstones older than ``tombstone_ttl`` are removed, and so are blobs no
  record references (a crash between placing a blob and committing its record).
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

from cluster.node.replicator import Replicator
from cluster.node.scrub import Scrubber
from cluster.node.state import EMPTY_DIGEST
from cluster.peers import PeerClient, PeerError, RateLimiter
from filetracker.records import worth_copying

log = logging.getLogger("cluster.node.tasks")

#: Partitions compared with one peer in one go (their record lists in one request) ...
PARTITION_GROUP = 32
#: ... holding at most this many records here (one large partition still goes alone)
GROUP_RECORDS = 5000


def _parallel(fn, items, pool):
    """``[fn(item) for item in items]``, on ``pool``'s threads when there is one (results in order)."""
    if pool is None or len(items) <= 1:
        return [fn(item) for item in items]
    return list(pool.map(fn, items))


def _by_name(records):
    return {r.name: r for r in records}


def _groups(work, count, workers=1):
    """``(partition, url)`` pairs as ``(url, [partitions])`` groups, in order: the partitions
    of one peer compared together, cut by :func:`_cut`."""
    by_url = {}
    for p, url in work:
        by_url.setdefault(url, []).append(p)
    return [(url, group) for url, parts in by_url.items() for group in _cut(parts, count, workers)]


def _cut(parts, count, workers=1):
    """``parts`` in runs of at most PARTITION_GROUP partitions holding at most GROUP_RECORDS
    records here (``count(p)``; a larger partition alone), and short enough that ``workers``
    threads share them (so large files still move several at a time), in order."""
    most = max(1, min(PARTITION_GROUP, -(-len(parts) // max(1, workers))))
    runs, run, held = [], [], 0
    for p in parts:
        n = count(p)
        if run and (len(run) == most or held + n > GROUP_RECORDS):
            runs.append(run)
            run, held = [], 0
        run.append(p)
        held += n
    if run:
        runs.append(run)
    return runs


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
        workers = self.workers = getattr(node.config, "sync_concurrency", 1)
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

        def one(group):
            url, parts = group
            pulled = pushed = 0
            # the group together, then (when the peer answered it with an error) each partition
            # alone, so one partition the peer refuses does not hold back the others
            for attempt in [parts] + ([[p] for p in parts] if len(parts) > 1 else []):
                if url in gave_up:
                    break
                try:
                    got = self.reconcile_many(attempt, url)
                except PeerError as e:
                    log.info("anti-entropy of partitions %d-%d with %s stopped: %s", attempt[0], attempt[-1], url, e)
                    if e.status is None:
                        gave_up.add(url)   # down: no more work with it in this pass
                    continue
                pulled, pushed = pulled + got[0], pushed + got[1]
                if attempt is parts:
                    break
            return pulled, pushed

        groups = _groups(work, self.node.store.count_records, self.workers)
        for pulled, pushed in _parallel(one, groups, self.pool):
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

    def reconcile_many(self, partitions, url):
        """Exchange the differing records of ``partitions`` with one peer: ``(pulled, pushed)``.
        Their record lists come many to a request, and the records to move travel together."""
        pulled = pushed = 0
        expired = self.node.expired_before()
        for listed in self.replicator.iter_partition_records(url, partitions):
            pull, push = [], []
            for p, records in listed.items():
                theirs = _by_name(records)
                mine = _by_name(self.node.store.iter_records(p))
                pull += [r for name, r in theirs.items() if worth_copying(r, mine.get(name), expired)]
                push += [r for name, r in mine.items() if worth_copying(r, theirs.get(name), expired)]
            pulled += self.replicator.pull(url, pull) if pull else 0
            pushed += self.replicator.push(url, push) if push else 0
        return pulled, pushed


class Handoff(Task):
    """Hands records of partitions this node does not own to their owners, and forgets them
    here once every owner holds them.

    ``rings`` (the node's :class:`AntiEntropy`, which hears every peer's ring epoch) lets a
    pass start from a newer ring a peer advertised, and keeps a pass from forgetting anything
    once a peer answered with a newer epoch than the ring it used: a node restarted with the
    ring it had before a membership change it missed would otherwise hand data to the old
    owners (a removed node among them, perhaps about to be stopped) and drop its own copy.
    """
    name = "handoff"

    def __init__(self, node, client, interval, rings=None):
        super().__init__(node, interval)
        self.client = client
        self.replicator = Replicator(node, client)
        self.rings = rings

    def _superseded(self, ring):
        """True when a newer ring than ``ring`` is installed here or was seen at a peer."""
        newest_seen = self.rings.newest_epoch_seen[0] if self.rings is not None else 0
        return max(self.node.ring.epoch, newest_seen) > ring.epoch

    def _run(self):
        if self.rings is not None:
            self.rings.adopt_newer_ring()
        ring = self.node.ring
        store = self.node.store
        foreign = self.node.held_foreign(ring)
        summary = {"epoch": ring.epoch, "partitions": len(foreign), "pushed": 0, "dropped": 0, "kept": 0}
        down = set()
        groups = _cut(foreign, store.count_records, self.workers)
        results = _parallel(lambda parts: self.hand_off_many(ring, parts, down), groups, self.pool)
        for pushed, dropped, kept in results:
            summary["pushed"] += pushed
            summary["dropped"] += dropped
            summary["kept"] += kept
        summary["owners_down"] = sorted(down)
        return summary

    def hand_off_many(self, ring, partitions, down):
        """Push foreign ``partitions`` to their owners; forget the records every owner holds.

        Per owner, the record lists of its partitions among these come many to a
        request (before and after the push) and the records it lacks travel
        together; when the owner answers that with an error, each partition is
        tried alone.  Returns ``(pushed, dropped, kept)``.
        """
        store = self.node.store
        me = self.node.id
        mine = {p: list(store.iter_records(p)) for p in partitions}
        mine = {p: records for p, records in mine.items() if records}
        if not mine:
            return 0, 0, 0
        owners = {p: {n.url for n in ring.partition_owners(p) if n.id != me} for p in mine}
        by_owner = {}
        for p in mine:
            for url in sorted(owners[p]):
                by_owner.setdefault(url, []).append(p)
        held_by = {r.name: set() for records in mine.values() for r in records}  # owners that hold it
        pushed = 0
        for url, parts in by_owner.items():
            for attempt in [parts] + ([[p] for p in parts] if len(parts) > 1 else []):
                if url in down:
                    break
                try:
                    pushed += self._hand_to(url, attempt, mine, held_by)
                except PeerError as e:
                    log.info("handoff of partitions %d-%d to %s stopped: %s", attempt[0], attempt[-1], url, e)
                    if e.status is None:
                        down.add(url)
                    continue
                if attempt is parts:
                    break
        if self._superseded(ring):
            # the owners pushed to may not be the owners any more: keep every copy for the
            # next pass, which starts from the newer ring
            log.info("handoff: a newer ring than epoch %d was seen; nothing forgotten this pass", ring.epoch)
            return pushed, 0, sum(len(records) for records in mine.values())
        dropped = kept = 0
        for p, records in mine.items():
            for r in records:
                if held_by[r.name] == owners[p] and store.forget(r.name, r):
                    dropped += 1
                else:
                    kept += 1
        return pushed, dropped, kept

    def _hand_to(self, url, parts, mine, held_by):
        """Push what owner ``url`` lacks of ``mine`` in ``parts``; add ``url`` to ``held_by[name]``
        of each record it then holds (at least as new).  Returns the count pushed."""
        pushed = 0
        expired = self.node.expired_before()
        for listed in self.replicator.iter_partition_records(url, parts):
            theirs = {r.name: r for records in listed.values() for r in records}
            need = [r for p in listed for r in mine[p] if worth_copying(r, theirs.get(r.name), expired)]
            if need:
                pushed += self.replicator.push(url, need)
                again = self.replicator.partition_records(url, list(listed))
                theirs = {r.name: r for records in again.values() for r in records}
            for p in listed:
                for r in mine[p]:
                    # held: as new there, or an expired tombstone of a name it has no record of
                    if not worth_copying(r, theirs.get(r.name), expired):
                        held_by[r.name].add(url)
        return pushed


class Reclaim(Task):
    name = "reclaim"

    def __init__(self, node, ttl, interval):
        super().__init__(node, interval)
        self.ttl = ttl

    def _run(self):
        reclaimed = self.node.store.reclaim_tombstones(self.ttl)
        # blobs a crash left without a record (placed, then killed before the commit)
        orphans, freed = self.node.raw_store.collect_garbage()
        if orphans:
            log.warning("removed %d orphan blobs (%d bytes) left by an earlier crash", orphans, freed)
        return {"reclaimed": reclaimed, "orphan_blobs": orphans}


class SweepRetired(Task):
    """Unlink the blobs kept readable after they were replaced, once their time is up
    (:mod:`filetracker.storage.retired`; every replace sweeps too, this covers quiet times)."""

    name = "retired"

    def _run(self):
        retired = self.node.raw_store.retired
        return {"unlinked": retired.sweep() if retired is not None else 0}


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
    handoff = Handoff(node, client, cfg.handoff_interval or cfg.sync_interval, rings=sync)
    reclaim = Reclaim(node, cfg.tombstone_ttl, cfg.reclaim_interval)
    keep = getattr(cfg, "keep_replaced", 0.0)
    tasks = [sync, handoff, reclaim, SweepRetired(node, max(1.0, keep / 2) if keep else 0)]
    integrity = getattr(node, "integrity", None)   # set by cluster.node.protect.protect_store
    if integrity is not None:
        integrity.client = client
        tasks += [Scrub(node, integrity, cfg.scrub_rate, cfg.scrub_interval),
                  Repair(node, integrity, cfg.repair_interval)]
    return {t.name: t for t in tasks}, client


__all__ = ["AntiEntropy", "Handoff", "Reclaim", "Repair", "Replicator", "Scrub", "SweepRetired", "TaskRunner",
           "make_tasks"]
