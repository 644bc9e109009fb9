"""A cluster storage node.

It answers the public filetracker protocol from its own store only (never
forwarding; writes only with ``--allow-public-writes``) and the internal
``/_cluster/`` API of ``docs/ARCHITECTURE.md``; in the background it runs
anti-entropy, hinted handoff / rebalance movement and tombstone reclaim
(:mod:`cluster.node.tasks`, moving data with :mod:`cluster.node.replicator`).  Build it with :func:`cluster.node.app.make_app`;
the CLI is :func:`cluster.node.main.main`.
"""
