"""Migration from a filetracker 2.x server into the cluster (``filetracker-admin import``/``compare``).

* :mod:`cluster.migrate.sources`: where files come from (a running 2.x
  server over HTTP, or a stopped 2.x server's data folder).
* :mod:`cluster.migrate.target`: where they go (any endpoint of the public
  protocol: a gateway, or our single server).
* :mod:`cluster.migrate.copier`: the resumable, parallel bulk copy.
* :mod:`cluster.migrate.compare`: name-by-name verification (version, SHA-256).
* :mod:`cluster.migrate.report`: progress (tqdm on a terminal, plain lines
  otherwise) and the final summary.
"""
