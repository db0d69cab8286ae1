"""The containment index finds the same first container as the pairwise reference scan."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tierwise.policy.containment import (
    ContainmentIndex,
    _Staircase,
    atoms_of,
    first_containing_naive,
)
from tierwise.policy.schema import Condition, Range

KINDS = ["a", "b", "c", "d"]
DOMAINS = ["docs", "tests", "config"]


def bounded(lo: int | None, hi: int | None) -> Range | int:
    if lo is None and hi is None:
        return 3
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return Range(min=lo, max=hi)


ranges = st.builds(bounded, st.none() | st.integers(0, 8), st.none() | st.integers(0, 8))
kinds = st.sampled_from(KINDS) | st.lists(st.sampled_from(KINDS), min_size=1, max_size=3)
conditions = st.builds(
    lambda kind, files, severity, domain, code: Condition(
        kind=kind, files=files, severity=severity, domain=domain, requires_code=code
    ),
    st.none() | kinds,
    st.none() | ranges,
    st.none() | st.sampled_from([None, 2, Range(min=3), Range(max=2)]),
    st.none() | st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=2),
    st.none() | st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(conditions, min_size=1, max_size=25), st.lists(conditions, max_size=10))
def test_index_agrees_with_the_pairwise_reference(
    added: list[Condition], queries: list[Condition]
) -> None:
    index = ContainmentIndex()
    entries: list[tuple[int, Any]] = []
    for key, cond in enumerate(added):
        atoms = atoms_of(cond)
        if any(a.empty() for a in atoms.values()):
            continue
        # the checker asks before adding (is this rule shadowed?), so do the same
        assert index.first_containing(atoms) == first_containing_naive(entries, atoms)
        index.add(key, atoms)
        entries.append((key, atoms))
    for cond in queries:
        atoms = atoms_of(cond)
        if any(a.empty() for a in atoms.values()):
            continue
        assert index.first_containing(atoms) == first_containing_naive(entries, atoms)


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=30))
def test_staircase_answers_like_a_scan(intervals: list[tuple[int, int]]) -> None:
    stairs = _Staircase()
    seen: list[tuple[int, int]] = []
    for a, b in intervals:
        lo, hi = min(a, b), max(a, b)
        expected = any(x <= lo and hi <= y for x, y in seen)
        assert stairs.contains(lo, hi) == expected
        stairs.add(lo, hi)
        seen.append((lo, hi))
        assert stairs.los == sorted(stairs.los) and stairs.his == sorted(stairs.his)
