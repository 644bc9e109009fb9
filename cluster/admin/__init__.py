"""``filetracker-admin``: operate a cluster (status, membership, rebalancing, verification).

Layout: :mod:`cluster.admin.access` talks to the nodes (discovery, rings,
snapshots), :mod:`cluster.admin.analysis` is the pure judgement of a snapshot
(who holds what it should not, which replicas disagree, the movement plan),
and one module per command (:mod:`~cluster.admin.status`,
:mod:`~cluster.admin.membership`, :mod:`~cluster.admin.rebalance`,
:mod:`~cluster.admin.verify`); :mod:`cluster.admin.main` parses arguments.
"""
