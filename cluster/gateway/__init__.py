"""The cluster gateway: a stateless router that speaks the public filetracker protocol.

It learns the ring from the nodes, streams uploads to N replicas at once and
answers after W stored them, reads the newest record among R replicas and
repairs stale ones in the background.  Entry point: :func:`cluster.gateway.main.main`;
the Tornado application is built by :func:`cluster.gateway.app.make_app`.
"""
