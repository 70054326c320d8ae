"""A feature holder's side of SecureBoost: serving training and prediction (sans-IO).

The passive party bins its own columns, keeps a table of candidate thresholds in an order
it shuffles once per training (the label holder can still sort them: cumulative hessian
sums grow with the threshold; one order for every tree keeps the root's encoded masks
valid from tree to tree), tracks which rows are in which node (from the partitions the active party
sends), computes histograms through its backend, and keeps the splits it wins as records
(column, threshold, missing direction) that never leave it. In prediction it tells the
active party, per tree and leaf, which rows its own splits let reach that leaf.

What it learns: the row sets of the nodes (so which rows end in the same leaf), the rows
each tree samples (with ``subsample < 1``), the tree shapes and which splits are its own;
with the BFV backend nothing about gradients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..protocol import Action, Compute, Envelope, Protocol, Send
from . import messages as m
from .backend import PassiveBackend, PlaintextPassive, make_backends, passive_histograms
from .binning import (
    bin_matrix,
    canonical_threshold,
    codes_left,
    level_counts,
    slot_table,
    threshold_value,
    usable_slots,
)
from .errors import BoostError
from .model import PassiveModel, Record, check_tree
from .params import MAX_DEPTH


class _Active(Protocol):
    """Shared helpers: every message comes from the one active party."""

    def __init__(self, me: str, active: str) -> None:
        super().__init__()
        if me == active:
            raise BoostError(f"the active party must be another party than {me!r}")
        self.me, self.active = me, active

    def _receive(self, env: Envelope) -> Any:
        if env.sender != self.active:
            raise ProtocolError(f"SecureBoost: message from {env.sender!r}; only the active "
                                f"party {self.active!r} talks to {self.me!r}")
        return m.decode(env)

    @staticmethod
    def _unexpected(msg: Any, peer: str) -> ProtocolError:
        return ProtocolError(f"SecureBoost: unexpected {m.kind(msg)!r} from {peer!r}")


class PassiveTrainer(_Active):
    """Serves one training run; the result is a :class:`PassiveModel`."""

    name, title = "secureboost", "SecureBoost training"

    def __init__(
        self, me: str, active: str, X: np.ndarray, columns: list[str], *,
        allow_plaintext: bool, eval_sets: Sequence[np.ndarray] = (),
        rng: np.random.Generator | None = None,
        on_done: Callable[[PassiveModel], None] | None = None,
        on_tree: Callable[[int, int], None] | None = None, min_child_rows: int = 20,
        workers: Any = None,
    ) -> None:
        """``on_tree(trees, splits)`` is called after each tree with the trees received so
        far and the splits this party holds. ``min_child_rows``: this party's floor.
        ``workers``: where the histograms are computed (default: this machine)."""
        super().__init__(me, active)
        self.workers = workers
        self.own_floor = min_child_rows
        self.X, self.columns, self.n = X, columns, len(X)
        self.allow_plaintext = allow_plaintext
        self.evals = list(eval_sets)
        self.eval_X = np.concatenate(self.evals) if self.evals else None
        self.rng = rng or np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
        self.on_done, self.on_tree = on_done, on_tree
        self.model: PassiveModel | None = None
        self.backend: PassiveBackend | None = None
        self.t, self.depth = -1, -1

    def start(self) -> list[Action]:
        return []

    def on_message(self, env: Envelope) -> list[Action]:
        msg = self._receive(env)
        if isinstance(msg, m.Setup) and self.model is None:
            return self._on_setup(msg)
        if self.model is None:
            raise self._unexpected(msg, env.sender)
        if isinstance(msg, m.HistRequest):
            return self._on_hist(msg)
        if isinstance(msg, m.SplitRequest):
            return self._on_split(msg)
        if isinstance(msg, m.TreeMsg):
            return self._on_tree(msg)
        if isinstance(msg, m.Finish):
            if not 0 <= msg.n_trees <= len(self.model.trees):
                raise ProtocolError(f"SecureBoost: {self.active!r} keeps {msg.n_trees} trees "
                                    f"of {len(self.model.trees)}")
            self.model.prune(msg.n_trees)
            self.done, self.result = True, self.model
            if self.on_done is not None:
                self.on_done(self.model)
            return []
        raise self._unexpected(msg, env.sender)

    def _on_setup(self, s: m.Setup) -> list[Action]:
        if s.version != m.VERSION:
            raise BoostError(f"{self.me!r} speaks SecureBoost version {m.VERSION}, the active "
                              f"party {s.version}; use the same fedlab-kit version")
        if not s.secure and not self.allow_plaintext:
            raise BoostError(f"the active party asked for unencrypted gradients; {self.me!r} "
                              "refuses (pass insecure_plaintext=True on both sides to allow "
                              "it, for tests only)")
        if self.me not in s.passives or not 2 <= s.max_bin <= 255:
            raise BoostError(f"malformed setup for {self.me!r}")
        try:
            self.backend = (make_backends(False, self.workers).passive(s.crypto) if s.secure
                            else PlaintextPassive(s.crypto))
        except (BoostError, ProtocolError) as exc:
            raise BoostError(f"{self.me!r} cannot use the active party's encryption: "
                             f"{exc}") from exc
        if not (1 <= s.max_depth <= MAX_DEPTH and s.n_trees >= 1 and s.min_child_rows >= 1):
            raise BoostError(f"malformed setup for {self.me!r}: depth {s.max_depth}, "
                             f"{s.n_trees} trees, min_child_rows {s.min_child_rows}")
        self.setup = s
        self.floor = max(self.own_floor, s.min_child_rows)
        self.codes, self.edges = bin_matrix(self.X, s.max_bin)
        self.n_slots = s.max_bin
        self.table = slot_table(self.edges, self.n_slots, self.rng)
        self.model = PassiveModel(s.model_id, self.me, self.active, self.columns)
        hello = m.Hello(m.VERSION, s.model_id, self.n, self.columns,
                        [len(e) for e in self.evals], self.floor, int((self.table >= 0).sum()))
        return [Send(self.active, "boost/hello", m.encode(hello))]

    def _on_hist(self, r: m.HistRequest) -> list[Action]:
        assert self.model is not None
        feats = np.asarray(r.features, dtype=np.intp)
        if (len(feats) == 0 or len(set(r.features)) != len(feats) or feats.min() < 0
                or feats.max() >= self.codes.shape[1]):
            raise ProtocolError("SecureBoost: histogram request for invalid columns")
        if r.tree >= self.setup.n_trees or r.depth >= self.setup.max_depth:
            raise ProtocolError(f"SecureBoost: {self.me!r} agreed to {self.setup.n_trees} trees "
                                f"of depth {self.setup.max_depth}; asked for tree {r.tree} "
                                f"level {r.depth}")
        if r.tree != self.t:  # a new tree: every row in the root
            if r.tree != len(self.model.trees) or r.depth != 0:
                raise ProtocolError(f"SecureBoost: histogram request for tree {r.tree} level "
                                    f"{r.depth} out of turn")
            self.t, self.depth = r.tree, -1
            self.rows = {0: np.arange(self.n)}
            self.counts: dict[int, np.ndarray] = {}
            self.sampled = m.unbits(r.sample, (self.n,), self.active) if r.sample else None
            self.own_masks: dict[int, np.ndarray] = {}
        if r.depth != self.depth + 1:
            raise ProtocolError(f"SecureBoost: histogram request for level {r.depth} out of turn")
        self.depth = r.depth
        for part in r.partitions:
            rows = self.rows.pop(part.node, None)
            if rows is None or part.left in self.rows or part.right in self.rows:
                raise ProtocolError(f"SecureBoost: partition of unknown node {part.node}")
            if part.mask:
                mask = m.unbits(part.mask, (len(rows),), self.active)
            elif part.node in self.own_masks:
                mask = self.own_masks.pop(part.node)
            else:
                raise ProtocolError(f"SecureBoost: no partition for node {part.node}")
            for child, sel in ((part.left, mask), (part.right, ~mask)):
                self._check_size(child, rows[sel], f"a split of node {part.node}")
                self.rows[child] = rows[sel]
        derived = self._derived(r)  # every node here is a checked child of a split
        try:
            nodes = [self.rows[n] for n in r.nodes]
        except KeyError:
            raise ProtocolError("SecureBoost: histogram request for unknown nodes") from None
        for nid, rows in zip(r.nodes, nodes, strict=True):
            self._check_size(nid, rows, "a histogram")  # the root, at the first level
        table = self.table[feats]
        # which candidate splits leave the floor's rows on each side: the label holder may
        # ask only for those (a split request is checked again)
        self.counts = level_counts(
            {n: self.codes[self._sampled(rows)][:, feats]
             for n, rows in zip(r.nodes, nodes, strict=True)}, derived, self.counts)
        self._usable = m.bits(np.stack([usable_slots(self.counts[n], table, self.floor)
                                        for n in [*r.nodes, *r.derived]])
                              ) if self.counts else b""
        return [Compute(("hist", r.tree, r.depth), passive_histograms,
                        (self.backend, r.crypto, nodes, self.codes[:, feats], table))]

    def _sampled(self, rows: np.ndarray) -> np.ndarray:
        """The rows that carry gradients in this tree (its sample)."""
        return rows if self.sampled is None else rows[self.sampled[rows]]

    def _check_size(self, node: int, rows: np.ndarray, what: str) -> None:
        n = len(self._sampled(rows))
        if n < self.floor:
            raise ProtocolError(f"SecureBoost: {what} asks {self.me!r} about node {node} of "
                                f"{n} rows; it answers only nodes of at least {self.floor} rows "
                                "(min_child_rows)")

    @staticmethod
    def _derived(r: m.HistRequest) -> dict[int, tuple[int, int]]:
        """Each derived node -> (parent, sibling); it must be the sibling of a requested
        node, both children of a split announced at this level."""
        family = {}
        for part in r.partitions:
            family[part.left] = (part.node, part.right)
            family[part.right] = (part.node, part.left)
        out = {}
        for nid in r.derived:
            if nid not in family or family[nid][1] not in r.nodes or nid in r.nodes:
                raise ProtocolError(f"SecureBoost: node {nid} is not the sibling of a "
                                    "requested node")
            out[nid] = family[nid]
        return out

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        _, tree, depth = key  # type: ignore[misc]
        reply = m.HistReply(tree, depth, result, self._usable)
        return [Send(self.active, "boost/hist_reply", m.encode(reply))]

    def _on_split(self, r: m.SplitRequest) -> list[Action]:
        assert self.model is not None
        if (r.tree, r.depth) != (self.t, self.depth):
            raise ProtocolError(f"SecureBoost: split request for tree {r.tree} level "
                                f"{r.depth} out of turn")
        records, masks = [], []
        for c in r.splits:
            if (c.node not in self.rows or c.node in self.own_masks
                    or not 0 <= c.feature < self.codes.shape[1] or not 0 <= c.slot < self.n_slots
                    or self.table[c.feature, c.slot] < 0):
                raise ProtocolError(f"SecureBoost: invalid split request for node {c.node}")
            rows = self.rows[c.node]
            codes = self.codes[rows, c.feature]
            sampled = codes if self.sampled is None else codes[self.sampled[rows]]
            t = canonical_threshold(sampled, int(self.table[c.feature, c.slot]), c.default_left)
            mask = codes_left(codes, t, c.default_left)
            self._check_size(c.node, rows[mask], "a split")
            self._check_size(c.node, rows[~mask], "a split")
            rec = len(self.model.records)
            self.model.records[rec] = Record(
                c.feature, threshold_value(self.edges[c.feature], t), c.default_left)
            self.own_masks[c.node] = mask
            records.append(rec)
            masks.append(m.bits(mask))
        reply = m.SplitReply(r.tree, r.depth, records, masks)
        return [Send(self.active, "boost/split_reply", m.encode(reply))]

    def _on_tree(self, r: m.TreeMsg) -> list[Action]:
        assert self.model is not None
        if r.tree != len(self.model.trees):
            raise ProtocolError(f"SecureBoost: tree {r.tree} out of turn")
        check_tree(r.nodes, self.model.records, self.active)
        self.model.trees.append(r.nodes)
        if self.on_tree is not None:
            self.on_tree(len(self.model.trees), len(self.model.records))
        if self.eval_X is None:
            return []
        masks = self.model.leaf_masks(self.eval_X, [r.nodes])
        reply = m.EvalReply(r.tree, m.bits(masks))
        return [Send(self.active, "boost/eval_reply", m.encode(reply))]


class PassivePredictor(_Active):
    """Serves one federated prediction round over the rows of ``X`` (own columns)."""

    name, title = "secureboost-predict", "SecureBoost prediction"

    def __init__(self, me: str, model: PassiveModel, X: np.ndarray) -> None:
        super().__init__(me, model.active)
        self.model, self.X, self.n = model, X, len(X)
        self.next_batch, self.next_row = 0, 0

    def start(self) -> list[Action]:
        hello = m.PredictHello(m.VERSION, self.model.model_id, self.n, len(self.model.trees))
        return [Send(self.active, "boost/predict_hello", m.encode(hello))]

    def on_message(self, env: Envelope) -> list[Action]:
        r = self._receive(env)
        if not isinstance(r, m.PredictRequest):
            raise self._unexpected(r, env.sender)
        if (r.batch != self.next_batch or r.start != self.next_row or r.stop < r.start
                or r.stop > self.n or (r.last and r.stop != self.n)):
            raise ProtocolError(f"SecureBoost: prediction batch {r.batch} out of turn")
        self.next_batch, self.next_row = r.batch + 1, r.stop
        masks = self.model.leaf_masks(self.X[r.start : r.stop])
        if r.last:
            self.done = True
        reply = m.PredictReply(r.batch, m.bits(masks))
        return [Send(self.active, "boost/predict_reply", m.encode(reply))]
