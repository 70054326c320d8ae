"""Tests of the sans-IO ECDH-PSI protocol, run in memory through LocalNetwork (or fed by hand)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab_kit.errors import ProtocolError
from fedlab_kit.protocol import Action, Compute, Envelope, LocalNetwork, Protocol, Send
from fedlab_kit.psi.curve import POINT, InvalidPoint, hash_id
from fedlab_kit.psi.ids import prepare_ids
from fedlab_kit.psi.protocol import CODEC, Points, PsiOutcome, PsiProtocol, ResultHead

BATCH = 7  # small, so that every list is split into many batches


# ---------------------------------------------------------------------------- helpers
def _protocols(sets: dict[str, list[Any]], **kwargs: Any) -> tuple[dict, dict[str, Any]]:
    names = sorted(sets)
    prepared = {n: prepare_ids(sets[n]) for n in names}
    kwargs.setdefault("batch", BATCH)
    protos = {n: PsiProtocol(n, names, prepared[n][0], **kwargs) for n in names}
    return prepared, protos


def run_psi(sets: dict[str, list[Any]], **kwargs: Any) -> tuple[dict, dict[str, PsiOutcome]]:
    prepared, protos = _protocols(sets, **kwargs)
    return prepared, LocalNetwork(protos).run()


def aligned(sets: dict[str, list[Any]], prepared: dict, res: dict[str, PsiOutcome],
            name: str) -> list[Any]:
    """The input IDs of ``name`` in the order PSI gave it."""
    rows = prepared[name][1]
    positions = res[name].positions
    assert positions is not None
    return [sets[name][rows[i]] for i in positions]


def check_intersection(sets: dict[str, list[Any]], **kwargs: Any) -> None:
    truth = set.intersection(*(set(v) for v in sets.values()))
    prepared, res = run_psi(sets, **kwargs)
    names = sorted(sets)
    first = aligned(sets, prepared, res, names[0])
    assert set(first) == truth
    assert len(first) == len(truth)  # no repeats
    for n in names:
        out = res[n]
        assert out.size == len(truth)
        assert out.positions is not None and out.positions.dtype == np.int64
        assert aligned(sets, prepared, res, n) == first  # same IDs, same order everywhere
        assert out.sizes == {p: len(s) for p, s in sets.items()}


def run_reordered(protos: dict[str, Protocol], held: tuple[str, str]) -> dict[str, Any]:
    """Like LocalNetwork, but messages from held[0] to held[1] are delivered only when
    nothing else can be: a legal schedule (each sender -> recipient pair stays in order),
    as an asynchronous relay may produce when one link is slower than the others."""
    queue: list[Envelope] = []
    seqs: dict[tuple[str, str], int] = {}

    def post(sender: str, actions: list[Action]) -> None:
        for m in actions:
            if isinstance(m, Compute):
                post(sender, protos[sender].on_computed(m.key, m.fn(*m.args)))
                continue
            seq = seqs.get((sender, m.to), 0)
            seqs[(sender, m.to)] = seq + 1
            queue.append(Envelope(sender, m.to, "local", m.kind, seq, bytes(m.payload)))

    for name, proto in protos.items():
        post(name, proto.start())
    while queue:
        i = next((k for k, e in enumerate(queue) if (e.sender, e.recipient) != held), 0)
        env = queue.pop(i)
        post(env.recipient, protos[env.recipient].on_message(env))
    assert all(p.done for p in protos.values())
    return {n: p.result for n, p in protos.items()}


def env(sender: str, to: str, kind: str, payload: bytes, seq: int = 0) -> Envelope:
    return Envelope(sender, to, "s", kind, seq, payload)


def exchange_hellos(protos: dict[str, PsiProtocol]) -> dict[str, list[Action]]:
    """Deliver every hello by hand; returns what each protocol asked for afterwards."""
    sends = {n: p.start() for n, p in protos.items()}
    after: dict[str, list[Action]] = {n: [] for n in protos}
    for n, actions in sends.items():
        for s in actions:
            assert isinstance(s, Send) and s.kind == "psi/hello"
            after[s.to] += protos[s.to].on_message(env(n, s.to, s.kind, bytes(s.payload)))
    return after


def _keys(prefix: str, n: int) -> list[bytes]:
    return [f"s:{prefix}{i}".encode() for i in range(n)]


def _points(n: int) -> bytes:
    return b"".join(hash_id(b"x", b"%d" % i) for i in range(n))


# ------------------------------------------------------------------------ correctness
CASES = {
    "empty-one": {"a": [], "b": ["x", "y"], "c": ["x"]},
    "empty-all": {"a": [], "b": [], "c": []},
    "disjoint": {"a": list(range(0, 20)), "b": list(range(20, 45)), "c": list(range(45, 50))},
    "identical": {"a": [f"id{i}" for i in range(30)], "b": [f"id{i}" for i in range(30)][::-1],
                  "c": [f"id{i}" for i in range(29, -1, -2)] + [f"id{i}" for i in range(0, 30, 2)]},
    "single": {"a": ["only"], "b": ["only"], "c": ["only"]},
    "single-vs-many": {"a": [17], "b": list(range(40)), "c": list(range(10, 30))},
    "unicode": {"a": ["客户-ü-😀", "Ελλάδα", "x", "e\u0301"],
                "b": ["e\u0301", "客户-ü-😀", "\u00e9", "y"],
                "c": ["Ελλάδα", "e\u0301", "客户-ü-😀"]},
    "ints-vs-strs": {"a": [1, 2, 3, "1", "4"], "b": ["1", "2", 3, 4], "c": [1, "1", "2", 3, 4]},
    "exact-batches": {"a": list(range(14)), "b": list(range(7, 28)), "c": list(range(0, 21))},
}


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fixed_cases(case: str, n_parties: int) -> None:
    sets = {n: CASES[case][n] for n in "abc"[:n_parties]}
    check_intersection(sets)


def test_empty_case_finishes_with_empty_positions() -> None:
    _, res = run_psi({"a": [], "b": ["x"]})
    for n in "ab":
        assert res[n].size == 0
        assert res[n].positions is not None and len(res[n].positions) == 0
        assert res[n].sizes == {"a": 0, "b": 1}


ID = st.one_of(st.integers(-30, 30), st.text(min_size=1, max_size=3))


@st.composite
def party_sets(draw: st.DrawFn, n: int) -> dict[str, list[Any]]:
    """Sets of up to 60 IDs (ints and strings) drawn from a common universe, so they overlap."""
    odd = draw(st.lists(ID, unique=True, max_size=20))
    size = draw(st.integers(0, 80))
    plain = [f"u{i}" if i % 2 else 1000 + i for i in range(size)]
    universe = list(dict.fromkeys(odd + plain))
    rnd = draw(st.randoms(use_true_random=False))
    return {name: rnd.sample(universe, rnd.randint(0, min(60, len(universe))))
            for name in "abc"[:n]}


@settings(max_examples=60, deadline=None)
@given(sets=party_sets(2))
def test_random_two_party_sets(sets: dict[str, list[Any]]) -> None:
    check_intersection(sets)


@settings(max_examples=40, deadline=None)
@given(sets=party_sets(3), batch=st.sampled_from([1, 3, 7, 64]))
def test_random_three_party_sets(sets: dict[str, list[Any]], batch: int) -> None:
    check_intersection(sets, batch=batch)


@pytest.mark.parametrize("leader", ["a", "b", "c"])
def test_any_leader_gives_the_same_intersection(leader: str) -> None:
    sets = {"a": list(range(0, 40)), "b": list(range(10, 50)), "c": list(range(5, 35))}
    check_intersection(sets, leader=leader)


def test_results_do_not_depend_on_input_order() -> None:
    sets = {"a": list(range(0, 30)), "b": list(range(15, 45))}
    prepared, res = run_psi(sets)
    rev = {n: v[::-1] for n, v in sets.items()}
    prepared2, res2 = run_psi(rev)
    assert set(aligned(sets, prepared, res, "a")) == set(aligned(rev, prepared2, res2, "b"))
    assert res["a"].size == res2["b"].size == 15


# ----------------------------------------------------------------------- cardinality
@pytest.mark.parametrize("n_parties", [2, 3])
def test_cardinality_reveals_only_counts(n_parties: int) -> None:
    sets = {"a": list(range(0, 40)), "b": list(range(25, 60)), "c": list(range(30, 100))}
    sets = {n: sets[n] for n in "abc"[:n_parties]}
    truth = set.intersection(*(set(v) for v in sets.values()))
    assert len(truth) > 0
    _, res = run_psi(sets, reveal="cardinality")
    for out in res.values():
        assert out.positions is None
        assert out.size == len(truth)
        assert out.sizes == {p: len(s) for p, s in sets.items()}


def test_cardinality_with_receivers() -> None:
    sets = {"a": list(range(20)), "b": list(range(5, 30)), "c": list(range(10, 40))}
    _, res = run_psi(sets, reveal="cardinality", receivers=["a", "c"])
    assert res["a"].size == res["c"].size == 10
    assert res["b"].size == -1
    assert all(out.positions is None for out in res.values())


@settings(max_examples=20, deadline=None)
@given(sets=party_sets(3))
def test_random_cardinality(sets: dict[str, list[Any]]) -> None:
    truth = set.intersection(*(set(v) for v in sets.values()))
    _, res = run_psi(sets, reveal="cardinality")
    assert {out.size for out in res.values()} == {len(truth)}
    assert all(out.positions is None for out in res.values())


# ------------------------------------------------------------------------- receivers
@pytest.mark.parametrize("n_parties", [2, 3])
def test_only_receivers_learn_the_intersection(n_parties: int) -> None:
    sets = {"a": [f"k{i}" for i in range(30)], "b": [f"k{i}" for i in range(10, 50)],
            "c": [f"k{i}" for i in range(0, 50, 2)]}
    sets = {n: sets[n] for n in "abc"[:n_parties]}
    truth = set.intersection(*(set(v) for v in sets.values()))
    prepared, res = run_psi(sets, receivers=["b"])
    assert res["b"].size == len(truth) > 0
    assert set(aligned(sets, prepared, res, "b")) == truth
    for n in sets:
        if n != "b":
            assert res[n].size == -1
            assert res[n].positions is None
        assert res[n].sizes == {p: len(s) for p, s in sets.items()}


def test_two_receivers_of_three_get_the_same_order() -> None:
    sets = {"a": list(range(30)), "b": list(range(10, 50)), "c": list(range(0, 50, 3))}
    prepared, res = run_psi(sets, receivers=["c", "a"])
    assert res["b"].positions is None and res["b"].size == -1
    assert aligned(sets, prepared, res, "a") == aligned(sets, prepared, res, "c")
    assert set(aligned(sets, prepared, res, "a")) == set(range(12, 30, 3))


# ---------------------------------------------------------------------- constructor
@pytest.mark.parametrize("kwargs,match", [
    ({"parties": ["a"]}, "2 or 3 parties"),
    ({"parties": ["a", "b", "c", "d"]}, "2 or 3 parties"),
    ({"parties": ["b", "c"]}, "2 or 3 parties"),
    ({"reveal": "everything"}, "reveal"),
    ({"receivers": ["a", "z"]}, "receivers"),
    ({"receivers": ["b"], "leader": "a"}, "leader"),
])
def test_bad_parameters_are_refused(kwargs: dict[str, Any], match: str) -> None:
    args = {"parties": ["a", "b"], **kwargs}
    parties = args.pop("parties")
    with pytest.raises(ValueError, match=match):
        PsiProtocol("a", parties, [b"s:x"], **args)


# -------------------------------------------------------------------- hello mismatch
@pytest.mark.parametrize("mine,theirs,what", [
    ({"reveal": "intersection"}, {"reveal": "cardinality"},
     "revealing the count only (reveal='cardinality')"),  # the panel's words, then the CLI's
    ({}, {"receivers": ["b"]}, "results to ['b']"),
    ({"receivers": ["a", "b"]}, {"receivers": ["a"]}, "results to ['a']"),
    ({"batch": 7}, {"batch": 8}, "batch 8"),
    ({"leader": "a"}, {"leader": "b"}, "leader 'b'"),
])
def test_mismatched_parameters_name_the_peer(mine: dict, theirs: dict, what: str) -> None:
    a = PsiProtocol("a", ["a", "b"], _keys("x", 3), **mine)
    b = PsiProtocol("b", ["a", "b"], _keys("x", 3), **theirs)
    (hello_b,) = b.start()
    with pytest.raises(ProtocolError, match="PSI parameters differ") as info:
        a.on_message(env("b", "a", "psi/hello", bytes(hello_b.payload)))
    assert "'b' runs" in str(info.value)
    assert what in str(info.value)
    assert not a.done


def test_mismatch_through_the_network() -> None:
    names = ["a", "b", "c"]
    protos = {n: PsiProtocol(n, names, _keys("x", 5), batch=BATCH,
                             reveal="cardinality" if n == "c" else "intersection")
              for n in names}
    with pytest.raises(ProtocolError, match=r"'(a|b|c)' runs") as info:
        LocalNetwork(protos).run()
    msg = str(info.value)
    assert "reveal='cardinality'" in msg and "reveal='intersection'" in msg


def test_mismatched_parties_are_refused() -> None:
    a = PsiProtocol("a", ["a", "b"], _keys("x", 3))
    b = PsiProtocol("b", ["a", "b", "c"], _keys("x", 3))
    hello_b = next(s for s in b.start() if s.to == "a")
    with pytest.raises(ProtocolError, match="'b' runs parties \\['a', 'b', 'c'\\]"):
        a.on_message(env("b", "a", "psi/hello", bytes(hello_b.payload)))


def test_duplicate_hello_is_refused() -> None:
    a = PsiProtocol("a", ["a", "b", "c"], _keys("x", 3))
    b = PsiProtocol("b", ["a", "b", "c"], _keys("x", 3))
    hello_b = next(s for s in b.start() if s.to == "a")
    a.on_message(env("b", "a", "psi/hello", bytes(hello_b.payload)))
    with pytest.raises(ProtocolError, match="duplicate or invalid hello from 'b'"):
        a.on_message(env("b", "a", "psi/hello", bytes(hello_b.payload), seq=1))


def test_garbage_hello_is_refused() -> None:
    a = PsiProtocol("a", ["a", "b"], _keys("x", 3))
    for payload in (b"", b"\x00\x00", b"\x00\x00\x00\x03abc", b"\xff\xff\xff\xff"):
        with pytest.raises(ProtocolError, match="malformed 'psi/hello' from 'b'"):
            a.on_message(env("b", "a", "psi/hello", payload))


def test_hello_from_a_non_party_is_refused() -> None:
    """Only the named parties may take part: a hello from anyone else is a ProtocolError
    (and must not count towards 'every hello arrived')."""
    a = PsiProtocol("a", ["a", "b"], _keys("x", 3))
    b = PsiProtocol("b", ["a", "b"], _keys("y", 3))
    (hello_b,) = b.start()
    with pytest.raises(ProtocolError):
        a.on_message(env("z", "a", "psi/hello", bytes(hello_b.payload)))


# ------------------------------------------------------------ malformed peer batches
def _two_after_hellos(size_a: int = 10, size_b: int = 12) -> tuple[PsiProtocol, PsiProtocol]:
    a = PsiProtocol("a", ["a", "b"], _keys("a", size_a), batch=BATCH)  # leader
    b = PsiProtocol("b", ["a", "b"], _keys("b", size_b), batch=BATCH)
    after = exchange_hellos({"a": a, "b": b})
    assert all(isinstance(x, Compute) for x in after["a"] + after["b"])
    assert len(after["a"]) == 2 and len(after["b"]) == 2  # ceil(10 / 7), ceil(12 / 7)
    return a, b


def test_well_formed_batch_is_accepted() -> None:
    _, b = _two_after_hellos()
    (job,) = b.on_message(env("a", "b", "psi/points", CODEC.encode(Points("a", 1, 1), _points(3))))
    assert isinstance(job, Compute)
    assert job.fn(*job.args) != _points(3)


@pytest.mark.parametrize("payload,match", [
    (b"", "malformed 'psi/points' from 'a'"),
    (b"\x00\x00", "malformed 'psi/points' from 'a'"),
    (b"\x00\x00\x00\x05garbage", "malformed 'psi/points' from 'a'"),
    (CODEC.encode(Points("a", 1, 0))[:-1], "malformed 'psi/points' from 'a'"),
    (CODEC.encode(Points("a", 1, 0), _points(7)[:-1]), "'a' sent 223 bytes"),
    (CODEC.encode(Points("a", 1, 0), _points(6)), "expected 224"),
    (CODEC.encode(Points("a", 1, 1), _points(7)), "expected 96"),  # last batch holds 3 points
    (CODEC.encode(Points("a", 1, 2), _points(3)), "batch 2 of 'a', which does not exist"),
    (CODEC.encode(Points("a", 1, -1), _points(7)), "does not exist"),
    (CODEC.encode(Points("z", 1, 0), _points(7)), "of 'z', which does not exist"),
])
def test_malformed_or_wrong_length_batch_is_refused(payload: bytes, match: str) -> None:
    _, b = _two_after_hellos()
    with pytest.raises(ProtocolError, match=match):
        b.on_message(env("a", "b", "psi/points", payload))


def test_malformed_final_is_refused() -> None:
    a, _ = _two_after_hellos()
    with pytest.raises(ProtocolError, match="sent 11 bytes"):
        a.on_message(env("b", "a", "psi/final", CODEC.encode(Points("b", 2, 0), bytes(11))))
    with pytest.raises(ProtocolError, match="malformed 'psi/final'"):
        a.on_message(env("b", "a", "psi/final", b"\x01"))


def test_final_to_a_non_leader_is_refused() -> None:
    _, b = _two_after_hellos()
    with pytest.raises(ProtocolError, match="non-leader"):
        b.on_message(env("a", "b", "psi/final", CODEC.encode(Points("b", 2, 0), bytes(12 * 7))))


def test_final_batch_twice_is_refused() -> None:
    a, _ = _two_after_hellos()
    msg = CODEC.encode(Points("a", 2, 0), bytes(12 * 7))
    assert a.on_message(env("b", "a", "psi/final", msg)) == []
    with pytest.raises(ProtocolError, match="arrived twice"):
        a.on_message(env("b", "a", "psi/final", msg, seq=1))


def test_unknown_kind_is_refused() -> None:
    _, b = _two_after_hellos()
    with pytest.raises(ProtocolError, match="unexpected message 'psi/bogus' from 'a'"):
        b.on_message(env("a", "b", "psi/bogus", b""))


def test_result_from_a_non_leader_is_refused() -> None:
    names = ["a", "b", "c"]
    protos = {n: PsiProtocol(n, names, _keys("x", 3), batch=BATCH) for n in names}
    exchange_hellos(protos)
    with pytest.raises(ProtocolError, match="result from 'c', who is not the leader"):
        protos["b"].on_message(env("c", "b", "psi/result",
                                   CODEC.encode(ResultHead(0, False, {}))))


# ------------------------------------------------------------------- low-order points
@pytest.mark.parametrize("bad", [bytes(32), b"\x01" + bytes(31)], ids=["zero", "one"])
def test_low_order_point_from_a_peer_raises_invalid_point(bad: bytes) -> None:
    _, b = _two_after_hellos()
    pts = _points(7)
    pts = pts[: 4 * POINT] + bad + pts[5 * POINT :]
    (job,) = b.on_message(env("a", "b", "psi/points", CODEC.encode(Points("a", 1, 0), pts)))
    assert isinstance(job, Compute)
    with pytest.raises(InvalidPoint) as info:
        job.fn(*job.args)
    assert info.value.index == 4


def test_low_order_point_stops_the_local_network() -> None:
    class Evil(PsiProtocol):
        def on_computed(self, key: Any, result: Any) -> list[Action]:
            if key[0] == "own":  # replace our own first point with the identity
                result = bytes(32) + result[POINT:]
            return super().on_computed(key, result)

    names = ["a", "b"]
    protos = {"a": PsiProtocol("a", names, _keys("x", 9), batch=BATCH),
              "b": Evil("b", names, _keys("x", 9), batch=BATCH)}
    with pytest.raises(InvalidPoint):
        LocalNetwork(protos).run()
    assert not protos["a"].done


# ------------------------------------------------------------------ out-of-turn hops
def _three_after_hellos() -> dict[str, PsiProtocol]:
    names = ["a", "b", "c"]  # leader a: the ring is a -> b -> c -> a
    protos = {n: PsiProtocol(n, names, _keys(n, 10), batch=BATCH) for n in names}
    exchange_hellos(protos)
    assert protos["a"].ring == ["a", "b", "c"]
    return protos


def test_in_turn_forwarding_is_accepted() -> None:
    protos = _three_after_hellos()
    # c's predecessor is b; a's list has had 2 scalars, b's 1, when they reach c
    for owner, hops in (("a", 2), ("b", 1)):
        (job,) = protos["c"].on_message(
            env("b", "c", "psi/points", CODEC.encode(Points(owner, hops, 0), _points(7))))
        assert isinstance(job, Compute) and job.key[1:] == (owner, 0, hops)


@pytest.mark.parametrize("sender,owner,hops", [
    ("a", "a", 2),  # right hop count, but a is not c's predecessor
    ("a", "b", 1),
    ("b", "a", 1),  # from the predecessor, wrong hop count
    ("b", "b", 2),
    ("b", "a", 3),
])
def test_out_of_turn_forwarding_is_refused(sender: str, owner: str, hops: int) -> None:
    protos = _three_after_hellos()
    with pytest.raises(ProtocolError, match="out of turn"):
        protos["c"].on_message(
            env(sender, "c", "psi/points", CODEC.encode(Points(owner, hops, 0), _points(7))))


@pytest.mark.parametrize("n_parties", [2, 3])
def test_own_list_sent_back_with_no_scalar_is_refused(n_parties: int) -> None:
    """No peer ever forwards a batch with hops=0 (the owner applies the first scalar itself).
    Accepting "my own list, 0 hops" from the predecessor turns this party into an oracle
    that applies its secret scalar to points of the sender's choosing."""
    names = ["a", "b", "c"][:n_parties]
    protos = {n: PsiProtocol(n, names, _keys(n, 10), batch=BATCH) for n in names}
    exchange_hellos(protos)
    last = names[-1]  # its predecessor in the ring is names[-2]
    with pytest.raises(ProtocolError):
        protos[last].on_message(
            env(names[-2], last, "psi/points", CODEC.encode(Points(last, 0, 0), _points(7))))


# --------------------------------------------------------- asynchronous delivery order
@pytest.mark.parametrize("held,sets", [
    (("a", "b"), {"a": list(range(20)), "b": list(range(10, 30))}),
    (("b", "a"), {"a": list(range(20)), "b": list(range(10, 30))}),
    (("a", "c"), {"a": list(range(20)), "b": list(range(10, 30)), "c": list(range(5, 25))}),
    (("c", "b"), {"a": list(range(20)), "b": list(range(10, 30)), "c": list(range(5, 25))}),
    (("c", "b"), {"a": list(range(20)), "b": list(range(10, 30)), "c": []}),
], ids=["2p-a>b", "2p-b>a", "3p-a>c", "3p-c>b", "3p-c>b-empty"])
def test_a_slow_link_does_not_break_the_protocol(held: tuple[str, str], sets: dict) -> None:
    """Messages of one sender arrive in order, but nothing orders different senders (the
    session inbox is in arrival order): a peer's batch or the leader's result may arrive
    before a third party's hello. The protocol must still finish with the right answer."""
    prepared, protos = _protocols(sets)
    res = run_reordered(protos, held)
    truth = set.intersection(*(set(v) for v in sets.values()))
    for n in sets:
        assert res[n].size == len(truth)
        assert set(aligned(sets, prepared, res, n)) == truth


def test_every_owner_shuffles_with_a_csprng_permutation() -> None:
    """A list that travels in input order tells the next hop each point's row; the leader
    shuffled nothing before, and shuffles came from a 64-bit seed."""
    keys = _keys("x", 2000)
    for me in ("a", "b"):  # "a" leads
        perms = [PsiProtocol(me, ["a", "b"], keys).perm for _ in range(2)]
        for perm in perms:
            assert sorted(perm.tolist()) == list(range(2000))
            assert (perm != np.arange(2000)).mean() > 0.99
        assert (perms[0] != perms[1]).mean() > 0.99  # fresh per run
