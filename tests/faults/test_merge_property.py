"""Property-based tests (hypothesis) of the merge rule in :mod:`filetracker.records`.

Records are generated the way stores hold them: a data record's size is a
function of its content (its sha256), so two records with equal order keys are
equal; under that precondition :func:`merge` is commutative, associative and
idempotent, and :func:`merge_all` does not depend on the order of its input
(``None`` entries included).  These are what make replicas converge whatever
order writes, repairs and anti-entropy deliver records in.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filetracker.records import Record, beats, merge, merge_all, order_key
from tests.faults.conftest import figures

pytestmark = pytest.mark.faults

SHAS = ["%064x" % i for i in (0, 1, 2, 0xABC, 2**255)]
_runs = {"n": 0}


@st.composite
def records(draw):
    version = draw(st.integers(min_value=0, max_value=6))   # few versions: many ties
    if draw(st.booleans()):
        return Record.tombstone("/f", version)
    sha = draw(st.sampled_from(SHAS))
    return Record("/f", version, sha, size=int(sha, 16) % 1000, deleted=False)


maybe = st.one_of(st.none(), records())


@settings(max_examples=400, deadline=None)
@given(maybe, maybe)
def test_commutative(a, b):
    _runs["n"] += 1
    assert merge(a, b) == merge(b, a)


@settings(max_examples=400, deadline=None)
@given(maybe, maybe, maybe)
def test_associative(a, b, c):
    _runs["n"] += 1
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@settings(max_examples=200, deadline=None)
@given(maybe, maybe)
def test_idempotent_and_absorbing(a, b):
    _runs["n"] += 1
    assert merge(a, a) == a
    m = merge(a, b)
    assert merge(m, a) == m and merge(m, b) == m   # merging a record already merged changes nothing
    assert not beats(a, m) and not beats(b, m)


@settings(max_examples=300, deadline=None)
@given(st.lists(maybe, max_size=8), st.randoms(use_true_random=False))
def test_merge_all_order_independent(items, rnd):
    _runs["n"] += 1
    shuffled = list(items)
    rnd.shuffle(shuffled)
    w = merge_all(items)
    assert w == merge_all(shuffled) == merge_all(reversed(items))
    if any(r is not None for r in items):
        assert order_key(w) == max(order_key(r) for r in items if r is not None)
    else:
        assert w is None


def test_zz_figures():
    figures("merge rule (hypothesis)", cases=_runs["n"])
