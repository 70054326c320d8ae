"""KKRT OT-extension PSI: its parts (bit transposes, cuckoo hashing, base OTs) and the
sans-IO protocol in memory: results equal Python sets, and each side's view is what the
docs say (attacks written against the columns and the values)."""

from __future__ import annotations

import collections
import itertools
import os
from typing import Any

import numpy as np
import pytest

from fedlab_kit.errors import InputError, ProtocolError
from fedlab_kit.protocol import Envelope, LocalNetwork
from fedlab_kit.psi import cuckoo, kkrt
from fedlab_kit.psi.base_ot import OtReceiver, OtSender
from fedlab_kit.psi.bitmatrix import transpose
from fedlab_kit.psi.ids import prepare_ids
from fedlab_kit.psi.kkrt import KkrtProtocol, match_rows, sort_order
from fedlab_kit.psi.protocol import PsiProtocol, random_permutation
from fedlab_kit.psi.symmetric import Aes, bin_positions, code_words, derive, id_digests

RNG = np.random.default_rng(11)


def _run(a: list[Any], b: list[Any], **kwargs: Any) -> dict[str, Any]:
    pa, pb = prepare_ids(a), prepare_ids(b)
    protos = {"a": KkrtProtocol("a", ["a", "b"], pa[0], **kwargs),
              "b": KkrtProtocol("b", ["a", "b"], pb[0], **kwargs)}
    res = LocalNetwork(protos).run()
    out = {}
    for name, ids, (_, rows, _) in (("a", a, pa), ("b", b, pb)):
        r = res[name]
        out[name] = None if r.positions is None else [ids[rows[i]] for i in r.positions]
        out[name + "_size"] = r.size
    return out


# --------------------------------------------------------------------------- parts
@pytest.mark.parametrize("shape", [(8, 1), (16, 3), (512, 64), (40, 1), (8, 1500),
                                   (24_000, 2)])
@pytest.mark.parametrize("words", [1, 7, 1 << 15])
def test_transpose_is_the_bit_transpose(shape: tuple[int, int], words: int) -> None:
    bits = RNG.integers(0, 256, shape, dtype=np.uint8)
    keep = bits.copy()
    full = np.unpackbits(bits, axis=1, bitorder="little")
    want = np.packbits(full.T, axis=1, bitorder="little")
    got = transpose(bits, words)
    assert got.shape == want.shape and (got == want).all()
    assert (bits == keep).all()  # the input is left alone


@pytest.mark.parametrize("n", [0, 1, 2, 31, 1000, 50_000])
def test_cuckoo_puts_every_id_in_one_of_its_bins(n: int) -> None:
    bins = cuckoo.n_bins(n)
    positions = RNG.integers(0, bins, (n, 3))
    table, choice = cuckoo.place(positions, bins)
    held = table[table >= 0]
    assert sorted(held.tolist()) == list(range(n))  # every ID once
    occupied = np.flatnonzero(table >= 0)
    assert (positions[table[occupied], choice[table[occupied]]] == occupied).all()


def test_cuckoo_gives_up_when_no_placement_exists() -> None:
    positions = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 1]])  # three IDs, two bins
    with pytest.raises(cuckoo.CuckooFailed):
        cuckoo.place(positions, 8, rounds=50)


def test_base_ot_gives_the_chosen_seed_and_only_it() -> None:
    tag = os.urandom(32)
    choices = RNG.integers(0, 2, 512).astype(np.uint8)
    sender, receiver = OtSender(tag), OtReceiver(tag, choices)
    zero, one = sender.seeds(receiver.answer, 512)
    got = receiver.seeds(sender.first)
    assert got == [o if s else z for z, o, s in zip(zero, one, choices, strict=True)]
    other = {o if not s else z for z, o, s in zip(zero, one, choices, strict=True)}
    assert not other & set(got)
    assert len(set(zero) | set(one)) == 1024  # independent-looking seeds


def test_base_ot_answer_does_not_depend_on_the_choices() -> None:
    """The sender's view: the points for choices all 0 and all 1 look alike (each a
    uniform group element): their bytes are balanced either way."""
    tag = os.urandom(32)
    for bit in (0, 1):
        answer = OtReceiver(tag, np.full(512, bit, np.uint8)).answer
        bits = np.unpackbits(np.frombuffer(answer, np.uint8).reshape(512, 32)[:, :31])
        assert abs(bits.mean() - 0.5) < 0.01


def test_base_ot_refuses_points_off_the_group() -> None:
    tag = os.urandom(32)
    sender = OtSender(tag)
    with pytest.raises(ProtocolError, match="not a point"):
        sender.seeds(bytes(32 * 4), 4)
    with pytest.raises(ProtocolError, match="bytes of answer"):
        sender.seeds(bytes(31), 1)


def test_permutations_are_uniform_and_ties_still_give_permutations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counts = collections.Counter(tuple(random_permutation(3)) for _ in range(6000))
    assert len(counts) == 6 and all(800 < c < 1200 for c in counts.values())
    real = os.urandom
    # every first half equal: the second halves decide
    monkeypatch.setattr("fedlab_kit.psi.protocol.os.urandom", lambda n: b"".join(
        b"\x07" * 8 + real(8) for _ in range(n // 16)))
    perm = random_permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert (perm != np.arange(1000)).mean() > 0.9


def test_match_rows_finds_equal_rows_and_survives_shared_prefixes() -> None:
    a = RNG.integers(0, 256, (500, 11), dtype=np.uint8)
    b = np.concatenate([RNG.integers(0, 256, (700, 11), dtype=np.uint8), a[::7]])
    b[0, :8] = a[3, :8]  # same prefix, other tail: no match
    b = b[sort_order(b)]
    assert all(bytes(x) <= bytes(y) for x, y in itertools.pairwise(b))
    ia, ib = match_rows(a, b)
    assert sorted(ia.tolist()) == list(range(0, 500, 7))
    assert (a[ia] == b[ib]).all()
    b[5, :8] = b[6, :8]  # two rows of the sorted side share a prefix: the exact path
    b = b[sort_order(b)]
    ia2, _ = match_rows(a, b)
    assert sorted(ia2.tolist()) == sorted(ia.tolist())


def test_code_words_differ_by_hash_index_and_id() -> None:
    aes = Aes(derive(b"tag", "code"))
    d = id_digests([b"\x01a", b"\x01b"], b"tag")
    words = np.concatenate([code_words(aes, d, i) for i in range(3)])
    assert len({w.tobytes() for w in words}) == 6
    # distance between code words: about half the 512 bits, far above the 128 needed
    dist = np.unpackbits(words[0] ^ words[1]).sum()
    assert 180 < dist < 330


# ------------------------------------------------------------------------ protocol
CASES = {
    "ints": (list(range(0, 300)), list(range(150, 400))),
    "mixed types": ([1, "1", 2, "é", "東京"], ["1", 2, "東京", 7, "e"]),
    "no overlap": ([f"a{i}" for i in range(50)], [f"b{i}" for i in range(60)]),
    "full overlap": (list(range(40)), list(range(40))[::-1]),
    "one element": (["x"], ["x", "y"]),
    "one each, different": (["x"], ["y"]),
    "empty": ([], [1, 2, 3]),
}


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("leader", ["a", "b"])
def test_intersection_equals_python_sets(case: str, leader: str) -> None:
    a, b = CASES[case]
    out = _run(a, b, leader=leader)
    truth = set(a) & set(b)
    assert out["a"] is not None and out["b"] is not None
    assert len(out["a"]) == len(truth) and set(out["a"]) == truth
    assert out["a"] == out["b"]  # the same customers in the same order
    assert out["a_size"] == out["b_size"] == len(truth)


def test_result_kept_from_the_party_that_does_not_receive_it() -> None:
    out = _run(list(range(100)), list(range(50, 150)), receivers=["b"])
    assert out["a"] is None and out["a_size"] == -1
    assert set(out["b"]) == set(range(50, 100))


def test_sizes_across_several_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kkrt, "SLICE", 256)  # the protocol cuts the slices
    a = [f"id{i}" for i in range(3000)]
    b = [f"id{i}" for i in range(1000, 5000)]
    out = _run(a, b)
    assert set(out["a"]) == set(a) & set(b) and out["a"] == out["b"]


def test_a_failed_cuckoo_placement_draws_a_new_seed(monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    real, calls = cuckoo.place, []

    def flaky(positions: np.ndarray, bins: int, rounds: int = cuckoo.ROUNDS) -> Any:
        calls.append(positions.copy())
        if len(calls) == 1:
            raise cuckoo.CuckooFailed("forced")
        return real(positions, bins, rounds)

    monkeypatch.setattr(cuckoo, "place", flaky)
    out = _run(list(range(200)), list(range(100, 300)))
    assert len(calls) == 2 and not (calls[0] == calls[1]).all()  # another seed
    assert set(out["a"]) == set(range(100, 200))


def _views(a: list[Any], b: list[Any]) -> tuple[KkrtProtocol, KkrtProtocol,
                                                 list[Envelope]]:
    """Run a (receiver) against b (sender), keeping every message."""
    return _views_with(a, b)


def _views_with(a: list[Any], b: list[Any], **kwargs: Any
                ) -> tuple[KkrtProtocol, KkrtProtocol, list[Envelope]]:
    protos = {"a": KkrtProtocol("a", ["a", "b"], prepare_ids(a)[0], **kwargs),
              "b": KkrtProtocol("b", ["a", "b"], prepare_ids(b)[0], **kwargs)}
    net = LocalNetwork(protos)
    seen: list[Envelope] = []
    for _name, proto in protos.items():
        real = proto.on_message

        def keep(env: Envelope, real: Any = real) -> Any:
            seen.append(env)
            return real(env)

        proto.on_message = keep  # type: ignore[method-assign]
    net.run()
    return protos["a"], protos["b"], seen


def test_the_sender_cannot_tell_the_receivers_ids_from_the_columns() -> None:
    """Attack: the sender computes the code word of a guessed ID in each of its bins and
    checks how well the rows of the columns it received agree with it. Without the
    OT-extension masking (u = code words) every held ID agrees in all 512 bits; with it,
    held and not-held IDs agree in about half, alike."""
    held, other = [f"r{i}" for i in range(400)], [f"x{i}" for i in range(400)]
    _receiver, sender, seen = _views(held, ["s0"])
    cols = [e for e in seen if e.kind == "kkrt/columns"]
    u = np.concatenate([np.frombuffer(kkrt.CODEC.decode_with_data(e)[1], np.uint8)
                        .reshape(kkrt.WIDTH, -1) for e in cols], axis=1)
    rows = transpose(u)  # one 512-bit row per bin, as the sender can compute
    tag = sender.tag
    offer = next(e for e in seen if e.kind == "kkrt/offer")
    seed = kkrt.CODEC.decode(offer).seed

    def agreement(ids: list[str]) -> float:
        digests = id_digests(prepare_ids(ids)[0], tag)
        positions = bin_positions(Aes(seed), digests, sender._bins)
        best = []
        for i in range(3):  # the receiver used one of the three: take the best match
            words = code_words(Aes(derive(tag, "code")), digests, i)
            same = 1 - np.unpackbits(words ^ rows[positions[:, i]], axis=1).mean(axis=1)
            best.append(same)
        return float(np.max(best, axis=0).mean())

    held_score, other_score = agreement(held), agreement(other)
    assert abs(held_score - other_score) < 0.01
    assert held_score < 0.6  # a plain code word would agree in every bit (1.0)


def test_what_the_receiver_sends_is_uniform() -> None:
    """The columns for a highly structured set (consecutive integers, most bins empty with
    code word 0) pass a chi-square test on their bytes, and every column's bits are
    balanced: without the PRG masking, the zero code words of empty bins alone would skew
    them."""
    _, _, seen = _views(list(range(3000)), ["s0"])
    cols = [np.frombuffer(kkrt.CODEC.decode_with_data(e)[1], np.uint8)
            for e in seen if e.kind == "kkrt/columns"]
    u = np.concatenate(cols)
    counts = np.bincount(u, minlength=256)
    expected = len(u) / 256
    assert ((counts - expected) ** 2 / expected).sum() < 340  # 255 dof, p ~ 0.0003
    bits = np.unpackbits(u.reshape(kkrt.WIDTH, -1), axis=1).mean(axis=1)
    assert np.abs(bits - 0.5).max() < 0.04  # 3,848 bins per column: sigma 0.008


def test_the_receiver_sees_uniform_values_for_ids_it_does_not_hold() -> None:
    """What the sender sends for IDs outside the intersection is uniform: byte counts of
    the values pass a chi-square test, and none equals a value the receiver holds."""
    receiver, _sender, seen = _views([f"r{i}" for i in range(2000)],
                                    [f"s{i}" for i in range(2000)])
    env = next(e for e in seen if e.kind == "kkrt/values")
    values = np.frombuffer(kkrt.CODEC.decode_with_data(env)[1], np.uint8)
    counts = np.bincount(values, minlength=256)
    expected = len(values) / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 340  # 255 degrees of freedom: p ~ 0.0003
    assert receiver.result.size == 0


def _tampered(kind: str, change: Any) -> None:
    """Run 100 x 100 IDs with the receiver's ``kind`` messages changed by ``change``."""
    protos = {"a": KkrtProtocol("a", ["a", "b"], prepare_ids(list(range(100)))[0]),
              "b": KkrtProtocol("b", ["a", "b"], prepare_ids(list(range(50, 150)))[0])}
    real = protos["b"].on_message

    def tamper(env: Envelope) -> Any:
        if env.kind == kind:
            msg, data = kkrt.CODEC.decode_with_data(env)
            msg, data = change(msg, bytes(data))
            env = Envelope(env.sender, env.recipient, env.session, env.kind, env.seq,
                           kkrt.CODEC.encode(msg, data))
        return real(env)

    protos["b"].on_message = tamper  # type: ignore[method-assign]
    LocalNetwork(protos).run()


def test_the_sender_checks_what_it_is_asked_to_compute() -> None:
    with pytest.raises(ProtocolError, match="bins"):  # more work than the size calls for
        _tampered("kkrt/offer", lambda m, d: (kkrt.Offer(m.first, m.seed, m.bins * 4,
                                                         m.canary), d))
    with pytest.raises(ProtocolError, match="bytes; expected"):
        _tampered("kkrt/columns", lambda m, d: (m, d[:-8]))
    with pytest.raises(ProtocolError, match="out of place"):
        _tampered("kkrt/columns", lambda m, d: (kkrt.Columns(m.index + 5), d))
    with pytest.raises(ProtocolError, match="outside our values"):
        _tampered("kkrt/result", lambda m, d: (m, np.full(m.size, 10**6, ">i8").tobytes()))
    with pytest.raises(ProtocolError, match="one ID twice"):
        _tampered("kkrt/result", lambda m, d: (m, d[:8] * m.size))


def test_the_result_names_rows_not_the_hash_function() -> None:
    """The attack it rules out: told which *value* of its matched, the sender would learn
    which of the three functions placed each common ID, hence the bins those IDs fill, and
    could rule out candidates for the receiver's other IDs (a candidate whose three bins
    are all taken). The values go as one row of three per sender ID, and the result names
    rows only: every position is below the sender's set size, and a matched row's three
    values are its own ID's under functions 0, 1 and 2."""
    common = [f"c{i}" for i in range(300)]
    _, sender, seen = _views([*common, "alice@example"], common)
    values = next(e for e in seen if e.kind == "kkrt/values")
    msg, data = kkrt.CODEC.decode_with_data(values)
    assert msg.count == len(common) and len(data) == 3 * msg.count * msg.width
    result = next(e for e in seen if e.kind == "kkrt/result")
    rmsg, rdata = kkrt.CODEC.decode_with_data(result)
    rows = np.frombuffer(rdata, ">i8")
    assert rmsg.size == len(rows) == 300 and rows.max() < len(common)
    assert sorted(sender.result.positions.tolist()) == list(range(300))


def test_a_sender_that_is_not_a_receiver_is_not_told_the_count() -> None:
    _, _, seen = _views_with([f"x{i}" for i in range(100)], [f"x{i}" for i in range(50, 150)],
                             receivers=["a"])
    rmsg, rdata = kkrt.CODEC.decode_with_data(next(e for e in seen
                                                   if e.kind == "kkrt/result"))
    assert rmsg.size == -1 and not rmsg.revealed and not len(rdata)


def test_the_sender_checks_the_result_against_the_agreed_receivers() -> None:
    with pytest.raises(ProtocolError, match="not revealed to this party"):
        _tampered("kkrt/result", lambda m, d: (kkrt.Result(m.size, False), b""))
    with pytest.raises(ProtocolError, match="malformed result"):
        _tampered("kkrt/result", lambda m, d: (kkrt.Result(10**12, True), d))


def test_a_peer_may_not_announce_more_than_the_plan_says() -> None:
    keys = prepare_ids(list(range(10)))[0]
    r = KkrtProtocol("a", ["a", "b"], keys, peer_limit=10)
    s = KkrtProtocol("b", ["a", "b"], prepare_ids(list(range(11)))[0])
    hello = s.start()[0]
    with pytest.raises(ProtocolError, match="more than the 10"):
        r.on_message(Envelope("b", "a", "s", hello.kind, 0, bytes(hello.payload)))


def test_messages_after_the_end_are_refused() -> None:
    a = KkrtProtocol("a", ["a", "b"], [])  # an empty set: done after the hellos
    b = KkrtProtocol("b", ["a", "b"], prepare_ids([1])[0])
    hello = b.start()[0]
    a.on_message(Envelope("b", "a", "s", hello.kind, 0, bytes(hello.payload)))
    assert a.done
    with pytest.raises(ProtocolError, match="after the run ended"):
        a.on_message(Envelope("b", "a", "s", hello.kind, 1, bytes(hello.payload)))


def test_prg_segments_must_start_on_a_block() -> None:
    from fedlab_kit.errors import InternalError
    from fedlab_kit.psi.symmetric import prg

    seed = os.urandom(16)
    assert (prg(seed, 32, 16)[:16] == prg(seed, 48)[16:32]).all()  # disjoint, in order
    with pytest.raises(InternalError, match="whole number"):
        prg(seed, 16, 8)


def test_parties_that_digest_ids_differently_are_told_so() -> None:
    """A receiver whose ID digests differ (another pandas hashing, say) would find an empty
    intersection without a word: the sender compares the canary and refuses."""
    with pytest.raises(ProtocolError, match="digests IDs differently"):
        _tampered("kkrt/offer", lambda m, d: (kkrt.Offer(m.first, m.seed, m.bins,
                                                         bytes(16)), d))


def test_ecdh_and_kkrt_peers_get_a_clear_error() -> None:
    keys = prepare_ids([1, 2, 3])[0]
    k, e = KkrtProtocol("a", ["a", "b"], keys), PsiProtocol("b", ["a", "b"], keys)
    hello_e, hello_k = e.start()[0], k.start()[0]
    with pytest.raises(ProtocolError, match="same protocol"):
        k.on_message(Envelope("b", "a", "s", hello_e.kind, 0, bytes(hello_e.payload)))
    with pytest.raises(ProtocolError, match="same protocol"):
        e.on_message(Envelope("a", "b", "s", hello_k.kind, 0, bytes(hello_k.payload)))


def test_what_kkrt_cannot_do_is_refused_up_front() -> None:
    keys = prepare_ids([1])[0]
    with pytest.raises(InputError, match="two parties"):
        KkrtProtocol("a", ["a", "b", "c"], keys)
    with pytest.raises(InputError, match="cardinality"):
        KkrtProtocol("a", ["a", "b"], keys, reveal="cardinality")
