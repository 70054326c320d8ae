"""Vertical logistic regression, written as the attacks its privacy claims rule out.

- The key owner (who decrypts an evaluator's inner products) recomputes the evaluator's work
  under two hypotheses about the evaluator's columns and compares noise: it wins without
  the flooding and is at chance with it (circuit privacy).
- Every coefficient the key owner decrypts is uniform, whatever the evaluator's columns.
- The noise budget before flooding leaves the 2^-40 statistical distance at the worst-case
  values and rows.
- With three parties, one party's masked messages are uniform to their recipient while
  the sums are exact.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import tenseal.sealapi as seal
from scipy import stats

from fedlab_kit.errors import ProtocolError
from fedlab_kit.he.bfv import INNER
from fedlab_kit.he.inner import (
    InnerEvaluator,
    InnerKey,
    Layout,
    N,
    T,
    _coefficients_plaintext,
    load_ciphertexts,
    pack_columns,
)
from fedlab_kit.he.serial import to_bytes
from fedlab_kit.linear.backend import Crypto, segments
from fedlab_kit.linear.fixed import (
    C_BOUND,
    MAX_ROWS,
    X_BOUND,
    centered,
    decode_scalar_sum,
    encode_scalars,
    zero_sum_mask,
    zero_sum_scalars,
)


def _all_coefficients(key: InnerKey, ct: seal.Ciphertext) -> np.ndarray:
    pt = seal.Plaintext()
    key._decryptor.decrypt(ct, pt)
    count = pt.coeff_count()
    return np.array([pt.data(j) if j < count else 0 for j in range(N)], dtype=np.uint64)


def _mask_and_rerandomise_only(self: InnerEvaluator, acc: seal.Ciphertext
                               ) -> tuple[bytes, np.ndarray]:
    """The control: the mask and a fresh encryption of zero, no flooding, no prime
    dropped (re-randomisation as in the old CKKS code)."""
    mask = np.frombuffer(np.random.default_rng().bytes(8 * N), np.uint64) & np.uint64(T - 1)
    self._evaluator.add_plain_inplace(acc, _coefficients_plaintext(mask.astype(np.int64)))
    zero = seal.Ciphertext()
    self._encryptor.encrypt_zero(acc.parms_id(), zero)
    self._evaluator.add_inplace(acc, zero)
    return to_bytes(acc), mask


def _attack_wins(flooded: bool, trials: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Trials in which the key owner tells which of two column matrices (two rows
    swapped) the evaluator used."""
    if not flooded:
        monkeypatch.setattr(InnerEvaluator, "release", _mask_and_rerandomise_only)
    rng = np.random.default_rng(5)
    layout = Layout.for_columns(3)
    key = InnerKey()
    attacker = InnerEvaluator(key.public_bytes())
    wins = 0
    for _ in range(trials):
        rows = 2 * layout.block
        c = rng.integers(-C_BOUND, C_BOUND, rows)
        X = rng.integers(-X_BOUND, X_BOUND, (rows, 3))
        alt = X.copy()
        alt[[0, layout.block]] = alt[[layout.block, 0]]  # two persons' rows swapped
        truth = int(rng.integers(0, 2))
        hypotheses = [X, alt] if truth == 0 else [alt, X]
        data = key.encrypt(c, layout)
        evaluator = InnerEvaluator(key.public_bytes())

        def row(M: np.ndarray, ev: InnerEvaluator) -> list:
            return [ev.plaintext(pack_columns(M[b * layout.block:(b + 1) * layout.block],
                                              layout)) for b in range(2)]

        ntt = evaluator.ntt(load_ciphertexts(data, 2))
        released, _ = evaluator.release(evaluator.accumulate(ntt, row(X, evaluator)))
        result = load_ciphertexts(msgspec.msgpack.encode([released]))[0]
        decrypted = _all_coefficients(key, result)
        scores = []
        for M in hypotheses:  # recompute, match the plaintext, compare the noise
            guess = attacker.accumulate(attacker.ntt(load_ciphertexts(data, 2)),
                                        row(M, attacker))
            delta = (decrypted.astype(np.int64) - _all_coefficients(key, guess).astype(
                np.int64)) % T
            attacker._evaluator.add_plain_inplace(guess, _coefficients_plaintext(delta))
            if list(guess.parms_id()) != list(result.parms_id()):
                attacker._evaluator.mod_switch_to_next_inplace(guess)
            diff = seal.Ciphertext()
            attacker._evaluator.sub(result, guess, diff)
            scores.append(key.noise_budget(diff))
        pick = int(rng.integers(0, 2)) if scores[0] == scores[1] else int(np.argmax(scores))
        wins += pick == truth
    return wins


def test_without_flooding_the_key_owner_tells_the_evaluators_rows(monkeypatch) -> None:
    assert _attack_wins(False, 10, monkeypatch) == 10


def test_with_flooding_the_key_owner_is_at_chance(monkeypatch) -> None:
    wins = _attack_wins(True, 24, monkeypatch)
    assert 4 <= wins <= 20  # chance: 12 expected; the control above wins every time


def test_every_decrypted_coefficient_is_uniform_whatever_the_columns() -> None:
    """Cross terms of the evaluator's columns with the contribution would give the key
    owner the columns (it knows the contribution): the mask makes every coefficient
    uniform mod 2^52, for an all-zero matrix and a structured one alike."""
    layout = Layout.for_columns(4)
    key, rng = InnerKey(), np.random.default_rng(2)
    c = rng.integers(-C_BOUND, C_BOUND, layout.block)
    for X in (np.eye(layout.block, 4, dtype=np.int64),
              np.tile(np.arange(layout.block)[:, None], (1, 4)) * 7):
        ev = InnerEvaluator(key.public_bytes())
        data, _ = ev.products(load_ciphertexts(key.encrypt(c, layout), 1),
                              [[ev.plaintext(pack_columns(X, layout))]])
        coeffs = _all_coefficients(key, load_ciphertexts(data, 1)[0])
        top = (coeffs >> np.uint64(INNER.plain_bits - 4)).astype(int)  # 16 bins
        assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4


def test_budget_before_flooding_gives_2_to_minus_40_at_the_worst_case() -> None:
    """The largest values and the most rows one product sums: still exact, and the noise
    budget before flooding is at least log2 N + 42 bits (statistical distance <= 2^-40)."""
    layout = Layout.for_columns(1)  # the longest blocks: the most rows per ciphertext
    rows = MAX_ROWS
    key = InnerKey()
    ev = InnerEvaluator(key.public_bytes())
    c = np.full(rows, C_BOUND, dtype=np.int64)
    X = np.full((rows, 1), X_BOUND, dtype=np.int64)
    ntt = ev.ntt(load_ciphertexts(key.encrypt(c, layout), layout.blocks(rows), fresh=True))
    plains = [ev.plaintext(pack_columns(X[b * layout.block:(b + 1) * layout.block], layout))
              for b in range(layout.blocks(rows))]
    acc = ev.accumulate(ntt, plains)
    budget = key.noise_budget(acc)
    assert budget >= INNER.poly_degree.bit_length() + 41
    assert INNER.distance_log2(budget) <= -40
    data, mask = ev.release(acc)
    got = key.decrypt(msgspec.msgpack.encode([data]), layout, 1)[0]
    total = centered((got - mask[layout.targets()]) % np.uint64(T))
    assert int(total[0]) == rows * C_BOUND * X_BOUND < T // 2
    assert len(segments(rows + 1, layout)) == 2  # one row more: a second segment


def test_a_peers_ciphertexts_below_the_first_level_are_refused() -> None:
    """A contribution mod-switched down would leave the flooding less room than its bound
    assumes: the evaluator refuses it."""
    layout = Layout.for_columns(2)
    key = InnerKey()
    ev = InnerEvaluator(key.public_bytes())
    cts = load_ciphertexts(key.encrypt(np.ones(10, np.int64), layout), 1)
    ev._evaluator.mod_switch_to_next_inplace(cts[0])
    lowered = msgspec.msgpack.encode([to_bytes(cts[0])])
    crypto = Crypto()
    crypto.add_peer("retailer", key.public_bytes())
    with pytest.raises(ProtocolError, match="first level"):
        crypto.products("retailer", memoryview(lowered), np.ones((10, 2), np.int64), layout)


def test_zero_sum_masks_hide_one_share_and_cancel_in_the_sum() -> None:
    seeds = {("a", "b"): b"1" * 32, ("a", "c"): b"2" * 32, ("b", "c"): b"3" * 32}

    def of(me: str) -> dict[str, bytes]:
        return {q: s for (x, y), s in seeds.items() for q in (x, y) if me in (x, y) and q != me}

    members = ["a", "b", "c"]
    masks = {p: zero_sum_mask(p, members, of(p), b"t", 4000, 52) for p in members}
    assert not np.any((masks["a"] + masks["b"] + masks["c"]) & np.uint64(T - 1))
    values = np.arange(4000, dtype=np.uint64)  # one party's structured share
    shown = (values + masks["b"]) & np.uint64(T - 1)
    top = (shown >> np.uint64(48)).astype(int)
    assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4
    parts = [encode_scalars([1.5, -2.25e-9], zero_sum_scalars(p, members, of(p), b"s", 2))
             for p in members]
    assert decode_scalar_sum(parts, 2) == pytest.approx([4.5, -6.75e-9], rel=1e-12)
    assert int.from_bytes(parts[1][0], "little") > 2 ** 100  # one share alone is noise
