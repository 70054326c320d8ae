"""Each party's part of a trained model, its leaf masks, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ProtocolError
from .binning import goes_left
from .errors import BoostError
from .messages import TreeNode
from .params import BoostParams, Margin
from .tree import Node, leaf_masks

FORMAT = "fedlab-secureboost"
FORMAT_VERSION = 1
PREDICT_BUDGET = 16 << 20  # bytes of leaf masks per prediction batch


def _dump(doc: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(doc, allow_nan=False, indent=1))


def _read(path: str | Path, role: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BoostError(f"cannot read a SecureBoost model from {str(path)!r}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BoostError(f"{str(path)!r} is not a SecureBoost model file")
    if doc.get("version") != FORMAT_VERSION:
        raise BoostError(f"{str(path)!r} has model format version {doc.get('version')}; "
                         f"this kit reads version {FORMAT_VERSION}")
    if doc.get("role") != role:
        raise BoostError(f"{str(path)!r} holds the {doc.get('role')} party's part of a model, "
                         f"not the {role} party's")
    return doc


@dataclass
class ActiveModel:
    """The label holder's part: tree shapes, own splits, leaf values, who holds the rest.
    With ``multi:softprob`` the margin has one column per class (``base_margin`` is then
    an array) and ``tree_class[i]`` is the class whose margin tree ``i`` adds to."""

    model_id: str
    party: str
    params: BoostParams
    base_margin: Margin
    columns: list[str]
    passives: dict[str, list[str]]  # passive party -> its column names, in party order
    trees: list[list[Node]] = field(default_factory=list, repr=False)
    evals_result: dict[str, dict[str, list[float]]] = field(default_factory=dict, repr=False)
    best_iteration: int | None = None
    best_score: float | None = None
    tree_class: list[int] = field(default_factory=list, repr=False)

    @property
    def n_groups(self) -> int:
        """Margin columns: the number of classes for multi:softprob, else 1."""
        return self.params.n_groups

    def own_masks(self, X: np.ndarray) -> np.ndarray:
        """(all leaves, rows): rows that the own splits let reach each leaf."""
        parts = [tree_masks(t, X, self.party) for t in self.trees]
        return np.concatenate(parts) if parts else np.zeros((0, len(X)), bool)

    def combine(self, masks: np.ndarray) -> np.ndarray:
        """Margins from the ANDed (all leaves, rows) masks of all parties; each row must
        reach exactly one leaf of every tree."""
        k = self.n_groups
        margin = np.broadcast_to(self.base_margin, (masks.shape[1], *(() if k == 1 else (k,))))
        margin = margin.astype(np.float64)
        start = 0
        for tree, cls in zip(self.trees, self.classes_of_trees(), strict=True):
            weights = np.array([n.weight for n in tree if n.is_leaf])
            sub = masks[start : start + len(weights)]
            start += len(weights)
            if (np.count_nonzero(sub, axis=0) != 1).any():
                bad = int((np.count_nonzero(sub, axis=0) != 1).sum())
                raise ProtocolError(f"the parties' leaf masks do not single out one leaf per "
                                    f"tree for {bad} rows: the parts of the model do not "
                                    "belong together")
            (margin if k == 1 else margin[:, cls])[:] += weights[np.argmax(sub, axis=0)]
        return margin

    def classes_of_trees(self) -> list[int]:
        """The class of every tree (all 0 unless multi:softprob); checked, as a file may
        be damaged."""
        k = self.n_groups
        classes = self.tree_class if k > 1 else [0] * len(self.trees)
        if (len(classes) != len(self.trees) or len(self.trees) % k
                or any(c != i % k for i, c in enumerate(classes))):
            raise BoostError(f"the model's {len(self.trees)} trees do not make whole rounds "
                             f"of {k} classes (tree_class {classes[:6]}...)")
        return classes

    @property
    def n_leaves(self) -> int:
        return sum(n.is_leaf for t in self.trees for n in t)

    def feature_importances(self) -> dict[str, float]:
        """Average gain per split of every column (own, then "party:column"), normalised
        to sum to 1, as XGBoost's ``feature_importances_``."""
        names = list(self.columns)
        index = {(self.party, i): i for i in range(len(self.columns))}
        for p, cols in self.passives.items():
            for i, c in enumerate(cols):
                index[(p, i)] = len(names)
                names.append(f"{p}:{c}")
        total, count = np.zeros(len(names)), np.zeros(len(names))
        for t in self.trees:
            for n in t:
                if not n.is_leaf:
                    k = index[(n.owner, n.feature)]
                    total[k] += n.gain
                    count[k] += 1
        avg = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        s = avg.sum()
        return dict(zip(names, (avg / s if s > 0 else avg).tolist(), strict=True))

    def to_json(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "role": "active",
               "model_id": self.model_id, "party": self.party,
               "params": self.params.to_dict(),
               "base_margin": np.asarray(self.base_margin).tolist(),
               "columns": self.columns, "passives": self.passives,
               "trees": [[n.to_json() for n in t] for t in self.trees],
               "evals_result": self.evals_result, "best_iteration": self.best_iteration,
               "best_score": self.best_score}
        if self.n_groups > 1:
            doc |= {"num_class": self.n_groups, "tree_class": self.classes_of_trees()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ActiveModel:
        try:
            params = BoostParams.from_dict(doc["params"])
            base = doc["base_margin"]
            base = float(base) if params.n_groups == 1 else np.array(base, dtype=np.float64)
            if np.shape(base) != (() if params.n_groups == 1 else (params.n_groups,)):
                raise BoostError(f"base_margin {doc['base_margin']!r} for "
                                 f"{params.n_groups} classes")
            model = cls(doc["model_id"], doc["party"], params, base, list(doc["columns"]),
                        {p: list(c) for p, c in doc["passives"].items()},
                        [[Node.from_json(n) for n in t] for t in doc["trees"]],
                        doc.get("evals_result") or {}, doc.get("best_iteration"),
                        doc.get("best_score"),
                        [int(c) for c in doc.get("tree_class") or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise BoostError(f"the model file is damaged: {exc!r}") from None
        model.classes_of_trees()
        return model

    def save(self, path: str | Path) -> None:
        _dump(self.to_json(), path)

    @classmethod
    def load(cls, path: str | Path) -> ActiveModel:
        return cls.from_json(_read(path, "active"))


def tree_masks(tree: list[Node], X: np.ndarray, me: str) -> np.ndarray:
    """(leaves, rows) masks of one tree from the splits that party ``me`` holds."""
    by_id = {n.id: n for n in tree}

    def decide(nid: int) -> np.ndarray | None:
        n = by_id[nid]
        if n.owner != me:
            return None
        return goes_left(X[:, n.feature], n.threshold, n.default_left)

    return leaf_masks([(n.id, n.left, n.right) for n in tree], len(X), decide)[1]


@dataclass(frozen=True)
class Record:
    """A passive party's split: its column, threshold value and missing-value direction."""

    feature: int
    threshold: float
    default_left: bool


@dataclass
class PassiveModel:
    """A feature holder's part: its split records and the shapes of the trees."""

    model_id: str
    party: str
    active: str
    columns: list[str]
    records: dict[int, Record] = field(default_factory=dict, repr=False)
    trees: list[list[TreeNode]] = field(default_factory=list, repr=False)

    def leaf_masks(self, X: np.ndarray, trees: list[list[TreeNode]] | None = None) -> np.ndarray:
        """(all leaves, rows): rows that this party's splits let reach each leaf."""
        parts = []
        for tree in self.trees if trees is None else trees:
            by_id = {n.id: n for n in tree}

            def decide(nid: int, by_id: dict[int, TreeNode] = by_id) -> np.ndarray | None:
                rec = by_id[nid].record
                if rec < 0:
                    return None
                r = self.records[rec]
                return goes_left(X[:, r.feature], r.threshold, r.default_left)

            parts.append(leaf_masks([(n.id, n.left, n.right) for n in tree], len(X),
                                    decide)[1])
        return np.concatenate(parts) if parts else np.zeros((0, len(X)), bool)

    def prune(self, n_trees: int) -> None:
        """Keep the first ``n_trees`` trees and the records they use."""
        self.trees = self.trees[:n_trees]
        used = {n.record for t in self.trees for n in t if n.record >= 0}
        self.records = {k: r for k, r in self.records.items() if k in used}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "role": "passive",
                "model_id": self.model_id, "party": self.party, "active": self.active,
                "columns": self.columns,
                "records": {str(k): {"feature": self.columns[r.feature],
                                     "threshold": r.threshold, "default_left": r.default_left}
                            for k, r in sorted(self.records.items())},
                "trees": [[[n.id, n.left, n.right, n.record] for n in t] for t in self.trees]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PassiveModel:
        try:
            cols = list(doc["columns"])
            records = {int(k): Record(cols.index(r["feature"]), float(r["threshold"]),
                                      bool(r["default_left"]))
                       for k, r in doc["records"].items()}
            trees = [[TreeNode(*map(int, n)) for n in t] for t in doc["trees"]]
            return cls(doc["model_id"], doc["party"], doc["active"], cols, records, trees)
        except (KeyError, TypeError, ValueError) as exc:
            raise BoostError(f"the model file is damaged: {exc!r}") from None

    def save(self, path: str | Path) -> None:
        _dump(self.to_json(), path)

    @classmethod
    def load(cls, path: str | Path) -> PassiveModel:
        return cls.from_json(_read(path, "passive"))


def check_tree(nodes: list[TreeNode], records: dict[int, Record], peer: str) -> None:
    """A tree structure from the active party must be a proper binary tree, parents
    listed before children, that refers only to our own records."""
    seen: set[int] = set()
    expected = {nodes[0].id} if nodes else set()
    for n in nodes:
        if n.id in seen or n.id not in expected:
            raise ProtocolError(f"SecureBoost: malformed tree from {peer!r} at node {n.id}")
        seen.add(n.id)
        if (n.left < 0) != (n.right < 0) or (n.left < 0 and n.record >= 0):
            raise ProtocolError(f"SecureBoost: malformed tree from {peer!r} at node {n.id}")
        if n.record >= 0 and n.record not in records:
            raise ProtocolError(f"SecureBoost: {peer!r} refers to an unknown split record")
        if n.left >= 0:
            expected |= {n.left, n.right}
    if not nodes or seen != expected:
        raise ProtocolError(f"SecureBoost: malformed tree from {peer!r}")
