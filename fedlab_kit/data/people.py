"""The hidden person universe and the three parties' views of it.

Persons carry latent traits (age, affinities, activity, home and work POIs). Each party
holds a partial, overlapping subset of them and only its own columns. All randomness comes
from the ``rng`` argument; every step is vectorised over persons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedlab_kit.data.geography import distance_km

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_PROBS = (0.12, 0.22, 0.21, 0.18, 0.15, 0.12)
INTERESTS = ("beauty", "auto", "sports", "travel", "food")
TA_LABELS = ("beauty", "auto", "sports")
CAMPAIGNS = {"beauty_launch": "beauty", "auto_expo": "auto", "sports_sale": "sports"}
PARTY_SHARE = {"retailer": 0.70, "media": 0.60, "operator": 0.80}
# age-band shift of each latent affinity (rows: age band, columns: INTERESTS)
_AGE_AFFINITY = np.array(
    [
        [0.5, -0.2, 0.6, 0.3, 0.3],
        [0.4, 0.2, 0.4, 0.4, 0.3],
        [0.1, 0.4, 0.1, 0.2, 0.1],
        [-0.1, 0.3, -0.2, 0.0, 0.0],
        [-0.3, 0.0, -0.4, 0.1, 0.0],
        [-0.5, -0.4, -0.6, -0.1, -0.1],
    ]
)
ONLINE_EXPOSURE = 0.12
BILLBOARD_HIT = 0.45
BILLBOARD_SCALE_KM = 1.2


@dataclass
class Universe:
    """All persons with their latent traits (index i is person i, id ``ids[i]``)."""

    ids: np.ndarray
    age: np.ndarray
    affinity: np.ndarray
    interest: np.ndarray
    ta: np.ndarray
    activity: np.ndarray
    wealth: np.ndarray
    employed: np.ndarray
    home_poi: np.ndarray
    work_poi: np.ndarray
    home_district: np.ndarray
    member: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        """Number of persons."""
        return len(self.ids)


def person_ids(n: int) -> np.ndarray:
    """Zero-padded string ids u0000001, u0000002, ... (vectorised)."""
    width = max(7, len(str(n)))
    digits = np.char.zfill(np.arange(1, n + 1).astype(str), width)
    return np.char.add("u", digits).astype(object)


def sample_rows(cdf: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one column index per entry of ``rows`` from per-row cumulative distributions.

    ``cdf`` is (n_rows, n_cols) with each row non-decreasing and ending at 1. The rows are
    stacked into one increasing sequence (row r is offset by r) so a single searchsorted
    call serves every draw.
    """
    n_cols = cdf.shape[1]
    flat = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
    u = rows + rng.random(len(rows)) * (1 - 1e-12)
    pos = np.searchsorted(flat, u, side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1)


def to_cdf(weights: np.ndarray) -> np.ndarray:
    """Row-normalised cumulative sums of a non-negative weight matrix."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    return cdf


def _homes_and_work(
    n: int, pois: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Home residence POI, work office POI and employment flag per person."""
    res = np.flatnonzero(pois["category"].to_numpy() == "residence")
    off = np.flatnonzero(pois["category"].to_numpy() == "office")
    cap = pois["capacity"].to_numpy()
    home_pos = sample_rows(to_cdf(cap[res][None, :]), np.zeros(n, dtype=np.int64), rng)
    lon, lat = pois["lon"].to_numpy(), pois["lat"].to_numpy()
    dist = distance_km(lon[res], lat[res], lon[off], lat[off])
    commute = to_cdf(cap[off][None, :] * np.exp(-dist / 6.0))
    work_pos = sample_rows(commute, home_pos, rng)
    employed = rng.random(n) < 0.8
    home = res[home_pos]
    work = np.where(employed, off[work_pos], home)
    return home, work, employed


def make_universe(
    n: int, pois: pd.DataFrame, district_index: dict[str, int], rng: np.random.Generator
) -> Universe:
    """Draw ``n`` persons with latent traits, anchors and party memberships."""
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_PROBS)
    affinity = rng.normal(0.0, 1.0, (n, len(INTERESTS))) + _AGE_AFFINITY[age]
    interest = (affinity + rng.normal(0.0, 0.6, affinity.shape)) > 0.9
    ta = (affinity[:, : len(TA_LABELS)] + rng.normal(0.0, 0.6, (n, len(TA_LABELS)))) > 1.0
    home, work, employed = _homes_and_work(n, pois, rng)
    home_district = pois["district_id"].map(district_index).to_numpy()[home]
    member = {party: rng.random(n) < share for party, share in PARTY_SHARE.items()}
    return Universe(
        ids=person_ids(n),
        age=age,
        affinity=affinity,
        interest=interest,
        ta=ta,
        activity=rng.gamma(4.0, 0.25, n),
        wealth=rng.normal(0.0, 1.0, n),
        employed=employed,
        home_poi=home,
        work_poi=work,
        home_district=home_district,
        member=member,
    )


def exposure(
    universe: Universe,
    pois: pd.DataFrame,
    billboards: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """True (n, n_campaigns) exposure: billboards near home or work, plus online ads.

    Exposure depends on location only (not on interests), so exposed and control groups
    are comparable within a district.
    """
    lon, lat = pois["lon"].to_numpy(), pois["lat"].to_numpy()
    out = np.zeros((universe.size, len(billboards)), dtype=bool)
    for k, sites in enumerate(billboards.values()):
        dist = distance_km(lon, lat, lon[sites], lat[sites])
        miss = np.prod(1 - BILLBOARD_HIT * np.exp(-dist / BILLBOARD_SCALE_KM), axis=1)
        p_miss = (1 - ONLINE_EXPOSURE) * miss[universe.home_poi] * miss[universe.work_poi]
        out[:, k] = rng.random(universe.size) >= p_miss
    return out
