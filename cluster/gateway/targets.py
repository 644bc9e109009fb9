"""Choosing the nodes a write goes to: owners first, handoff nodes for owners that are down.

A write for a partition goes to its N owners.  An owner that is down (or that
refuses when the gateway connects) is replaced by the next live handoff node
of the preference list, which receives ``X-Hint-For: <owner id>`` so that it
hands the data to the owner once it is back.
"""


class TargetPicker:
    """Hands out write targets for one request, never the same node twice."""

    def __init__(self, view, placement):
        self._view = view
        self._placement = placement
        self._used = set()

    def initial(self, need=0):
        """``[(node, hint_for or None)]``: one entry per owner that can be served.

        When fewer than ``need`` targets are live, owners marked down are tried
        too (their mark may be stale: nodes that were still starting, a short
        blip): the alternative is a certain 503.
        """
        out = []
        for owner in self._placement.owners:
            if self._view.is_live(owner.url):
                self._used.add(owner.url)
                out.append((owner, None))
        for owner in self._placement.owners:
            if not self._view.is_live(owner.url):
                sub = self.replacement(owner.id)
                if sub is not None:
                    out.append(sub)
        for owner in self._placement.owners:
            if len(out) >= need:
                break
            if owner.url not in self._used:
                self._used.add(owner.url)
                out.append((owner, None))
        return out

    def replacement(self, hint_for):
        """The next unused live handoff node, as ``(node, hint_for)``, or None."""
        for node in self._placement.handoffs:
            if node.url not in self._used and self._view.is_live(node.url):
                self._used.add(node.url)
                return node, hint_for
        return None

    def mark_used(self, node):
        self._used.add(node.url)

    @staticmethod
    def hint_after_failure(node, hint_for):
        """Who a replacement stands for: the owner that failed, or the one it stood for."""
        return hint_for or node.id
