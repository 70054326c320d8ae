"""Trees, split scoring (XGBoost's gain) and leaf reachability."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .params import BoostParams

RT_EPS = 1e-6  # XGBoost's kRtEps: a split must gain more than this


@dataclass
class Node:
    """One node of the active party's tree.

    A split has ``owner`` (a party name) and children; an own split keeps ``feature`` (own
    column), ``threshold`` and ``default_left``, a passive's split keeps ``feature`` (that
    party's column index) and its opaque ``record``. ``weight`` is a leaf's value (learning
    rate applied), ``gain`` XGBoost's loss change of a split, ``cover`` the hessian sum.
    """

    id: int
    depth: int
    left: int = -1
    right: int = -1
    owner: str = ""
    feature: int = -1
    threshold: float = math.nan
    default_left: bool = False
    record: int = -1
    gain: float = 0.0
    weight: float = 0.0
    cover: float = 0.0

    @property
    def is_leaf(self) -> bool:
        return self.left < 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if math.isnan(self.threshold):
            del d["threshold"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        return cls(**{"threshold": math.nan, **d})


@dataclass(frozen=True)
class Split:
    feature: int  # global index into the scored histogram
    slot: int
    default_left: bool
    gain: float


TIE_MARGIN = 1e-5  # relative


def _score(g: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    return g * g / (h + lam)


def best_splits(hist: np.ndarray, totals: np.ndarray, p: BoostParams,
                tolerance: float = 0.0, usable: np.ndarray | None = None
                ) -> list[Split | None]:
    """The best split of every node, as XGBoost's ``hist`` evaluator chooses it.

    ``hist`` (nodes, F, slots, 2) holds cumulative non-missing (G, H) sums per candidate
    slot, slot 0 being "every non-missing value"; ``totals`` (nodes, 2) the node sums. Both
    missing-value directions are scored (left only where the node has missing values; on
    a tie missing values go right), features tie-break by index. A split needs children
    with hessian >= min_child_weight (and > 0), a gain above 1e-6 and >= gamma; with
    ``usable`` (nodes, F, slots), only those candidate slots (enough rows on each side).
    """
    lam, mcw = p.reg_lambda, weight_floor(p)
    gl, hl = hist[..., 0], hist[..., 1]
    g = totals[:, 0][:, None, None]
    h = totals[:, 1][:, None, None]
    gm = (totals[:, 0][:, None] - hist[:, :, 0, 0])[..., None]  # missing sums per feature
    hm = (totals[:, 1][:, None] - hist[:, :, 0, 1])[..., None]
    parent = _score(g, h, lam)
    left_ok = hl > tolerance  # some non-missing rows go left
    if usable is not None:
        left_ok = left_ok & usable
    eps = tolerance + 1e-9 * np.maximum(h, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        hr = h - hl
        ok_r = left_ok & (hl >= mcw) & (hr >= mcw) & (hr > eps)
        gain_r = np.where(ok_r, _score(gl, hl, lam) + _score(g - gl, hr, lam) - parent,
                          -np.inf)
        gl2, hl2 = gl + gm, hl + hm
        hr2 = h - hl2
        ok_l = left_ok & (hm > eps) & (hl2 >= mcw) & (hr2 >= mcw) & (hr2 > eps)
        gain_l = np.where(ok_l, _score(gl2, hl2, lam) + _score(g - gl2, hr2, lam) - parent,
                          -np.inf)
    best_r, best_l = gain_r.max(axis=2), gain_l.max(axis=2)  # (nodes, F)
    go_left = best_l > best_r + _tie(np.maximum(best_l, best_r))
    per_feature = np.where(go_left, best_l, best_r)
    out: list[Split | None] = []
    for i in range(hist.shape[0]):
        if per_feature.shape[1] == 0:
            out.append(None)
            continue
        top = float(per_feature[i].max())
        # the first feature within the tie margin of the best (as XGBoost's first-max, but
        # robust to the small errors of encrypted sums)
        f = int(np.argmax(per_feature[i] >= top - _tie(top)))
        gain = float(per_feature[i, f])
        if not (gain > RT_EPS and gain >= p.gamma):
            out.append(None)
            continue
        left = bool(go_left[i, f])
        row = (gain_l if left else gain_r)[i, f]
        slot = int(np.argmax(row >= row.max() - _tie(row.max())))
        out.append(Split(f, slot, left, gain))
    return out


def _tie(gain: np.ndarray | float) -> np.ndarray | float:
    """Gains closer than this are ties: covers the rounding of fixed-point encrypted sums
    and is applied in plaintext mode too, so both modes grow the same trees."""
    with np.errstate(invalid="ignore"):
        return TIE_MARGIN * np.maximum(1.0, np.abs(np.nan_to_num(gain, neginf=0.0)))


def weight_floor(p: BoostParams) -> float:
    """``min_child_weight`` less the tie margin: a decrypted hessian sum that meets the
    threshold exactly in plaintext (squared error: H = 1.0 for one row) reads 0.9999987 or
    1.0000013, so both modes compare against this floor and grow the same trees."""
    return p.min_child_weight - TIE_MARGIN * max(1.0, p.min_child_weight)


def leaf_weight(g: float, h: float, p: BoostParams) -> float:
    """-G / (H + lambda) times the learning rate; 0 below min_child_weight (as XGBoost)."""
    if h < weight_floor(p) or h <= 0:
        return 0.0
    return -g / (h + p.reg_lambda) * p.learning_rate


TreeView = Sequence[tuple[int, int, int]]  # (id, left, right) in parent-before-child order


def leaf_masks(nodes: TreeView, n_rows: int,
               decide: Callable[[int], np.ndarray | None]) -> tuple[list[int], np.ndarray]:
    """Leaf ids and a (leaves, n_rows) mask of the rows that may reach each leaf.

    ``decide(node_id)`` gives the rows a split sends left, or None for a split this party
    does not hold (then rows may go either way). Masks of all parties ANDed together leave
    exactly one leaf per row.
    """
    reach = {nodes[0][0]: np.ones(n_rows, dtype=bool)} if nodes else {}
    leaves: list[int] = []
    for nid, left, right in nodes:
        here = reach[nid]
        if left < 0:
            leaves.append(nid)
            continue
        go = decide(nid)
        if go is None:
            reach[left], reach[right] = here, here
        else:
            reach[left], reach[right] = here & go, here & ~go
        del reach[nid]
    out = np.zeros((len(leaves), n_rows), dtype=bool)
    for k, nid in enumerate(leaves):
        out[k] = reach[nid]
    return leaves, out
