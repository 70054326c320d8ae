"""Bucketing, checkpoint store and plan agreement of PSI (no sockets)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.protocol import Envelope, LocalNetwork
from fedlab_kit.psi import buckets as buckets_mod
from fedlab_kit.psi.buckets import BucketStore
from fedlab_kit.psi.ids import IdError, encode_ids
from fedlab_kit.psi.plan import PlanProtocol, Resume, bucket_of

ids_strategy = st.lists(st.one_of(st.text(min_size=1, max_size=12),
                                  st.integers(-10**12, 10**12)), max_size=80)


@settings(max_examples=60, deadline=None)
@given(ids=ids_strategy, n=st.integers(1, 9), tag=st.binary(min_size=1, max_size=32))
def test_bucket_of_is_a_function_of_the_key_alone(ids: list, n: int, tag: bytes) -> None:
    keys, _, _ = encode_ids(ids)
    whole = bucket_of(tag, keys, n)
    assert whole.shape == (len(keys),) and ((whole >= 0) & (whole < n)).all()
    # the same key lands in the same bucket whatever batch it is hashed in
    singles = [int(bucket_of(tag, [k], n)[0]) for k in keys]
    assert singles == whole.tolist()


def test_bucket_tags_separate_runs() -> None:
    keys, _, _ = encode_ids([f"u{i}" for i in range(2000)])
    a, b = bucket_of(b"run-1", keys, 16), bucket_of(b"run-2", keys, 16)
    assert (a != b).mean() > 0.8  # about 15/16 expected for unrelated tags
    counts = np.bincount(a, minlength=16)
    assert counts.min() > 2000 / 16 * 0.6  # roughly uniform


@settings(max_examples=25, deadline=None)
@given(ids=st.lists(st.text(min_size=1, max_size=6), max_size=120), n=st.integers(1, 7))
def test_partition_keeps_every_row_once(tmp_path_factory: pytest.TempPathFactory,
                                        ids: list[str], n: int) -> None:
    store = BucketStore(tmp_path_factory.mktemp("b"))
    report = store.partition(ids, b"tag", n, normalize=None, duplicates="first")
    rows, keys = [], []
    for k in range(n):
        kk, rr = store.read_bucket(k)
        assert (bucket_of(b"tag", kk, n) == k).all()
        keys += kk
        rows += rr.tolist()
    first = {}
    for i, v in enumerate(ids):
        first.setdefault(v, i)
    assert sorted(rows) == sorted(first.values())
    assert all(keys[j] == b"s:" + ids[r].encode() for j, r in enumerate(rows))
    assert report.n_used == len(first)
    assert report.excluded.get("duplicate", 0) == len(ids) - len(first)


def test_duplicates_across_chunks_are_found(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buckets_mod, "CHUNK", 3)
    ids = ["a", "b", "c", "d", "a", "e", "f", "b"]
    with pytest.raises(IdError, match="2 duplicate IDs"):
        BucketStore(tmp_path / "x").partition(ids, b"t", 3, normalize=None, duplicates="raise")
    store = BucketStore(tmp_path / "y")
    report = store.partition(ids, b"t", 3, normalize=None, duplicates="first")
    rows = sorted(r for k in range(3) for r in store.read_bucket(k)[1].tolist())
    assert rows == [0, 1, 2, 3, 5, 6]
    assert report.excluded == {"duplicate": 2}


def test_results_and_state_round_trip(tmp_path: Path) -> None:
    store = BucketStore(tmp_path)
    assert store.load_state() is None
    store.save_result(0, np.array([5, 2]), 2)
    store.save_result(1, np.array([], dtype=np.int64), 0)
    store.save_result(2, np.array([7]), 1)
    rows, size = store.load_results(3, revealed=True)
    assert rows.tolist() == [5, 2, 7] and size == 3
    store.save_state({"done": [0, 2]})
    assert store.load_state() == {"done": [0, 2]}
    assert oct(tmp_path.stat().st_mode & 0o777) == oct(0o700)


def _plans(resumes: dict[str, Resume | None], sizes: dict[str, int], bucket: int = 100):
    parties = sorted(resumes)
    return LocalNetwork({p: PlanProtocol(p, parties, sizes[p], bucket, resumes[p])
                         for p in parties}).run()


def test_fresh_plan_sizes_buckets_by_largest_set() -> None:
    res = _plans({"a": None, "b": None, "c": None}, {"a": 250, "b": 99, "c": 301})
    assert len({(p.tag, p.n_buckets, p.attempt) for p in res.values()}) == 1
    assert res["a"].n_buckets == 4 and not res["a"].resumed
    assert res["b"].sizes == {"a": 250, "b": 99, "c": 301}


def test_resume_needs_every_checkpoint_and_keeps_common_buckets() -> None:
    tag = b"t" * 32
    both = _plans({"a": Resume(tag, 5, frozenset({0, 1, 2})),
                   "b": Resume(tag, 5, frozenset({0, 1}))}, {"a": 400, "b": 450})
    assert both["a"].resumed and both["a"].tag == tag
    assert both["a"].done == both["b"].done == frozenset({0, 1})
    one = _plans({"a": Resume(tag, 5, frozenset({0})), "b": None}, {"a": 400, "b": 450})
    assert not one["a"].resumed and one["a"].done == frozenset() and one["a"].tag != tag


def test_a_stale_plan_is_replaced_by_the_newer_one() -> None:
    a = PlanProtocol("a", ["a", "b"], 10, 100)
    b_old = PlanProtocol("b", ["a", "b"], 10, 100)  # the incarnation of b that was killed
    b_new = PlanProtocol("b", ["a", "b"], 10, 100)
    live = {"a": a, "b": b_new}
    queue = deque(("a", "b", s) for s in b_old.start())  # still in flight to a
    queue += [("b", "a", s) for s in a.start()]
    queue += [("a", "b", s) for s in b_new.start()]
    while queue:
        to, sender, send = queue.popleft()
        env = Envelope(sender, to, "s", send.kind, 0, bytes(send.payload))
        queue += [(s.to, to, s) for s in live[to].on_message(env)]
    assert a.done and b_new.done
    assert a.result.attempt == b_new.result.attempt
    assert a.result.tag == b_new.result.tag


def test_a_checkpoint_folder_serves_one_party_and_run(tmp_path: Path) -> None:
    """The attack it rules out: two parties (or runs) pointing at one folder mix their
    buckets, and the "intersection" then holds IDs that are not common."""
    from fedlab_kit.psi.buckets import BucketStore
    from fedlab_kit.psi.ids import IdError

    store = BucketStore(tmp_path / "ckpt")
    with store.held("party 'retailer' in room 'r'"):
        with (pytest.raises(IdError, match=r"in use by another run .*'retailer'"),
              BucketStore(tmp_path / "ckpt").held("party 'media' in room 'r'")):
            pass
        store.save_state({"owner": "party 'retailer' in room 'r'"})
    with (pytest.raises(IdError, match="holds the checkpoint of party 'retailer'"),
          BucketStore(tmp_path / "ckpt").held("party 'media' in room 'r'")):
        pass
    with BucketStore(tmp_path / "ckpt").held("party 'retailer' in room 'r'"):
        pass  # the same party resumes its own checkpoint


def test_bucketed_type_counts_exclude_dropped_duplicates(tmp_path: Path) -> None:
    from fedlab_kit.psi.buckets import BucketStore

    store = BucketStore(tmp_path / "b")
    report = store.partition([1, 1, 2, "a", "a"], b"tag", 3, normalize=None,
                             duplicates="first")
    assert report.types == {"int": 2, "str": 1} and report.n_used == 3
