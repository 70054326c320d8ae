"""The leader's matching of fully encrypted values."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.psi.protocol import TRUNC, _match_exact, match_values


def _arr(rows: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(rows), np.uint8).reshape(-1, TRUNC)


def _check(values: dict[str, np.ndarray], ring: list[str]) -> dict[str, np.ndarray]:
    got = match_values(values, ring)
    lists = {p: [bytes(r) for r in v] for p, v in values.items()}
    common = set.intersection(*(set(v) for v in lists.values()))
    first = [lists[ring[0]][i] for i in got[ring[0]]]
    assert set(first) == common and len(first) == len(common)
    for p in ring:  # every party's positions name the same values in the same order
        assert [lists[p][i] for i in got[p]] == first
    return got


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=TRUNC, max_size=TRUNC), unique=True, max_size=40),
       st.data())
def test_matches_python_sets(pool: list[bytes], data: st.DataObject) -> None:
    ring = ["a", "b", "c"][: data.draw(st.integers(2, 3))]
    values = {p: _arr(data.draw(st.permutations(pool))[: data.draw(st.integers(0, len(pool)))])
              for p in ring}
    _check(values, ring)


def test_same_prefix_different_tail_is_no_match() -> None:
    a = _arr([b"P" * 8 + b"AAAA", b"x" * 12])
    b = _arr([b"P" * 8 + b"BBBB", b"x" * 12])
    got = _check({"a": a, "b": b}, ["a", "b"])
    assert got["a"].tolist() == [1] and got["b"].tolist() == [1]


def test_prefix_collision_inside_a_list_uses_the_exact_matcher() -> None:
    a = _arr([b"P" * 8 + b"AAAA", b"P" * 8 + b"BBBB", b"y" * 12])
    b = _arr([b"y" * 12, b"P" * 8 + b"BBBB"])
    got = _check({"a": a, "b": b}, ["a", "b"])
    exact = _match_exact({"a": a, "b": b}, ["a", "b"])
    assert sorted(got["a"].tolist()) == sorted(exact["a"].tolist()) == [1, 2]
