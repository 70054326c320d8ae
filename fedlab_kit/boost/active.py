"""The label holder's side of SecureBoost: training and federated prediction (sans-IO).

Training, per tree, level by level: the active party computes gradients, asks every passive
party for the cumulative histograms of the nodes it cannot get by subtraction (the smaller
child of each pair; the larger is parent minus smaller), scores every candidate of every
party, partitions its own winning nodes itself and asks passive winners for the rows that
go left. With ``multi:softprob`` (K classes) a boosting round is K trees, tree k fitted to
the softmax gradients of class k, all from the margins before the round; to the passives
they are just trees. After each tree it sends the passives the tree's shape (no thresholds, no leaf
values); with an eval set they answer with leaf masks of the eval rows.

What the active party learns from a passive one: its column names, the per-candidate
(G, H) sums of every node in an order the passive shuffles (which the cumulative H sums,
growing with the threshold, give away), which of its columns a split uses, and the rows that
go left. Never a threshold or a feature value.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InternalError, ProtocolError
from ..protocol import Action, Compute, Envelope, Protocol, Send
from . import messages as m
from .backend import ActiveBackend, decrypt_all, encrypt, node_histograms
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
from .model import PREDICT_BUDGET, ActiveModel, tree_masks
from .params import MAXIMIZE, BoostParams, base_margin, evaluate, gradients
from .tree import Node, best_splits, leaf_weight

TreeCallback = Callable[[int, int, dict[str, float]], None]


@dataclass
class EvalSet:
    """Rows to evaluate after each tree: the active's own columns and the labels."""

    X: np.ndarray
    y: np.ndarray


class _Waiting:
    """The replies of one round (one message kind, one from each of some peers)."""

    def __init__(self) -> None:
        self.kind, self.peers, self.got = "", set[str](), dict[str, Any]()

    def expect(self, kind: str, peers: list[str]) -> None:
        self.kind, self.peers, self.got = kind, set(peers), {}

    def take(self, env: Envelope, msg: Any) -> dict[str, Any] | None:
        """Store a reply; all replies once the round is complete."""
        if m.kind(msg) != self.kind or env.sender not in self.peers:
            raise ProtocolError(f"SecureBoost: unexpected {env.kind!r} from {env.sender!r} "
                                f"(waiting for {self.kind!r} from {sorted(self.peers)})")
        self.peers.discard(env.sender)
        self.got[env.sender] = msg
        if self.peers:
            return None
        got, self.kind = self.got, ""
        return got


class _Peers(Protocol):
    """Shared helpers of the active protocols."""

    def __init__(self, me: str, passives: list[str]) -> None:
        super().__init__()
        if len(set(passives)) != len(passives) or me in passives:
            raise BoostError(f"passive parties must be distinct and not {me!r}: {passives}")
        self.me, self.passives = me, list(passives)
        self.wait = _Waiting()

    def _receive(self, env: Envelope) -> tuple[Any, dict[str, Any] | None]:
        if env.sender not in self.passives:
            raise ProtocolError(f"SecureBoost: message from {env.sender!r}, not a passive party")
        msg = m.decode(env)
        return msg, self.wait.take(env, msg)

    def _broadcast(self, msg: Any, peers: list[str] | None = None) -> list[Action]:
        data = m.encode(msg)
        return [Send(p, m.kind(msg), data) for p in (self.passives if peers is None else peers)]


class ActiveTrainer(_Peers):
    """Trains a model with the passive parties; the result is an :class:`ActiveModel`."""

    name, title = "secureboost", "SecureBoost training"

    def __init__(
        self, me: str, passives: list[str], X: np.ndarray, columns: list[str], y: np.ndarray,
        params: BoostParams, backend: ActiveBackend, *, secure: bool,
        eval_sets: Sequence[EvalSet] = (), early_stopping_rounds: int | None = None,
        model_id: str | None = None, on_tree: TreeCallback | None = None,
        on_done: Callable[[ActiveModel], None] | None = None,
    ) -> None:
        super().__init__(me, passives)
        if early_stopping_rounds is not None and (not eval_sets or early_stopping_rounds < 1):
            raise BoostError("early_stopping_rounds needs an eval_set and must be >= 1")
        self.p, self.backend, self.secure = params, backend, secure
        self.floor = params.min_child_rows  # raised to the feature holders' floors (hellos)
        self.X, self.y, self.n = X, y, len(y)
        self.codes, self.edges = bin_matrix(X, params.max_bin)
        self.slots = slot_table(self.edges, params.max_bin)
        self.evals = list(eval_sets)
        self.eval_X = np.concatenate([e.X for e in self.evals]) if self.evals else None
        self.rounds = early_stopping_rounds
        self.on_tree, self.on_done = on_tree, on_done
        self.rng = np.random.default_rng(params.random_state)
        self.k = params.n_groups  # trees per round
        base = base_margin(params.objective, y, params.base_score, params.num_class)
        self.model = ActiveModel(model_id or uuid.uuid4().hex, me, params, base, columns, {})
        n_eval = 0 if self.eval_X is None else len(self.eval_X)
        shape = () if self.k == 1 else (self.k,)
        self.margin = np.broadcast_to(base, (self.n, *shape)).astype(np.float64)
        self.eval_margin = np.broadcast_to(base, (n_eval, *shape)).astype(np.float64)
        self.t, self.tree_due = 0, False
        self.best: tuple[float, int] | None = None
        self.stop_requested = False

    def progress(self) -> tuple[int, int]:
        return (len(self.model.trees) // self.k, self.p.n_estimators)

    def _column(self, margin: np.ndarray) -> np.ndarray:
        """The margins that the current tree adds to (a view): its class's, or all."""
        return margin if self.k == 1 else margin[:, self.t % self.k]

    def request_stop(self) -> None:
        """End training after the round being built, keeping the trees so far: the run then
        finishes as early stopping does (every passive party is told how many trees to keep).
        Safe to call from another thread; a request after the end changes nothing."""
        self.stop_requested = True

    # ------------------------------------------------------------------ setup
    def start(self) -> list[Action]:
        if not self.passives:
            return self._trees(self._start_tree())
        setup = m.Setup(m.VERSION, self.model.model_id, self.passives, self.p.max_bin,
                        self.secure, self.backend.setup_payload(), self.p.max_depth,
                        self.p.n_estimators * self.k, self.p.min_child_rows)
        self.wait.expect("boost/hello", self.passives)
        return self._broadcast(setup)

    def on_message(self, env: Envelope) -> list[Action]:
        msg, got = self._receive(env)
        if got is None:
            return []
        if isinstance(msg, m.Hello):
            return self._trees(self._on_hellos(got))
        if isinstance(msg, m.HistReply):
            return self._on_hists(got)
        if isinstance(msg, m.SplitReply):
            return self._trees(self._on_splits(got))
        return self._trees(self._after_tree(got))

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        return self._trees(self._computed(key, result))

    def _trees(self, actions: list[Action]) -> list[Action]:
        """Start the trees that are due; a loop, not recursion, for trees that need no
        message (no passive party, or none of its columns sampled)."""
        while self.tree_due and not self.done:
            self.tree_due = False
            actions += self._start_tree()
        return actions

    def _computed(self, key: Hashable, result: Any) -> list[Action]:
        if key == ("encrypt", self.t, self.depth):
            self.wait.expect("boost/hist_reply", self.participants)
            sample = m.bits(self.keep) if self.keep is not None and self.depth == 0 else b""
            return [Send(p, "boost/hist", m.encode(m.HistRequest(
                        self.t, self.depth, self._partitions_for(p), self.computed,
                        list(self.derived), self.p_feats[p].tolist(), result, sample)))
                    for p in self.participants]
        if key == ("decrypt", self.t, self.depth):
            return self._score(dict(zip(self.participants, result, strict=True)))
        raise InternalError(f"SecureBoost: unexpected computation {key!r}")

    def _on_hellos(self, got: dict[str, m.Hello]) -> list[Action]:
        problems = []
        n_eval = [len(e.y) for e in self.evals]
        for p in self.passives:
            h = got[p]
            if h.version != m.VERSION or h.model_id != self.model.model_id:
                problems.append(f"{p!r} runs another protocol version or session")
            elif h.n_rows != self.n:
                problems.append(f"{p!r} has {h.n_rows} rows, {self.me!r} has {self.n} "
                                "(align the rows with PSI first)")
            elif h.n_eval != n_eval:
                problems.append(f"{p!r} has eval sets of {h.n_eval} rows, {self.me!r} of "
                                f"{n_eval}")
            elif not h.columns:
                problems.append(f"{p!r} brings no feature columns")
            elif h.min_child_rows < self.p.min_child_rows:
                problems.append(f"{p!r} answers children of {h.min_child_rows} rows, below "
                                f"the setup's {self.p.min_child_rows}")
        if problems:
            raise BoostError("cannot train: " + "; ".join(problems))
        self.model.passives = {p: list(got[p].columns) for p in self.passives}
        self.candidates = {p: got[p].candidates for p in self.passives}
        # every party's floor holds: the strictest one decides which splits may be asked
        self.floor = max([self.p.min_child_rows, *(got[p].min_child_rows for p in got)])
        return self._start_tree()

    # ------------------------------------------------------------------- trees
    def _start_tree(self) -> list[Action]:
        p = self.p
        if self.k == 1:
            g, h = gradients(p.objective, self.margin, self.y)
        else:  # every tree of a round learns from the margins before the round
            if self.t % self.k == 0:
                self.round_gh = gradients(p.objective, self.margin, self.y)
            g, h = (a[:, self.t % self.k] for a in self.round_gh)
        self.keep: np.ndarray | None = None
        if p.subsample < 1:  # as XGBoost: rows left out of this tree get zero gradients
            self.keep = self.rng.random(self.n) < p.subsample
            g, h = np.where(self.keep, g, 0.0), np.where(self.keep, h, 0.0)
        self.g, self.h = g, h
        n_own = self.codes.shape[1]
        widths = [n_own] + [len(self.model.passives[q]) for q in self.passives]
        total = sum(widths)
        if p.colsample_bytree < 1:
            k = max(1, int(p.colsample_bytree * total))
            chosen = np.sort(self.rng.choice(total, k, replace=False))
        else:
            chosen = np.arange(total)
        bounds = np.cumsum([0, *widths])
        self.own_feats = chosen[chosen < n_own]
        self.p_feats = {q: chosen[(chosen >= lo) & (chosen < hi)] - lo
                        for q, lo, hi in zip(self.passives, bounds[1:-1], bounds[2:], strict=True)}
        self.participants = [q for q in self.passives if len(self.p_feats[q])]
        self.owners = [(self.me, int(f)) for f in self.own_feats] + [
            (q, int(f)) for q in self.participants for f in self.p_feats[q]]
        self.own_codes = self.codes[:, self.own_feats]
        self.own_slots = self.slots[self.own_feats]
        self.nodes = {0: Node(0, 0, cover=float(h.sum()))}
        self.rows = {0: np.arange(self.n)}
        self.sums = {0: (float(g.sum()), float(h.sum()))}
        self.next_id, self.depth = 1, 0
        self.split_prev: list[int] = []
        self.partitions: list[tuple[int, int, int, str, bytes]] = []
        self.prev_hists: dict[int, np.ndarray] = {}
        self.own_counts: dict[int, np.ndarray] = {}
        self.passive_usable: dict[str, np.ndarray] = {}
        self.open = [0] if self._can_split(0) else []
        return self._level()

    @property
    def tolerance(self) -> float:
        """The backend's error bound of decrypted sums (it may grow with the request)."""
        return float(getattr(self.backend, "tolerance", 0.0))

    def _sampled(self, rows: np.ndarray) -> np.ndarray:
        """The rows that carry gradients in this tree (its sample)."""
        return rows if self.keep is None else rows[self.keep[rows]]

    def _can_split(self, nid: int) -> bool:
        """Deep enough to grow, and enough rows for two children of the floor's size."""
        return (self.nodes[nid].depth < self.p.max_depth
                and len(self._sampled(self.rows[nid])) >= max(2, 2 * self.floor)
                and self.sums[nid][1] > self.tolerance)

    def _level(self) -> list[Action]:
        if not self.open:
            return self._end_tree()
        self.derived: dict[int, tuple[int, int]] = {}  # larger child -> (parent, smaller)
        for parent in self.split_prev:
            a, b = self.nodes[parent].left, self.nodes[parent].right
            if a in self.open and b in self.open:
                small, big = (a, b) if len(self.rows[a]) <= len(self.rows[b]) else (b, a)
                self.derived[big] = (parent, small)
        self.computed = [n for n in self.open if n not in self.derived]
        nodes = [self.rows[n] for n in self.computed]
        self.own_hist = node_histograms(self.g, self.h, nodes, self.own_codes, self.own_slots)
        self.own_counts = level_counts(
            {n: self.own_codes[self._sampled(self.rows[n])] for n in self.computed},
            self.derived, self.own_counts)
        self.own_usable = {n: usable_slots(self.own_counts[n], self.own_slots, self.floor)
                           for n in self.open}
        if not self.participants:
            return self._score({})
        # the most candidate columns a feature holder may answer with (a layout hint)
        columns = 0
        for q in self.participants:
            cap = len(self.p_feats[q]) * self.p.max_bin
            columns = max(columns, min(cap, self.candidates.get(q) or cap))
        return [Compute(("encrypt", self.t, self.depth), encrypt,
                        (self.backend, self.g, self.h, nodes, columns))]

    def _partitions_for(self, peer: str) -> list[m.Partition]:
        return [m.Partition(node, left, right, b"" if owner == peer else mask)
                for node, left, right, owner, mask in self.partitions]

    def _on_hists(self, got: dict[str, m.HistReply]) -> list[Action]:
        for q, r in got.items():
            if (r.tree, r.depth) != (self.t, self.depth):
                raise ProtocolError(f"SecureBoost: {q!r} answered for tree {r.tree} level "
                                    f"{r.depth}; expected tree {self.t} level {self.depth}")
        n_asked, n_slots = len(self.computed) + len(self.derived), self.p.max_bin
        self.passive_usable = {q: m.unbits(got[q].usable, (n_asked, len(self.p_feats[q]),
                                                           n_slots), q)
                               for q in self.participants}
        return [Compute(("decrypt", self.t, self.depth), decrypt_all,
                        (self.backend, [got[q].crypto for q in self.participants],
                         len(self.computed), [len(self.p_feats[q]) for q in self.participants],
                         self.p.max_bin))]

    def _score(self, passive_hists: dict[str, np.ndarray]) -> list[Action]:
        parts = [self.own_hist] + [passive_hists[q] for q in self.participants]
        computed = np.concatenate(parts, axis=1)
        hists = {n: computed[i] for i, n in enumerate(self.computed)}
        for big, (parent, small) in self.derived.items():
            hists[big] = self.prev_hists[parent] - hists[small]
        usable = self._usable()
        splits = best_splits(np.stack([hists[n] for n in self.open]),
                             np.array([self.sums[n] for n in self.open]), self.p,
                             self.tolerance, np.stack([usable[n] for n in self.open]))
        self.prev_hists = {}
        self.level_masks: dict[int, np.ndarray] = {}
        self.expected: dict[int, float] = {}
        asks: dict[str, list[m.Choice]] = {}
        for nid, s in zip(self.open, splits, strict=True):
            if s is None:
                continue
            self.prev_hists[nid] = hists[nid]
            node = self.nodes[nid]
            node.owner, node.feature = self.owners[s.feature]
            node.gain, node.default_left = s.gain, s.default_left
            if node.owner == self.me:
                col = node.feature
                codes = self.codes[self.rows[nid], col]
                sampled = codes if self.keep is None else codes[self.keep[self.rows[nid]]]
                t = canonical_threshold(sampled, int(self.slots[col, s.slot]), s.default_left)
                node.threshold = threshold_value(self.edges[col], t)
                self.level_masks[nid] = codes_left(codes, t, s.default_left)
            else:
                hl = hists[nid][s.feature, s.slot, 1]
                if s.default_left:
                    hl += self.sums[nid][1] - hists[nid][s.feature, 0, 1]
                self.expected[nid] = float(hl)
                asks.setdefault(node.owner, []).append(
                    m.Choice(nid, node.feature, s.slot, s.default_left))
        if not asks:
            return self._children()
        self.asks = asks
        self.wait.expect("boost/split_reply", list(asks))
        return [Send(q, "boost/split", m.encode(m.SplitRequest(self.t, self.depth, c)))
                for q, c in asks.items()]

    def _usable(self) -> dict[int, np.ndarray]:
        """(F, S) candidate splits of each open node that leave the floor's rows on each
        side, in the column order of the scored histograms (own, then each participant's,
        as the feature holders reported them)."""
        index = {n: i for i, n in enumerate([*self.computed, *self.derived])}
        return {n: np.concatenate([self.own_usable[n], *(self.passive_usable[q][index[n]]
                                                       for q in self.participants)], axis=0)
                for n in self.open}

    def _on_splits(self, got: dict[str, m.SplitReply]) -> list[Action]:
        for q, reply in got.items():
            asked = self.asks[q]
            if ((reply.tree, reply.depth) != (self.t, self.depth)
                    or len(reply.records) != len(asked) or len(reply.masks) != len(asked)):
                raise ProtocolError(f"SecureBoost: {q!r} answered splits out of turn")
            for c, rec, data in zip(asked, reply.records, reply.masks, strict=True):
                mask = m.unbits(data, (len(self.rows[c.node]),), q)
                hl = float(self.h[self.rows[c.node][mask]].sum())
                want = self.expected[c.node]
                if abs(hl - want) > 1e-6 * max(1.0, self.sums[c.node][1]) + 10 * self.tolerance:
                    raise ProtocolError(f"SecureBoost: {q!r} split node {c.node} other than "
                                        "its histogram said (models out of sync?)")
                self.nodes[c.node].record = rec
                self.level_masks[c.node] = mask
        return self._children()

    def _children(self) -> list[Action]:
        self.partitions, self.split_prev, children = [], [], []
        for nid in self.open:
            mask = self.level_masks.get(nid)
            if mask is None:
                continue
            node, rows = self.nodes[nid], self.rows.pop(nid)
            node.left, node.right = self.next_id, self.next_id + 1
            self.next_id += 2
            for cid, sel in ((node.left, mask), (node.right, ~mask)):
                self.rows[cid] = rows[sel]
                gs, hs = float(self.g[rows[sel]].sum()), float(self.h[rows[sel]].sum())
                self.sums[cid] = (gs, hs)
                self.nodes[cid] = Node(cid, node.depth + 1, cover=hs)
                children.append(cid)
            self.partitions.append((nid, node.left, node.right, node.owner, m.bits(mask)))
            self.split_prev.append(nid)
        self.depth += 1
        self.open = [c for c in children if self._can_split(c)]
        return self._level()

    def _end_tree(self) -> list[Action]:
        tree = [self.nodes[i] for i in sorted(self.nodes)]
        for node in tree:
            if node.is_leaf:
                node.weight = leaf_weight(*self.sums[node.id], self.p)
                self._column(self.margin)[self.rows[node.id]] += node.weight
        self.model.trees.append(tree)
        self.model.tree_class.append(self.t % self.k)
        out: list[Action] = []
        for q in self.passives:
            view = [m.TreeNode(n.id, n.left, n.right, n.record if n.owner == q else -1)
                    for n in tree]
            out.append(Send(q, "boost/tree", m.encode(m.TreeMsg(self.t, view))))
        if self.eval_X is None or not self.passives:
            return out + self._after_tree({})
        self.wait.expect("boost/eval_reply", self.passives)
        return out

    def _after_tree(self, got: dict[str, m.EvalReply]) -> list[Action]:
        tree, metrics, stop = self.model.trees[-1], {}, False
        if self.eval_X is not None:
            X = self.eval_X
            masks = tree_masks(tree, X, self.me)
            weights = np.array([n.weight for n in tree if n.is_leaf])
            for q, reply in got.items():
                if reply.tree != self.t:
                    raise ProtocolError(f"SecureBoost: {q!r} evaluated tree {reply.tree}; "
                                        f"expected {self.t}")
                masks &= m.unbits(reply.masks, masks.shape, q)
            if len(X) and (masks.sum(axis=0) != 1).any():
                raise ProtocolError("SecureBoost: the parties' leaf masks of the eval rows do "
                                    "not single out one leaf per row")
            self._column(self.eval_margin)[:] += weights @ masks
        self.t += 1
        if self.t % self.k:  # the round goes on: metrics and stopping are per round
            self.tree_due = True
            return []
        rnd = self.t // self.k - 1
        if self.eval_X is not None:
            stop = self._record_evals(metrics, rnd)
        if self.on_tree is not None:
            metrics[f"train-{self.p.metric}"] = evaluate(self.p.metric, self.p.objective,
                                                         self.y, self.margin)
            self.on_tree(rnd, self.p.n_estimators, metrics)
        if stop or self.stop_requested or rnd + 1 == self.p.n_estimators:
            return self._finish()
        self.tree_due = True
        return []

    def _record_evals(self, metrics: dict[str, float], rnd: int) -> bool:
        """Append this round's eval metrics; True when early stopping says stop."""
        start, value = 0, float("nan")
        for i, e in enumerate(self.evals):
            value = evaluate(self.p.metric, self.p.objective, e.y,
                             self.eval_margin[start : start + len(e.y)])
            start += len(e.y)
            self.model.evals_result.setdefault(f"validation_{i}", {}).setdefault(
                self.p.metric, []).append(value)
            metrics[f"validation_{i}-{self.p.metric}"] = value
        if self.rounds is None:
            return False
        better = (self.best is None or (value > self.best[0] if self.p.metric in MAXIMIZE
                                        else value < self.best[0]))
        if better:
            self.best = (value, rnd)
        assert self.best is not None
        return rnd - self.best[1] >= self.rounds

    def _finish(self) -> list[Action]:
        model = self.model
        if self.best is not None:
            model.best_score, model.best_iteration = self.best
            model.trees = model.trees[: (model.best_iteration + 1) * self.k]
            model.tree_class = model.tree_class[: len(model.trees)]
        self.done, self.result = True, model
        if self.on_done is not None:
            self.on_done(model)
        return self._broadcast(m.Finish(len(model.trees)))


class ActivePredictor(_Peers):
    """One federated prediction round over the rows of ``X`` (own columns, aligned with
    the passives' rows); the result is the margin of every row."""

    name, title = "secureboost-predict", "SecureBoost prediction"

    def __init__(self, me: str, model: ActiveModel, X: np.ndarray,
                 batch_rows: int | None = None) -> None:
        super().__init__(me, list(model.passives))
        self.model, self.X, self.n = model, X, len(X)
        n_leaves = max(1, model.n_leaves)
        self.batch = batch_rows or max(8, (PREDICT_BUDGET * 8 // n_leaves) // 8 * 8)
        self.starts = list(range(0, self.n, self.batch)) or [0]
        self.k = 0
        self.margin = np.zeros((self.n, *(() if model.n_groups == 1 else (model.n_groups,))))

    def progress(self) -> tuple[int, int]:
        return (self.k, len(self.starts))

    def start(self) -> list[Action]:
        if not self.passives:
            self.done, self.result = True, self.model.combine(self.model.own_masks(self.X))
            return []
        self.wait.expect("boost/predict_hello", self.passives)
        return []

    def _request(self) -> list[Action]:
        lo = self.starts[self.k]
        hi = min(self.n, lo + self.batch)
        self.wait.expect("boost/predict_reply", self.passives)
        return self._broadcast(m.PredictRequest(self.k, lo, hi, self.k == len(self.starts) - 1))

    def on_message(self, env: Envelope) -> list[Action]:
        msg, got = self._receive(env)
        if got is None:
            return []
        if isinstance(msg, m.PredictHello):
            problems = []
            for q, h in got.items():
                if h.version != m.VERSION or h.model_id != self.model.model_id:
                    problems.append(f"{q!r} holds the part of another model")
                elif h.n_trees != len(self.model.trees):
                    problems.append(f"{q!r} holds {h.n_trees} trees, {self.me!r} "
                                    f"{len(self.model.trees)}")
                elif h.n_rows != self.n:
                    problems.append(f"{q!r} has {h.n_rows} rows, {self.me!r} has {self.n}")
            if problems:
                raise BoostError("cannot predict: " + "; ".join(problems))
            return self._request()
        lo = self.starts[self.k]
        hi = min(self.n, lo + self.batch)
        masks = self.model.own_masks(self.X[lo:hi])
        for q, reply in got.items():
            if reply.batch != self.k:
                raise ProtocolError(f"SecureBoost: {q!r} answered batch {reply.batch}; "
                                    f"expected {self.k}")
            masks &= m.unbits(reply.masks, masks.shape, q)
        self.margin[lo:hi] = self.model.combine(masks)
        self.k += 1
        if self.k < len(self.starts):
            return self._request()
        self.done, self.result = True, self.margin
        return []
