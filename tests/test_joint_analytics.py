"""BFV contexts, the encrypted-counts chain, the joint crowd and the funnel (in memory)."""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from fedlab_kit.analytics import funnel as F
from fedlab_kit.analytics import joint_crowd as C
from fedlab_kit.analytics.encrypted_counts import Grouper, KeyHolder, Multiplier
from fedlab_kit.dp import PrivacyLedger
from fedlab_kit.dp.errors import DPError
from fedlab_kit.dp.mechanisms import release_noise
from fedlab_kit.errors import ProtocolError
from fedlab_kit.he import RowLayout
from fedlab_kit.he.bfv import SLOTS, BfvPublic, BfvSecret
from fedlab_kit.protocol import LocalNetwork

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def keys16() -> tuple[BfvSecret, BfvPublic, RowLayout]:
    layout = RowLayout(1500, 16, slots=SLOTS)
    secret = BfvSecret(16)
    return secret, BfvPublic.from_bytes(secret.to_bytes()), layout


def test_garbage_ciphertexts_are_a_protocol_error(
        keys16: tuple[BfvSecret, BfvPublic, RowLayout]) -> None:
    _, public, _ = keys16
    with pytest.raises(ProtocolError):
        public.load(b"not msgpack at all \xff")
    import msgspec
    with pytest.raises(ProtocolError):
        public.load(msgspec.msgpack.encode([b"\x00" * 64]))
    with pytest.raises(ProtocolError):
        BfvPublic.from_bytes(b"\x01\x02")
    assert not hasattr(public, "decrypt")  # an evaluator's context has no secret key


def _zero_noise(n_masks: int, width: int):
    return lambda: (np.zeros((n_masks, width), np.int64), {"ok": 1})


def test_chain_of_three_counts_exactly() -> None:
    n, width = 700, 8
    values = RNG.integers(0, 2, (n, 2)).astype(float)  # replicated 4x per row
    row_mask = RNG.random((n, width)) < 0.5
    groups = RNG.integers(0, 3, n)
    masks = [(np.repeat(np.flatnonzero(groups == g), width),
              np.tile(np.arange(width), int((groups == g).sum()))) for g in range(3)]
    protos = {
        "k": KeyHolder(values, ["m", "g"]),
        "m": Multiplier("k", n, "g", lambda w: row_mask),
        "g": Grouper("k", n, width, masks, _zero_noise(3, width)),
    }
    res = LocalNetwork(protos).run()["k"]
    rows = np.repeat(values, 4, axis=1) * row_mask
    want = np.stack([rows[groups == g].sum(axis=0) for g in range(3)])
    assert np.array_equal(res.sums, want)  # exact: BFV counts integers
    assert res.meta == {"ok": 1}


def test_whole_number_masks_count_and_overflowing_ones_are_refused() -> None:
    """The funnel's district totals multiply by "campaigns visited" (0..C): exact sums.
    A factor that could wrap a sum around the plaintext modulus is refused before any
    ciphertext is touched (it would decrypt to a wrong count)."""
    from fedlab_kit.he.bfv import plain_modulus

    n, width = 300, 4
    values = RNG.integers(0, 2, (n, 1)).astype(float)
    factors = RNG.integers(0, 4, (n, width))
    masks = [(np.repeat(np.arange(n), width), np.tile(np.arange(width), n))]
    protos = {"k": KeyHolder(values, ["m", "g"]),
              "m": Multiplier("k", n, "g", lambda w: factors),
              "g": Grouper("k", n, width, masks, _zero_noise(1, width))}
    res = LocalNetwork(protos).run()["k"]
    assert np.array_equal(res.sums[0], (np.repeat(values, width, axis=1) * factors).sum(0))
    huge = np.full((n, width), plain_modulus() // (4 * n) + 1)
    protos = {"k": KeyHolder(values, ["m", "g"]),
              "m": Multiplier("k", n, "g", lambda w: huge),
              "g": Grouper("k", n, width, masks, _zero_noise(1, width))}
    with pytest.raises(ProtocolError, match="mask values must be in"):
        LocalNetwork(protos).run()
    negative = -np.ones((n, width), np.int64)
    protos["m"] = Multiplier("k", n, "g", lambda w: negative)
    protos["k"] = KeyHolder(values, ["m", "g"])
    protos["g"] = Grouper("k", n, width, masks, _zero_noise(1, width))
    with pytest.raises(ProtocolError, match="mask values must be in"):
        LocalNetwork(protos).run()


def test_misaligned_rows_are_refused() -> None:
    protos = {"k": KeyHolder(np.ones(10), ["g"]),
              "g": Grouper("k", 11, 4, [(np.array([0]), np.array([0]))], _zero_noise(1, 4))}
    with pytest.raises(ProtocolError, match="run PSI first"):
        LocalNetwork(protos).run()


def test_release_noise_has_the_stated_variance(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "l.sqlite", total_epsilon=10, party="p")
    rel = release_noise(ledger, "noise", 20000, epsilon=0.5, sensitivity=2)
    b = rel.noise_scale
    q = math.exp(-1 / b)
    var = 2 * q / (1 - q) ** 2  # discrete Laplace
    assert abs(rel.values.var() / var - 1) < 0.1
    assert abs(rel.values.mean()) < 0.1 * math.sqrt(var)
    assert ledger.remaining().epsilon == pytest.approx(9.5)


# ------------------------------------------------------------------ crowd
def _crowd_case(n: int = 1200, n_cells: int = 40):
    persons = [f"u{i}" for i in range(n)]
    ta = RNG.integers(0, 2, n)
    visits = pd.DataFrame({"user_id": RNG.choice([*persons, "stranger"], 4 * n),
                           "h3": [f"c{j}" for j in RNG.integers(0, n_cells + 1, 4 * n)]})
    return persons, ta, visits, [f"c{j}" for j in range(n_cells)]


def test_joint_crowd_in_memory(tmp_path: Path) -> None:
    persons, ta, visits, keys = _crowd_case()
    ledger = PrivacyLedger(tmp_path / "op.sqlite", total_epsilon=3, party="operator")
    captured = {}
    with mock.patch.object(C, "run", lambda party, proto, **kw: captured.setdefault(party, proto)):
        report = C.crowd_for_visits("operator", persons, visits, ledger=ledger, epsilon=2.0,
                                    keys=keys, max_cells=3, seed=1, label_holder="retailer",
                                    bounding_share=0.25)  # ~1,000 removed pairs: significant
    captured["retailer"] = KeyHolder(C.check_flags(ta, "ta"), ["operator"])
    frame = C.crowd_frame(LocalNetwork(captured).run()["retailer"])
    # the truth is unbounded: distinct TA persons per cell, however many cells they visit
    seen = visits[visits["user_id"].isin(persons)].drop_duplicates()
    flag = dict(zip(persons, ta, strict=True))
    truth = (seen[seen["user_id"].map(flag) == 1].groupby("h3").size()
             .reindex(keys, fill_value=0).to_numpy())
    assert list(frame["h3"]) == keys
    assert 0.05 < report["bounding_loss"] < 0.45  # 4 visits per person, 3 cells kept
    inside = (frame["ci_low"] <= truth) & (truth <= frame["ci_high"])
    assert inside.mean() >= 0.85  # 95 % intervals
    assert (frame["count"] >= 0).all() and (frame["bounding_added"] >= 0).all()
    # without the correction the bounded counts sit below the truth in most busy cells
    bounded = frame["count"] - frame["bounding_added"]
    assert (bounded < truth).mean() > 0.6
    assert report["rows_not_in_intersection"] == int((visits["user_id"] == "stranger").sum())
    assert report["rows_outside_keys"] > 0 and report["release_id"] is not None
    assert ledger.remaining().epsilon == pytest.approx(1.0)


def test_crowd_bad_input(tmp_path: Path) -> None:
    persons, _, visits, keys = _crowd_case(50, 5)
    with pytest.raises(DPError, match="not 0/1"):
        C.check_flags([0, 1, 2], "ta")
    with pytest.raises(DPError, match="missing"):
        C.check_flags(pd.Series([0, None]), "ta")
    with pytest.raises(DPError, match="no cells"):
        C.prepare_visits(persons, visits, keys=[], person_col="user_id", cell_col="h3",
                         max_cells=2, seed=0)
    with pytest.raises(DPError, match="no column"):
        C.prepare_visits(persons, visits, keys=keys, person_col="user_id", cell_col="cell",
                         max_cells=2, seed=0)


# ------------------------------------------------------------------ funnel
def test_funnel_in_memory(tmp_path: Path) -> None:
    n, campaigns = 3000, ["a", "b"]
    district = RNG.choice(["D1", "D2"], n)
    exposed = pd.DataFrame({c: RNG.integers(0, 2, n) for c in campaigns})
    visited = pd.DataFrame({c: RNG.random(n) < 0.4 + 0.2 * exposed[c] for c in campaigns})
    bought = (RNG.random(n) < 0.6).astype(int)
    repeat = (RNG.random(n) < 0.5).astype(int)
    lm = PrivacyLedger(tmp_path / "m.sqlite", total_epsilon=2, party="media")
    lo = PrivacyLedger(tmp_path / "o.sqlite", total_epsilon=2, party="operator")
    captured = {}
    with mock.patch.object(F, "run", lambda party, proto, **kw: captured.setdefault(party, proto)):
        F.funnel_for_visits("operator", visited.astype(int), ledger=lo, epsilon=1.0,
                            key_holder="retailer", next_party="media")
        F.funnel_for_exposure("media", district, exposed, ledger=lm, epsilon=1.0,
                              key_holder="retailer", districts=["D1", "D2"])
    captured["retailer"] = F.outcomes_protocol(bought, repeat, ["operator", "media"])
    frame = F.funnel_frame(LocalNetwork(captured).run()["retailer"])
    assert len(frame) == 2 * 2 * 2 * 4 + 2 * 4  # funnels, then district totals
    totals = frame[frame["level"] == "district"]
    assert set(totals["campaign"]) == {"all"} and set(totals["group"]) == {"all"}
    funnels = frame[frame["level"] == "campaign"]
    # consistent hierarchy: the totals are the sums of the funnels (up to rounding)
    sums = funnels.groupby(["district_id", "stage"])["count"].sum()
    gap = (totals.set_index(["district_id", "stage"])["count"] - sums).abs()
    assert (gap <= 2).all(), gap
    for d, part in totals.groupby("district_id"):
        sel = district == d
        true = [2 * sel.sum(), sum((visited[c] & sel).sum() for c in campaigns),
                sum((visited[c] & sel & (bought == 1)).sum() for c in campaigns),
                sum((visited[c] & sel & (bought == 1) & (repeat == 1)).sum()
                    for c in campaigns)]
        counts = part.set_index("stage").loc[list(F.STAGES)]
        assert (np.diff(counts["count"]) <= 0).all()
        assert (abs(counts["count"] - true) <= 0.05 * np.asarray(true)).all()
    inside = []
    for (c, d, g), part in funnels.groupby(["campaign", "district_id", "group"]):
        sel = (district == d) & ((exposed[c] == 1) == (g == "exposed"))
        v = visited[c].to_numpy() & sel
        true = [sel.sum(), v.sum(), (v & (bought == 1)).sum(),
                (v & (bought == 1) & (repeat == 1)).sum()]
        counts = part.set_index("stage").loc[list(F.STAGES)]
        assert (np.diff(counts["count"]) <= 0).all()  # monotone funnel
        inside += list((counts["ci_low"] <= true) & (true <= counts["ci_high"]))
    assert np.mean(inside) >= 0.8  # 95 % intervals (stage noises are correlated)
    exposed_rows = frame[(frame["group"] == "exposed") & (frame["stage"] == "visited")]
    assert (exposed_rows["lift"] > 0).all()  # the planted exposure effect shows
    assert lm.remaining().epsilon == pytest.approx(1.0)
    assert lo.remaining().epsilon == pytest.approx(1.0)


def test_funnel_bad_input(tmp_path: Path) -> None:
    lm = PrivacyLedger(tmp_path / "m.sqlite", total_epsilon=2, party="media")
    with pytest.raises(DPError, match="outside the given districts"):
        F.funnel_for_exposure("media", ["D1", "D9"], pd.DataFrame({"a": [0, 1]}), ledger=lm,
                              epsilon=1.0, districts=["D1"], key_holder="retailer")
    with pytest.raises(DPError, match="no district"):
        F.funnel_for_exposure("media", ["D1", None], pd.DataFrame({"a": [0, 1]}), ledger=lm,
                              epsilon=1.0, key_holder="retailer", districts=["D1"])
    with pytest.raises(DPError, match="not 0/1"):
        F.outcomes_protocol([0, 3], [0, 0], ["operator", "media"])
    assert lm.remaining().epsilon == 2  # nothing spent on refused input


def test_visit_cells_from_pois_and_coordinates() -> None:
    pois = pd.DataFrame({"poi_id": ["p1", "p2"], "lat": [31.23, 31.30], "lon": [121.47, 121.50]})
    visits = pd.DataFrame({"user_id": ["a", "b", "c"], "poi_id": ["p1", "p2", "p9"]})
    with pytest.raises(DPError, match="1 visits are to POIs not in the POI table"):
        C.visit_cells(visits, pois=pois)
    out, report = C.visit_cells(visits, pois=pois, drop_unknown_pois=True)
    assert report["rows_unknown_poi"] == 1 and len(out) == 2
    assert out["h3"].str.len().eq(15).all() and out["h3"].iloc[0] != out["h3"].iloc[1]
    coords = pd.DataFrame({"user_id": ["a", "b"], "lat": [31.2, 95.0], "lon": [121.4, 121.4]})
    with pytest.raises(DPError, match="1 rows have a latitude/longitude"):
        C.visit_cells(coords)
    with pytest.raises(DPError, match="need 'lat'/'lon'"):
        C.visit_cells(visits[["user_id"]])


def test_serialisation_leaves_no_scratch_files(
        keys16: tuple[BfvSecret, BfvPublic, RowLayout], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import glob
    import threading
    from typing import Any

    import msgspec

    from fedlab_kit.he import serial

    # a folder of this test's own: other processes' scratch files (a bench running
    # alongside) must not count
    monkeypatch.setattr(serial, "_SCRATCH_DIR", str(tmp_path))
    pattern = f"{tmp_path}/fedlab-seal-*"
    before = set(glob.glob(pattern))
    used: list[str] = []
    real_mkstemp = serial.tempfile.mkstemp

    def spy(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = real_mkstemp(*args, **kwargs)
        used.append(path)
        return fd, path

    monkeypatch.setattr(serial.tempfile, "mkstemp", spy)
    _, public, layout = keys16
    seen: list[Any] = []

    def round_trip() -> None:  # in a new thread: no per-thread scratch file may stay behind
        cts = public.load(public.dump(
            public.encrypt(v) for v in layout.place(np.ones((layout.n_rows, 16), np.int64))))
        seen.append(len(cts))
        try:
            public.load(msgspec.msgpack.encode([b"\x00" * 64]))
        except ProtocolError as exc:
            seen.append(exc)

    worker = threading.Thread(target=round_trip)
    worker.start()
    worker.join(120)
    assert seen[0] == layout.n_cts and isinstance(seen[1], ProtocolError)
    assert before == set() and set(glob.glob(pattern)) == set()
    assert used and all(p.startswith(str(tmp_path)) for p in used)  # the files were made


def test_funnel_keys_come_from_the_public_list_not_the_data(tmp_path: Path) -> None:
    """The attack: with keys taken from the data, the released rows would tell which
    districts hold an aligned person. Keys must be given, and a district with nobody in
    it is released like any other."""
    lm = PrivacyLedger(tmp_path / "m.sqlite", total_epsilon=2, party="media")
    exposed = pd.DataFrame({"a": [0, 1, 1, 0]})
    with pytest.raises(DPError, match="pass districts"):
        F.funnel_for_exposure("media", ["D1"] * 4, exposed, ledger=lm, epsilon=1.0,
                              key_holder="retailer", districts=None)  # type: ignore[arg-type]
    captured: dict[str, object] = {}
    with mock.patch.object(F, "run", lambda party, proto, **kw: captured.setdefault(party, proto)):
        F.funnel_for_exposure("media", ["D1"] * 4, exposed, ledger=lm, epsilon=1.0,
                              key_holder="retailer", districts=["D1", "D2", "D3"])
    assert len(captured["media"].masks) == 3  # one group per public district, D2/D3 empty
    assert lm.remaining().epsilon == pytest.approx(2)  # nothing paid before data arrives
