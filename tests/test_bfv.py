"""Exact joint counts under BFV: circuit privacy by flooding and self-destructing inputs,
each tested as the attack it rules out (issue 12, sections 1 and 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as seal
from he_attacks import picks_truth, rerandomise_only

from fedlab_kit.analytics import encrypted_counts as E
from fedlab_kit.dp import PrivacyLedger
from fedlab_kit.dp.mechanisms import release_noise
from fedlab_kit.he import RowLayout, bfv
from fedlab_kit.he.bfv import SLOTS, BfvPublic, BfvSecret
from fedlab_kit.protocol import LocalNetwork

WIDTH = 16


@pytest.fixture(scope="module")
def keys() -> tuple[BfvSecret, BfvPublic]:
    secret = BfvSecret(WIDTH)
    return secret, BfvPublic.from_bytes(secret.to_bytes())


def _encrypt(secret: BfvSecret, public: BfvPublic, layout: RowLayout, x: np.ndarray
             ) -> list[seal.Ciphertext]:
    rows = np.repeat(np.asarray(x, np.int64)[:, None], layout.width, axis=1)
    return public.load(secret.encrypt_dump(layout.place(rows)))


def test_flooding_keeps_counts_exact_within_the_stated_bound(
        keys: tuple[BfvSecret, BfvPublic]) -> None:
    secret, public = keys
    q = 1
    for p in bfv.level_primes():
        q *= p
    assert 2 ** bfv.flood_bits() <= q // (8 * public.t) < 2 ** (bfv.flood_bits() + 1)
    ct = public.encrypt(np.arange(SLOTS) % 7 - 3)
    before = public.dump([ct])
    public.flood(ct)
    assert public.dump([ct]) != before
    assert np.array_equal(secret.decrypt(ct), np.arange(SLOTS) % 7 - 3)
    assert secret.noise_budget(ct) <= 4  # the flooding did fill the room it says it fills


def test_longest_chain_leaves_the_flooding_margin(keys: tuple[BfvSecret, BfvPublic],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Two multipliers and the grouper (the most a chain may hold): the evaluator's noise
    before flooding leaves the flooding room enough that the statistical distance
    N |v| / 2^(b+1) is at most 2^-40."""
    secret, public = keys
    layout = RowLayout(3000, WIDTH, slots=SLOTS)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, layout.n_rows)
    cts = _encrypt(secret, public, layout, x)
    check = bfv.zero_one_check(public, cts)
    for _ in range(E.MAX_CHAIN - 1):
        masks = layout.place(rng.integers(0, 2, (layout.n_rows, WIDTH)))
        cts = [public.multiply(ct, m) for ct, m in zip(cts, masks, strict=True)]
    budgets: list[int] = []
    flood = BfvPublic.flood

    def measured(self: BfvPublic, ct: seal.Ciphertext) -> None:
        budgets.append(secret.noise_budget(ct))
        flood(self, ct)

    monkeypatch.setattr(BfvPublic, "flood", measured)
    groups = rng.integers(0, 3, layout.n_rows)
    masks = [(np.repeat(np.flatnonzero(groups == g), WIDTH),
              np.tile(np.arange(WIDTH), int((groups == g).sum()))) for g in range(3)]
    out = E.grouped_counts(public, cts, check, layout, masks, np.zeros((3, WIDTH), np.int64))
    assert len(budgets) == 3
    # SEAL's budget b means |v| < q / (2 t 2^b); the flooding is >= q / (16 t)
    print("noise budget before flooding:", budgets)
    log2_distance = bfv.COUNTS.distance_log2(min(budgets))
    assert log2_distance <= -60, budgets
    assert all(secret.decrypt(ct)[:WIDTH].sum() >= 0 for ct in out)


def _swap_trial(secret: BfvSecret, public: BfvPublic, rng: np.random.Generator) -> bool:
    """One round of the residual distinguisher: two persons (both counted) swap cells; the
    key holder, which knows its ciphertexts and keys, recomputes the evaluator's
    deterministic steps under both assignments and picks the one whose difference with
    the returned result has the least noise. True when it picks the truth."""
    layout = RowLayout(SLOTS // WIDTH, WIDTH, slots=SLOTS)
    x = rng.integers(0, 2, layout.n_rows)
    a, b = 3, 7
    x[[a, b]] = 1
    cells = rng.integers(0, 2, layout.n_rows)
    hyps = []
    for swap in (False, True):
        c = cells.copy()
        c[a], c[b] = (0, 1) if not swap else (1, 0)
        hyps.append([(np.flatnonzero(c == g), np.full(int((c == g).sum()), g)) for g in (0, 1)])
    truth = int(rng.integers(0, 2))
    blob = secret.encrypt_dump(layout.place(np.repeat(x[:, None], WIDTH, axis=1)))
    items = public.load(blob)
    check = bfv.zero_one_check(public, public.load(blob))
    (result, _) = E.grouped_counts(public, items, check, layout, hyps[truth],
                                   np.zeros((2, WIDTH), np.int64))
    guesses = []
    for h in hyps:
        mine = public.load(blob)
        for ct in mine:
            public.evaluator.transform_to_ntt_inplace(ct)
        guesses.append(E.masked_count(public, mine, layout, h[0]))
    return picks_truth(secret, result, guesses, truth, rng)


def test_residual_distinguisher_wins_without_flooding(
        keys: tuple[BfvSecret, BfvPublic], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with only a fresh encryption of zero (the old re-randomisation) and no
    input check term, the attack works, so the test below can fail."""
    secret, public = keys
    monkeypatch.setattr(BfvPublic, "flood", rerandomise_only)
    monkeypatch.setattr(BfvPublic, "self_destruct", lambda self, ct, check: None)
    rng = np.random.default_rng(1)
    wins = sum(_swap_trial(secret, public, rng) for _ in range(20))
    assert wins >= 18


@pytest.mark.parametrize("with_check", [False, True])
def test_residual_distinguisher_is_at_chance(keys: tuple[BfvSecret, BfvPublic],
                                             monkeypatch: pytest.MonkeyPatch,
                                             with_check: bool) -> None:
    """Flooding alone (and with the input check term) leaves the key holder at chance."""
    secret, public = keys
    if not with_check:
        monkeypatch.setattr(BfvPublic, "self_destruct", lambda self, ct, check: None)
    rng = np.random.default_rng(2 + with_check)
    trials = 40
    wins = sum(_swap_trial(secret, public, rng) for _ in range(trials))
    assert 0.4 * trials <= wins <= 0.6 * trials, wins


def _tag_attack(tmp_path: Path, n_targets: int = 12) -> tuple[int, np.ndarray, np.ndarray]:
    """A key holder that encrypts 2^(10+j) for target j instead of its 0/1 flag reads each
    target's cell from the bits of the released counts (DP noise at epsilon 1 is far below
    2^9). Chain: a multiplier (all ones), then the grouper with one cell per slot."""
    rng = np.random.default_rng(9)
    n, n_cells = 800, WIDTH
    cells = rng.integers(0, n_cells, n)
    flags = rng.integers(0, 2, n).astype(float)
    targets = rng.choice(n, n_targets, replace=False)
    tagged = flags.copy()
    tagged[targets] = 2.0 ** (10 + np.arange(n_targets))
    masks = [(np.arange(n), cells)]
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=5, party="g")

    def noise() -> tuple[np.ndarray, dict[str, Any]]:
        rel = release_noise(ledger, "crowd", (1, n_cells), 1.0, sensitivity=1)
        return rel.values, {}

    holder = E.KeyHolder(flags, ["m", "g"])
    holder.values = tagged[:, None]  # skips its own 0/1 check, as a cheating key holder does
    protos = {"k": holder,
              "m": E.Multiplier("k", n, "g", lambda w: np.ones((n, w), bool)),
              "g": E.Grouper("k", n, n_cells, masks, noise)}
    counts = LocalNetwork(protos).run()["k"].sums[0]
    bits = (counts.astype(np.int64) + 512) >> 10
    found = 0
    for j, t in enumerate(targets):
        hit = np.flatnonzero((bits >> j) & 1)
        found += int(len(hit) == 1 and hit[0] == cells[t])
    truth = np.bincount(cells, weights=flags, minlength=n_cells)
    return found, counts, truth


def test_tag_attack_works_without_the_input_check(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BfvPublic, "self_destruct", lambda self, ct, check: None)
    found, _, _ = _tag_attack(tmp_path)
    assert found == 12


def test_tag_attack_recovers_no_target(tmp_path: Path) -> None:
    found, counts, truth = _tag_attack(tmp_path)
    assert found == 0
    # the whole release is noise: no cell is anywhere near its count
    assert (np.abs(counts - truth) > 10_000).mean() > 0.9


def test_input_check_flags_only_invalid_classes(keys: tuple[BfvSecret, BfvPublic]) -> None:
    secret, public = keys
    layout = RowLayout(2 * SLOTS // WIDTH, WIDTH, slots=SLOTS)
    x = np.random.default_rng(4).integers(0, 2, (layout.n_rows, WIDTH))
    assert not secret.decrypt(bfv.zero_one_check(
        public, public.load(secret.encrypt_dump(layout.place(x))))).any()
    x[1500, 5] = 2  # second ciphertext, slot class 5
    x[10, 9] = -1
    got = secret.decrypt(bfv.zero_one_check(public, public.load(secret.encrypt_dump(
        layout.place(x)))))
    assert set(np.unique(np.flatnonzero(got) % WIDTH)) == {5, 9}
    assert np.count_nonzero(got) == 2 * SLOTS // WIDTH  # every slot of those classes


def test_key_holder_refuses_values_that_are_not_flags() -> None:
    from fedlab_kit.errors import InputError
    with pytest.raises(InputError, match="0 or 1"):
        E.KeyHolder(np.array([0.0, 1.0, 2.0]), ["g"])
    with pytest.raises(InputError, match="at most"):
        E.KeyHolder(np.ones(4), ["a", "b", "c", "g"])


def _primes(bits: list[int]) -> list[int]:
    return [int(m.value()) for m in seal.CoeffModulus.Create(8192, bits)]


@pytest.mark.parametrize("primes", [_primes([60, 60]), _primes([44, 44, 44])],
                         ids=["4-bit limbs", "20-bit limbs"])
def test_flooding_noise_is_uniform_on_its_interval(primes: list[int]) -> None:
    """The residues describe one integer per coefficient (CRT), uniform in [-2^b, 2^b)."""
    b, n = 80, 4096
    res = bfv.flood_residues(primes, b, n)
    q = 1
    for p in primes:
        q *= p
    values = []
    for k in range(n):
        x = 0
        for p, r in zip(primes, res[:, k], strict=True):  # CRT
            m = q // p
            x = (x + int(r) * m * pow(m, -1, p)) % q
        values.append(x - q if x > q // 2 else x)
    v = np.array(values, dtype=float) / 2.0**b
    assert v.min() >= -1 and v.max() < 1
    assert v.max() > 0.99 and v.min() < -0.99  # the whole interval is used
    assert abs(v.mean()) < 4 / np.sqrt(3 * n)  # mean 0, sd 1/sqrt(3)
    assert abs(v.std() * np.sqrt(3) - 1) < 0.05
