"""``rebalance``: move data until every file sits on exactly its N owners.

The nodes do the moving themselves (:mod:`cluster.node.tasks`): *handoff*
pushes records of partitions a node does not own to their owners and drops
them once every owner holds them; *sync* (anti-entropy) makes the owners of a
partition agree.  The admin only

1. makes sure every reachable node holds the newest ring (a ring change that
   was interrupted half-way is finished here),
2. runs those passes on every node back to back (``POST /_cluster/run/all``)
   instead of waiting for their intervals, and
3. watches: a snapshot of digests and status every ``poll`` seconds drives the
   progress display and decides when the cluster is balanced.

Being idempotent, an interrupted rebalance (admin killed, a node killed
mid-move) is resumed by running it again.  The leaving members that
``remove-node`` recorded on the nodes are drained without any option (an
interrupted removal is finished first, see :mod:`cluster.admin.draining`), and
dropped from that record once they hold nothing.

Under a live write load the digests of a partition's owners differ for a
moment after each write, so "balanced" also accepts a snapshot whose only
differences are new: record-level differences (:func:`record_problems`) that
were not there one full pass earlier.  Anything that survives a full pass of
every node is real and keeps the command waiting.
"""

import threading
import time

from cluster.admin import draining
from cluster.admin.access import AdminError, PeerError
from cluster.admin.analysis import analyze, record_problems
from cluster.admin.progress import Progress
from filetracker.units import human_bytes

#: Record-level checks are made only when this few partitions still differ.
DRILL_LIMIT = 64


class PassDriver:
    """Runs handoff + sync passes on each node, back to back, in one thread per node."""

    def __init__(self, access, urls):
        self.access = access
        self.urls = list(dict.fromkeys(urls))
        self.started = dict.fromkeys(self.urls, 0)
        self.finished = dict.fromkeys(self.urls, 0)
        self.errors = {}
        self._stop = threading.Event()

    def start(self):
        for url in self.urls:
            threading.Thread(target=self._loop, args=(url,), name="pass-" + url, daemon=True).start()
        return self

    def _loop(self, url):
        while not self._stop.is_set():
            self.started[url] += 1
            try:
                self.access.run_task(url, "all")
                self.finished[url] += 1
                self.errors.pop(url, None)
            except PeerError as e:
                self.errors[url] = str(e)
                self._stop.wait(1.0)   # down or failing: retry shortly
            else:
                self._stop.wait(0.05)

    def mark(self):
        return dict(self.started)

    def cycled_since(self, mark, up_urls):
        """True when every up node finished a pass that started after ``mark``."""
        return all(self.finished.get(u, 0) > mark.get(u, 0) for u in up_urls if u in self.finished)

    def stop(self):
        self._stop.set()


def drill(access, ring, views, partitions):
    """Record-level problems of ``partitions``: a set of tuples (see :func:`record_problems`)."""
    up = [v for v in views if v.up]
    members = {n.id for n in ring.nodes}
    jobs = []
    for p in partitions:
        owner_ids = {n.id for n in ring.partition_owners(p)}
        for v in up:
            if p in v.digests or (v.id in owner_ids and v.member):
                jobs.append((p, v))
    by_partition = {}
    for (p, v), recs, err in access.map(lambda j: access.partition_records(j[1].url, j[0]), jobs):
        if err is not None:
            raise AdminError("cannot list partition %d on %s: %s" % (p, v.url, err))
        by_partition.setdefault(p, {})[v.id] = recs
    problems = set()
    expired = expired_before(up)
    for p, recs in by_partition.items():
        problems |= record_problems(ring, p, recs, members, expired)
    return problems


def expired_before(views):
    """The version below which the nodes of ``views`` no longer copy a tombstone to a replica
    without the name: now less the shortest ``tombstone_ttl`` they report (0 when none does:
    older nodes copy every tombstone)."""
    ttls = [v.status.get("tombstone_ttl") for v in views if isinstance(v.status, dict)]
    ttls = [t for t in ttls if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return time.time() - min(ttls) if ttls else 0


def copies_in_place(views):
    """Replica copies members hold for partitions they own (from their status)."""
    total = 0
    for v in views:
        if v.up and v.member and v.status:
            s = v.status
            total += s.get("files", 0) + s.get("tombstones", 0) - s.get("pending_handoff", 0)
    return max(total, 0)


def pending(views, last_known=None):
    """``(records held by non-owners, estimated bytes of them)`` from the nodes' status.

    With ``last_known`` (a dict kept across snapshots) a node that is down counts with
    what it held when last seen: its backlog has not moved anywhere (a drained node
    killed midway had all of it counted as handed off)."""
    per_node = {} if last_known is None else last_known
    for v in views:
        if v.up and v.status:
            s = v.status
            n = int(s.get("pending_handoff", 0))
            per_node[v.url] = (n, n * s.get("bytes", 0) / max(1, s["files"]) if s.get("files") else 0)
        elif last_known is None:
            per_node.pop(v.url, None)
    return sum(n for n, _ in per_node.values()), int(sum(b for _, b in per_node.values()))


def print_plan(out, ring, analysis, problems, views):
    """The dry-run report: what moves from where to where, and which fraction of the data."""
    lacks = [t for t in problems if t[0] == "lacks"]
    foreign = [t for t in problems if t[0] == "foreign"]
    to_copy = len(lacks)
    to_copy_bytes = sum(t[5] for t in lacks)
    in_place = copies_in_place(views)
    total = in_place + to_copy
    frac = to_copy / total if total else 0.0
    out.write("ring epoch %d: %d nodes, N=%d, %d partitions\n"
              % (ring.epoch, len(ring.nodes), ring.n_replicas, ring.partitions))
    if analysis.down:
        out.write("down: %s (their data is not counted)\n" % ", ".join(analysis.down))
    if not analysis.moves:
        out.write("plan: nothing to move, every file is on exactly its owners\n")
        return
    out.write("plan: %d partitions, %d replica copies (%s) to copy, %d records to drop after hand-off\n"
              % (len(analysis.moves), to_copy, human_bytes(to_copy_bytes), len(foreign)))
    out.write("fraction of data moving: %.4f (%d of %d replica copies)\n" % (frac, to_copy, total))
    per_pair = {}
    for t in lacks:
        per_pair.setdefault(t[1], 0)
        per_pair[t[1]] += 1
    for (src, dst), parts in sorted(analysis.pairs().items()):
        out.write("  %s -> %s: %d partitions\n" % (src, dst, parts))
    for node, parts in sorted(analysis.foreign.items()):
        out.write("  %s holds %d partitions it does not own (dropped once the owners hold them)\n"
                  % (node, len(parts)))
    for node, n in sorted(per_pair.items()):
        out.write("  %s receives %d replica copies\n" % (node, n))


def trigger(access, views):
    """Start one handoff and one sync pass on every up node without waiting for them."""
    for v in views:
        if v.up:
            for task in ("handoff", "sync"):
                try:
                    access.run_task(v.url, task, timeout=0.5)
                except PeerError:
                    pass  # a read timeout: the pass goes on on the node


def current_ring(access, ring, drain):
    """The newest ring (re-discovered if some node moved on), given to lagging nodes."""
    newest, rings = access.discover(extra=drain)
    if newest.epoch < ring.epoch:
        newest = ring
    access.spread_ring(newest, rings)
    return newest


def rebalance(access, out, drain=(), dry_run=False, wait=True, timeout=0.0, down_timeout=60.0,
              poll=1.0, tty=None, allow_fewer_replicas=False, settle=draining.SETTLE_SECONDS):
    """Run the command; returns the exit status (0 balanced, 1 not).  ``allow_fewer_replicas``:
    an interrupted removal may be finished even if fewer nodes than N are left.  ``settle``: how
    long to wait for the ring of a membership change claimed but not written yet."""
    # the ring of an add-node interrupted after writing to its new node only is found there
    # (the claim names it) and spread below: that finishes the addition
    newest, rings, doc = draining.current(access, out, extra=drain, wait=settle)
    look = list(drain) + draining.claimed_nodes(doc)
    if draining.pending_claim(doc, newest) and not dry_run:
        # interrupted before any ring write: without this, every command would wait for it
        draining.retire(access, out, newest, doc)
        newest, rings = access.discover(extra=look)
    resumed, leaving, _doc = draining.resume(access, out, newest, rings, extra=drain, apply=not dry_run,
                                             allow_fewer_replicas=allow_fewer_replicas)
    drain = list(dict.fromkeys(list(drain) + leaving))
    if leaving and not dry_run:
        newest, rings = access.discover(extra=drain + look)
    # an agreed ring only (never the dry run's); a dry run only says whom it would give it to
    lagging = access.lagging(newest, rings) if dry_run else access.spread_ring(newest, rings)
    if lagging:
        out.write("%s ring epoch %d to %s\n" % ("would give" if dry_run else "gave", newest.epoch,
                                                ", ".join(lagging)))
    if newest.epoch < resumed.epoch:
        newest = resumed   # a dry run judges the ring it would write
    ring = newest
    views = access.snapshot(ring, extra=drain)
    analysis = analyze(ring, views)
    if dry_run:
        problems = drill(access, ring, views, analysis.problem_partitions)
        print_plan(out, ring, analysis, problems, views)
        return 0
    if analysis.balanced:
        out.write("balanced: every file is on exactly its %d owners (ring epoch %d)\n"
                  % (ring.n_replicas, ring.epoch))
        _report_drained(out, views)
        draining.forget_drained(access, out, ring, views)
        return 0
    if not wait:
        trigger(access, views)
        out.write("movement started on %d nodes: %d partitions to move; run `rebalance` to watch it\n"
                  % (sum(1 for v in views if v.up), len(analysis.moves)))
        return 0
    return _watch(access, out, ring, drain, views, analysis, timeout, down_timeout, poll, tty)


def _watch(access, out, ring, drain, views, analysis, timeout, down_timeout, poll, tty):
    driver = PassDriver(access, [v.url for v in views]).start()
    progress = Progress(out, unit="file", tty=tty)
    t0 = time.monotonic()
    last_known = {}
    first_files, _ = pending(views, last_known)
    first_parts = max(1, len(analysis.moves))
    moved_peak = 0
    prev_problems = None
    mark = None
    down_since = None
    snap_seconds = 0.0
    try:
        while True:
            left_files, left_bytes = pending(views, last_known)
            moved_peak = max(moved_peak, first_files - left_files)
            total = max(first_files, moved_peak + left_files)
            # moves are counted among the nodes up: with one down, "0 left" alone would mislead
            waiting = "; waiting for %s (down)" % ", ".join(analysis.down) if analysis.down else ""
            progress.update(moved_peak, total, "partitions left %d/%d, ~%s left to hand off%s"
                            % (len(analysis.moves), first_parts, human_bytes(left_bytes), waiting))
            if analysis.balanced:
                break
            now = time.monotonic()
            if analysis.down:
                down_since = down_since or now
                if now - down_since > down_timeout:
                    progress.close()
                    raise AdminError("cannot balance: %s down for %ds (start it again, or remove it with "
                                     "remove-node)" % (", ".join(analysis.down), now - down_since))
            else:
                down_since = None
                up_urls = [v.url for v in views if v.up]
                # a node being drained must end up empty, whatever the load: it is stopped next
                drained = all(not v.digests for v in views if v.up and not v.member)
                if len(analysis.moves) <= DRILL_LIMIT and (mark is None or driver.cycled_since(mark, up_urls)):
                    try:
                        problems = drill(access, ring, views, analysis.problem_partitions)
                    except AdminError:
                        problems = None   # a node stopped answering meanwhile: next snapshot tells
                    if problems is not None:
                        fresh_only = prev_problems is not None and not problems & prev_problems
                        if drained and (not problems or fresh_only):
                            break
                        prev_problems, mark = problems, driver.mark()
            if timeout and now - t0 > timeout:
                progress.close()
                why = "; down: %s (start it again, or remove it with remove-node)" % ", ".join(analysis.down) \
                    if analysis.down else ""
                if analysis.down and not analysis.moves:
                    raise AdminError("not balanced after %ds: waiting for %s, which is down (start it "
                                     "again, or remove it with remove-node)" % (timeout, ", ".join(analysis.down)))
                raise AdminError("not balanced after %ds: %d partitions still to move%s"
                                 % (timeout, len(analysis.moves), why))
            # snapshots cost the nodes a status and a digest pass: on a big cluster poll less often
            time.sleep(max(poll, 2 * snap_seconds))
            if any(v.up and v.ring is not None and v.ring.epoch > ring.epoch for v in views) or \
                    any(v.up and v.member and v.ring is not None and v.ring.epoch < ring.epoch for v in views):
                ring = current_ring(access, ring, drain)
                prev_problems = mark = None
            snap_started = time.monotonic()
            views = access.snapshot(ring, extra=drain)
            snap_seconds = time.monotonic() - snap_started
            analysis = analyze(ring, views)
    finally:
        driver.stop()
    progress.close()
    stranded = sum(n for url, (n, _) in last_known.items()
                   if any(v.url == url and not v.up for v in views))
    out.write("balanced: every file is on exactly its %d owners (ring epoch %d); %d records handed off in %.1fs%s\n"
              % (ring.n_replicas, ring.epoch, moved_peak, time.monotonic() - t0,
                 "; %d more were on nodes that went down (rebuilt from the other replicas)" % stranded
                 if stranded else ""))
    if drain:
        final = access.snapshot(ring, extra=drain)
        _report_drained(out, final)
        draining.forget_drained(access, out, ring, final)
    return 0


def _report_drained(out, views):
    for v in views:
        if not v.member and not v.up:
            out.write("%s is down: what only it held cannot be handed off (%s)\n" % (v.id, v.error))
        if not v.member and v.up and v.status:
            if not v.digests:
                out.write("%s holds nothing now: it has left the cluster and can be stopped\n" % v.id)
            else:
                out.write("%s still holds %d partitions\n" % (v.id, len(v.digests)))
