"""Secure aggregation in memory: exact sums, what the aggregator sees, dropouts, refusals."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from fedlab_kit.errors import ProtocolError
from fedlab_kit.horizontal import HorizontalError, SecAgg, SecureSum
from fedlab_kit.horizontal import masks as masks_mod
from fedlab_kit.horizontal import messages as m
from fedlab_kit.horizontal import secagg as secagg_mod
from fedlab_kit.horizontal.shamir import combine, split
from fedlab_kit.protocol import Envelope, LocalNetwork, Protocol

NAMES = ["a", "b", "c", "d", "e"]


class Dropout(Protocol):
    """A member whose process dies after it has sent ``after`` messages."""

    def __init__(self, inner: Protocol, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.sent = inner, after, 0

    def _cut(self, actions: list[Any]) -> list[Any]:
        out = actions[:max(0, self.after - self.sent)]
        self.sent += len(out)
        self.done = self.sent >= self.after
        return out

    def start(self) -> list[Any]:
        return self._cut(self.inner.start())

    def on_message(self, env: Envelope) -> list[Any]:
        return [] if self.done else self._cut(self.inner.on_message(env))


class Recorder(Protocol):
    """Passes everything through and keeps what the party received."""

    def __init__(self, inner: Protocol) -> None:
        super().__init__()
        self.inner, self.received = inner, []
        self.gone = inner.gone

    def start(self) -> list[Any]:
        return self.inner.start()

    def on_message(self, env: Envelope) -> list[Any]:
        self.received.append(env)
        out = self.inner.on_message(env)
        self.done, self.result = self.inner.done, self.inner.result
        return out

    def on_timeout(self) -> list[Any] | None:
        out = self.inner.on_timeout()
        self.done, self.result = self.inner.done, self.inner.result
        return out


def _vectors(names: list[str], rounds: int = 2, size: int = 7, seed: int = 0
             ) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {n: [rng.integers(-1000, 1000, size).astype(float) for _ in range(rounds)]
            for n in names}


def _protocols(names: list[str], vecs: dict[str, list[np.ndarray]], **kw: Any
               ) -> dict[str, Protocol]:
    run = os.urandom(16)
    return {n: SecureSum(n, names, names[0], vecs[n], run=run, **kw) for n in names}


def _sum(vecs: dict[str, list[np.ndarray]], who: list[str], r: int) -> np.ndarray:
    return np.sum([vecs[n][r] for n in who], axis=0)


def test_shamir_any_threshold_shares_rebuild_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    shares = split(secret, 3, [1, 2, 3, 4, 5])
    assert combine({x: shares[x] for x in (5, 2, 4)}, 3) == secret
    assert combine({x: shares[x] for x in (1, 3, 4)}, 3) == secret
    with pytest.raises(Exception, match="3 needed"):
        combine({1: shares[1], 2: shares[2]}, 3)
    # two shares of a threshold-3 split fit every secret: a wrong third share gives another
    other = split(os.urandom(32), 3, [1, 2, 3, 4, 5])
    with pytest.raises(Exception):  # noqa: B017 - either "do not fit" or a different secret
        assert combine({1: shares[1], 2: shares[2], 3: other[3]}, 3) == secret


@pytest.mark.parametrize("n", [3, 4, 5])
def test_the_sum_is_exact_and_every_member_gets_it(n: int) -> None:
    names = NAMES[:n]
    vecs = _vectors(names)
    res = LocalNetwork(_protocols(names, vecs)).run()
    for r in range(2):
        want = _sum(vecs, names, r)
        for name in names:
            np.testing.assert_array_equal(res[name].totals[r], want)  # integers: exact
            assert res[name].included[r] == names


def test_fractions_and_negative_values_decode_to_the_fixed_point_resolution() -> None:
    rng = np.random.default_rng(3)
    vecs = {n: [rng.normal(0, 1e4, 50)] for n in NAMES}
    res = LocalNetwork(_protocols(NAMES, vecs)).run()
    np.testing.assert_allclose(res["c"].totals[0], _sum(vecs, NAMES, 0), atol=5 * 2.0 ** -24)


def _aggregator_guesses(n_trials: int) -> float:
    """The aggregator's best guess of b's vector (0 or a large known one) from b's masked
    input: the closer encoding. Returns the share of right guesses."""
    big = np.full(4, 2.0 ** 30)
    right = 0
    rng = np.random.default_rng(11)
    for _ in range(n_trials):
        secret = int(rng.integers(2))
        vecs = {n: [np.zeros(4)] for n in NAMES[:3]}
        vecs["b"] = [big if secret else np.zeros(4)]
        protos = _protocols(NAMES[:3], vecs)
        protos["a"] = rec = Recorder(protos["a"])
        LocalNetwork(protos).run()
        (env,) = [e for e in rec.received if e.sender == "b" and e.kind == "secagg/input"]
        seen = np.frombuffer(m.CODEC.decode_with_data(env)[1], dtype="<u8").view(np.int64)
        guess = int(np.abs(seen.astype(float) - 2.0 ** 54).mean()
                    < np.abs(seen.astype(float)).mean())
        right += guess == secret
    return right / n_trials


def test_the_aggregator_cannot_tell_a_members_vector_from_its_input() -> None:
    assert abs(_aggregator_guesses(200) - 0.5) < 0.12  # 200 fair coins: |p - 0.5| < 0.12


def test_without_masks_the_same_guess_always_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the guess above is a real attack (it wins when the masks are zero)."""
    monkeypatch.setattr(secagg_mod, "prg", lambda seed, n: np.zeros(n, dtype=np.uint64))
    assert _aggregator_guesses(40) == 1.0


def test_a_masked_input_is_uniform() -> None:
    vecs = {n: [np.zeros(4000)] for n in NAMES[:3]}
    protos = _protocols(NAMES[:3], vecs)
    protos["a"] = rec = Recorder(protos["a"])
    LocalNetwork(protos).run()
    (env,) = [e for e in rec.received if e.sender == "c" and e.kind == "secagg/input"]
    seen = np.frombuffer(m.CODEC.decode_with_data(env)[1], dtype="<u8")
    for shift in (0, 28, 56):  # low, middle and top byte of each value
        counts = np.bincount(((seen >> np.uint64(shift)) & np.uint64(255)).astype(int),
                             minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize(("after", "where"), [(4, "dropped"), (5, "silent")])
def test_a_member_dying_mid_round_does_not_spoil_it(after: int, where: str) -> None:
    """``e`` sends its 4 hellos and dies (dropped: its masks with the others are rebuilt from
    shares of its key), or dies after its first input too (silent: in round 0's sum, its
    self mask rebuilt from shares of its seed); it is out of the later rounds."""
    vecs = _vectors(NAMES, rounds=3)
    protos = _protocols(NAMES, vecs)
    protos["e"] = Dropout(protos["e"], after)
    res = LocalNetwork(protos).run()
    first = NAMES if where == "silent" else NAMES[:4]
    assert res["a"].included == [first, NAMES[:4], NAMES[:4]]
    for name in NAMES[:4]:
        for r, who in enumerate(res[name].included):
            np.testing.assert_array_equal(res[name].totals[r], _sum(vecs, who, r))


def test_a_second_member_dying_while_the_first_is_recovered() -> None:
    """d dies after its input (silent) while e had died before its input (dropped): with
    five members and a threshold of three, a, b and c still rebuild everything."""
    vecs = _vectors(NAMES, rounds=2)
    protos = _protocols(NAMES, vecs)
    protos["e"] = Dropout(protos["e"], 4)
    protos["d"] = Dropout(protos["d"], 5)
    res = LocalNetwork(protos).run()
    assert res["a"].included == [NAMES[:4], NAMES[:3]]
    np.testing.assert_array_equal(res["b"].totals[0], _sum(vecs, NAMES[:4], 0))
    np.testing.assert_array_equal(res["b"].totals[1], _sum(vecs, NAMES[:3], 1))


def test_two_parties_are_refused() -> None:
    with pytest.raises(HorizontalError, match=r"at least 3 parties.*tells each of them"):
        SecureSum("a", ["a", "b"], "a", [np.zeros(3)], run=b"r")


def test_three_parties_cannot_lose_one() -> None:
    vecs = _vectors(NAMES[:3])
    protos = _protocols(NAMES[:3], vecs)
    protos["c"] = Dropout(protos["c"], 2)
    with pytest.raises(HorizontalError, match=r"only \['a', 'b'\] sent.*fewer than 3"):
        LocalNetwork(protos).run()


def _member_after_round(names: list[str]) -> tuple[SecAgg, bytes]:
    """Member b of ``names`` (aggregator a), set up and with round 0 submitted."""
    run = os.urandom(16)
    engines = {n: SecAgg(n, names, "a", run) for n in names}
    hellos = {n: e.start() for n, e in engines.items()}
    for sender, sends in hellos.items():
        for s in sends:
            if s.to == "b":
                engines["b"].on_message(Envelope(sender, "b", "s", s.kind, 0, bytes(s.payload)))
    engines["b"].submit(0, np.zeros(3, dtype=np.uint64))
    return engines["b"], run


def _from_a(engine: SecAgg, msg: Any) -> list[Any]:
    return engine.on_message(Envelope("a", "b", "s", m.CODEC.kind(msg), 0, m.CODEC.encode(msg)))


def test_a_member_refuses_a_sum_over_too_few_parties() -> None:
    """An aggregator claiming the others dropped would learn b's vector (a sum of a and b)."""
    b, _ = _member_after_round(NAMES[:4])
    with pytest.raises(ProtocolError, match="only 2 parties"):
        _from_a(b, m.Unmask(0, ["a", "b"], ["c", "d"]))


def test_a_member_never_gives_both_kinds_of_shares_of_one_peer() -> None:
    """Asked for shares of c's mask key (c dropped) and then of c's self-mask seed, b
    refuses: with both, the aggregator could unmask a late input from c."""
    b, _ = _member_after_round(NAMES)
    (reveal,) = _from_a(b, m.Unmask(0, ["a", "b", "d", "e"], ["c"]))
    assert "c" in m.CODEC.decode(Envelope("b", "a", "s", reveal.kind, 0,
                                          bytes(reveal.payload))).key_shares
    with pytest.raises(ProtocolError, match="not among the round's others"):
        _from_a(b, m.Recover(0, ["c"]))
    b, _ = _member_after_round(NAMES)
    _from_a(b, m.Unmask(0, NAMES, []))
    _from_a(b, m.Recover(0, ["c"]))
    b._given["c"] = "seed"
    with pytest.raises(ProtocolError, match="both would unmask"):
        b._give("c", "key")


def test_a_late_input_of_a_dropped_member_stays_masked() -> None:
    """e's input arrives after the aggregator declared e dropped and rebuilt e's mask key:
    removing every pairwise mask still leaves e's self mask (uniform, not e's vector)."""
    vecs = {n: [np.full(6, 123.0)] for n in NAMES}
    protos = _protocols(NAMES, vecs)
    held: list[Any] = []

    class Late(Dropout):  # counts as finished: its run never ends here
        def _cut(self, actions: list[Any]) -> list[Any]:
            held.extend(a for a in actions if a.kind == "secagg/input")
            self.done = True
            return [a for a in actions if a.kind != "secagg/input"]

        def on_message(self, env: Envelope) -> list[Any]:
            try:
                return self._cut(self.inner.on_message(env))
            except HorizontalError as exc:
                told.append(str(exc))
                return []

    told: list[str] = []
    protos["e"] = Late(protos["e"], 10 ** 6)
    res = LocalNetwork(protos).run()
    assert res["a"].included[0] == NAMES[:4]
    assert told and "went on without this party in round 0" in told[0]
    agg: SecAgg = protos["a"].agg
    rnd = agg._rounds[0]
    key = agg._rebuild({h: bytes(v.key_shares["e"]) for h, v in rnd.reveals.items()})
    priv = X25519PrivateKey.from_private_bytes(key)
    seen = np.frombuffer(m.CODEC.decode_with_data(Envelope(
        "e", "a", "s", held[0].kind, 0, bytes(held[0].payload)))[1], dtype="<u8").copy()
    for peer in NAMES[:4]:
        mask = masks_mod.prg(masks_mod.derive(agg._pair_seed(priv, agg.public[peer], "e",
                                                             peer), 0), 6)
        seen = seen + mask if peer < "e" else seen - mask  # e subtracted masks with smaller
    want = masks_mod.encode(vecs["e"][0], 24, 2.0 ** 32, "e")
    assert not np.array_equal(seen, want)
    # the control: with e's self-mask seed (which only e holds) the input would open
    e_engine: SecAgg = protos["e"].inner.agg
    opened = seen - masks_mod.prg(masks_mod.derive(e_engine._seed, "self", 0), 6)
    np.testing.assert_array_equal(opened, want)


def test_values_beyond_the_bound_and_wrapping_settings_are_errors() -> None:
    with pytest.raises(HorizontalError, match="beyond"):
        SecureSum("a", NAMES[:3], "a", [np.array([1.0, np.inf])], run=b"r")
    with pytest.raises(HorizontalError, match="does not fit in 63 bits"):
        SecureSum("a", NAMES[:3], "a", [np.zeros(2)], run=b"r", bits=40, bound=2.0 ** 30)
    with pytest.raises(HorizontalError, match="same length"):
        SecureSum("a", NAMES[:3], "a", [np.zeros(2), np.zeros(3)], run=b"r")


def test_members_with_different_settings_stop_with_a_clear_error() -> None:
    vecs = _vectors(NAMES[:3])
    protos = _protocols(NAMES[:3], vecs)
    protos["c"] = SecureSum("c", NAMES[:3], "b", vecs["c"], run=b"x" * 16)
    with pytest.raises(Exception, match="start every party with the same settings"):
        LocalNetwork(protos).run()


def test_vectors_of_different_lengths_at_members_are_an_error() -> None:
    vecs = _vectors(NAMES[:3])
    vecs["b"] = [np.zeros(3), np.zeros(3)]
    with pytest.raises(HorizontalError, match="differ in length"):
        LocalNetwork(_protocols(NAMES[:3], vecs)).run()
