"""Training vertical logistic regression (sans-IO): one protocol for every party.

The loss is the logistic loss with the sigmoid replaced by its first-order Taylor expansion
at 0 (``sigma(z) ~ 1/2 + z/4``, as FATE's hetero-LR and SecretFlow's default ``t1``), plus
sklearn's L2 penalty ``||w||^2 / (2 C n)`` per row (not on the intercept): a quadratic in the
weights, so conjugate gradients with an exact line search minimise it in a few dozen
iterations, and no party ever needs a logit in the clear.

Iteration 0 computes the gradient at ``w = 0``, ``X^T (1/2 - y) / n``: only the label holder
contributes. Every later iteration computes ``H p = X^T (X p) / (4 n) + l2 p`` for the
current direction ``p`` (each party holds its block of ``w``, ``p`` and the residual ``r``):
each party contributes ``c_j = s X_j p_j / 4`` (``s`` a common scale keeping ``c`` in range),
every other party returns its masked inner products with ``c_j`` (:mod:`.backend`), and each
party ends with its own block of ``H p``. The step length and the next direction need four
sums over the parties (``r.r``, ``p.Hp``, ``r.Hp``, ``Hp.Hp``): each party sends its partial
sums to the label holder under zero-sum masks, and the label holder announces ``alpha``,
``beta`` and whether to stop. What each party learns is written in the README ("Vertical
logistic regression").
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InternalError, ProtocolError
from ..he.bfv import INNER
from ..he.inner import Layout, T
from ..protocol import Action, Compute, Envelope, Protocol, Send
from . import messages as m
from .backend import Crypto, local_sums, segments
from .errors import LinearError
from .fixed import (
    C_BITS,
    C_CLIP,
    X_BITS,
    centered,
    quantize,
    zero_sum_mask,
    zero_sum_scalars,
)
from .fixed import decode_scalar_sum as _sum_scalars
from .fixed import encode_scalars as _encode_scalars

IterationCallback = Callable[[int, int, float], None]
CODEC = m.CODEC
SEED_BYTES = 32
MIN_ROWS_PER_COLUMN = 4


@dataclass(frozen=True)
class LinearParams:
    """``C``: inverse L2 strength as in sklearn; ``tol``: stop when the gradient norm falls
    below ``tol`` times its value at 0; ``max_iter``: most conjugate-gradient iterations."""

    C: float = 1.0
    max_iter: int = 100
    tol: float = 1e-4
    fit_intercept: bool = True

    def check(self) -> LinearParams:
        if isinstance(self.C, bool) or not isinstance(self.C, int | float) or not self.C > 0 \
                or not math.isfinite(self.C):
            raise LinearError(f"C must be a positive number, got {self.C!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int | np.integer) \
                or self.max_iter < 1:
            raise LinearError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, int | float) \
                or not 0 <= self.tol < 1:
            raise LinearError(f"tol must be a number in [0, 1), got {self.tol!r}")
        if self.fit_intercept not in (True, False):
            raise LinearError(f"fit_intercept must be True or False, got "
                              f"{self.fit_intercept!r}")
        return self


@dataclass
class Fitted:
    """What training leaves at one party: its block of weights (on the standardised
    columns; the label holder's last one is the intercept when fitted), and the pairwise
    seeds for federated prediction."""

    model_id: str
    parties: list[str]
    weights: np.ndarray
    n_iter: int
    seeds: dict[str, bytes] = field(repr=False)
    gradient_norms: list[float] = field(default_factory=list)


def _encrypt(crypto: Crypto, c: np.ndarray, layout: Layout) -> bytes:
    return crypto.encrypt(c, layout)


def _products(crypto: Crypto, peer: str, data: memoryview, X: np.ndarray, layout: Layout
              ) -> tuple[bytes, np.ndarray]:
    return crypto.products(peer, data, X, layout)


def _decrypt(crypto: Crypto, data: memoryview, layout: Layout, n_rows: int, n_cols: int
             ) -> np.ndarray:
    return crypto.decrypt(data, layout, n_rows, n_cols)


class LinearTrainer(Protocol):
    """One party's side of training. The label holder passes ``y`` and the feature holders'
    names; a feature holder passes ``label_holder`` and learns the others from the setup.
    ``X`` is this party's standardised matrix (rows aligned by PSI)."""

    name, title = "linear", "logistic regression training"

    def __init__(
        self, me: str, X: np.ndarray, crypto: Crypto, *, y: np.ndarray | None = None,
        passives: list[str] | None = None, label_holder: str | None = None,
        params: LinearParams | None = None, model_id: str | None = None,
        on_iteration: IterationCallback | None = None,
        on_done: Callable[[Fitted], None] | None = None,
    ) -> None:
        super().__init__()
        self.me, self.crypto = me, crypto
        self.is_label = y is not None
        if self.is_label == (label_holder is not None):
            raise InternalError("pass y (label holder) or label_holder (feature holder)")
        self.label = me if self.is_label else str(label_holder)
        self.p = (params or LinearParams()).check()
        if self.is_label:
            passives = list(passives or [])
            if len(set(passives)) != len(passives) or me in passives:
                raise LinearError(f"feature holders must be distinct and not {me!r}: "
                                  f"{passives}")
            self.parties = [me, *passives]
            self.y = np.asarray(y, dtype=np.float64)
            if self.p.fit_intercept:
                X = np.hstack([X, np.ones((len(X), 1))])
        else:
            self.parties = []
        self.Xq = quantize(X, X_BITS, np.inf)  # callers clip (see fixed.scaled)
        self.Xd = self.Xq / float(1 << X_BITS)
        self.n, self.d = self.Xq.shape
        self.reg = np.zeros(self.d)  # the L2 per weight, set by _configure
        self.model_id = model_id or uuid.uuid4().hex
        self.on_iteration, self.on_done = on_iteration, on_done
        self.hellos: dict[str, m.Hello] = {}
        self.seeds: dict[str, bytes] = {}
        self.layout: Layout | None = None
        self.columns: dict[str, int] = {}
        self.k = -1  # the iteration being computed; -1 before the hellos
        self.setup: m.Setup | None = None
        self.w = np.zeros(self.d)
        self.r = np.zeros(self.d)
        self.dir = np.zeros(self.d)
        self.scale = 1.0
        self.own: np.ndarray | None = None  # own term of the current round
        self.got: dict[int, dict[str, np.ndarray]] = {}  # round -> contributor -> sums
        self.masks: dict[tuple[int, str], np.ndarray] = {}
        self.seen: set[tuple[str, str, int]] = set()
        self.scalars: dict[str, list[bytes]] = {}
        self.stop_requested = False
        self.norms: list[float] = []
        self.rr = self.rr0 = self.pp = 0.0
        self.hp = np.zeros(self.d)
        self.finished = -1  # the last iteration whose own block is complete
        self.early: list[Envelope] = []

    # ------------------------------------------------------------------ helpers
    @property
    def others(self) -> list[str]:
        return [q for q in self.parties if q != self.me]

    def contributors(self, k: int) -> list[str]:
        return [self.label] if k == 0 else list(self.parties)

    def progress(self) -> tuple[int, int]:
        return (max(self.k, 0), self.p.max_iter)

    def request_stop(self) -> None:
        """End training after the current iteration, keeping the weights so far (every
        party stops at the same iteration). Safe to call from another thread."""
        self.stop_requested = True

    def _hello_for(self, peer: str) -> Send:
        seed = self.seeds.setdefault(peer, os.urandom(SEED_BYTES)) if self.me < peer else b""
        hello = m.Hello(m.VERSION, self.model_id, self.n, self.d, self.crypto.public_key(),
                        seed)
        return CODEC.send(peer, hello)

    # ------------------------------------------------------------------ start
    def start(self) -> list[Action]:
        if not self.is_label:
            return []
        self.setup = m.Setup(m.VERSION, self.model_id, self.parties, self.n, self.p.max_iter,
                             self.p.tol, self._l2(), self.crypto.secure)
        self._configure()
        out: list[Action] = CODEC.broadcast(self.others, self.setup)
        out += [self._hello_for(q) for q in self.others]
        return out + self._maybe_begin()

    def _l2(self) -> float:
        return 1.0 / (self.p.C * self.n)

    def _configure(self) -> None:
        assert self.setup is not None
        self.reg = np.full(self.d, self.setup.l2)
        if self.is_label and self.p.fit_intercept:
            self.reg[-1] = 0.0

    # ------------------------------------------------------------------ messages
    def on_message(self, env: Envelope) -> list[Action]:
        msg, tail = CODEC.decode_with_data(env)
        if isinstance(msg, m.Setup):
            return self._on_setup(env.sender, msg)
        if isinstance(msg, m.Hello):
            return self._on_hello(env.sender, msg)
        if self.k < 0:  # a faster party's first round: replayed once all hellos are in
            if len(self.early) > 4 * len(self.parties) + 16:
                raise ProtocolError(f"logistic regression: {env.kind!r} from {env.sender!r} "
                                    "long before every party said hello")
            self.early.append(env)
            return []
        if env.sender not in self.parties:
            raise ProtocolError(f"logistic regression: message from {env.sender!r}, who "
                                "does not take part")
        if isinstance(msg, m.Contrib):
            return self._on_contrib(env.sender, msg.round, tail)
        if isinstance(msg, m.Product):
            return self._on_product(env.sender, msg.round, tail)
        if isinstance(msg, m.Sums):
            return self._on_sums(env.sender, msg.round, tail)
        if isinstance(msg, m.Scalars):
            return self._on_scalars(env.sender, msg)
        if isinstance(msg, m.Step):
            return self._on_step(env.sender, msg)
        raise ProtocolError(f"logistic regression: unexpected {env.kind!r} from "
                            f"{env.sender!r}")

    def _once(self, what: str, sender: str, k: int) -> None:
        key = (what, sender, k)
        if key in self.seen:
            raise ProtocolError(f"logistic regression: {sender!r} sent {what} for iteration "
                                f"{k} twice")
        self.seen.add(key)

    def _on_setup(self, sender: str, s: m.Setup) -> list[Action]:
        if self.is_label or sender != self.label or self.setup is not None:
            raise ProtocolError(f"logistic regression: unexpected setup from {sender!r}")
        if s.version != m.VERSION:
            raise LinearError(f"{sender!r} runs logistic regression protocol version "
                              f"{s.version}; this kit runs {m.VERSION}: upgrade one side")
        if not s.parties or s.parties[0] != sender or self.me not in s.parties \
                or len(set(s.parties)) != len(s.parties):
            raise ProtocolError(f"logistic regression: malformed party list from {sender!r}")
        if s.n_rows != self.n:
            raise LinearError(f"the label holder {sender!r} trains on {s.n_rows} rows but "
                              f"{self.me!r} has {self.n}: align the rows with PSI first")
        if s.secure != self.crypto.secure:
            raise LinearError(
                f"{sender!r} asked for an {'encrypted' if s.secure else 'unencrypted'} run "
                f"but {self.me!r} was started with insecure_plaintext="
                f"{not self.crypto.secure}: set the same on both sides")
        if not (0 < s.l2 < math.inf and 1 <= s.max_iter <= 100_000 and 0 <= s.tol < 1):
            raise ProtocolError(f"logistic regression: out-of-range settings from {sender!r}")
        self.setup, self.parties, self.model_id = s, list(s.parties), s.model_id
        self.p = LinearParams(1.0 / (s.l2 * self.n), s.max_iter, s.tol, False)
        self._configure()
        out: list[Action] = [self._hello_for(q) for q in self.others]
        return out + self._maybe_begin()

    def _on_hello(self, sender: str, h: m.Hello) -> list[Action]:
        if sender in self.hellos or sender == self.me:
            raise ProtocolError(f"logistic regression: a second hello from {sender!r}")
        self.hellos[sender] = h
        return self._maybe_begin() if self.setup is not None else []

    def _maybe_begin(self) -> list[Action]:
        if self.k >= 0 or any(q not in self.hellos for q in self.others):
            return []
        extra = set(self.hellos) - set(self.others)
        if extra:
            raise ProtocolError(f"logistic regression: hello from {sorted(extra)}, who do "
                                "not take part")
        for q in self.others:
            h = self.hellos[q]
            if h.version != m.VERSION or h.model_id != self.model_id:
                raise LinearError(f"{q!r} runs another protocol version or session")
            if h.n_rows != self.n:
                raise LinearError(f"{q!r} has {h.n_rows} rows but {self.me!r} has {self.n}: "
                                  "align the rows with PSI first (every party passes the "
                                  "same persons in the same order)")
            if not 0 <= h.n_columns <= 100_000:
                raise ProtocolError(f"logistic regression: {q!r} announced {h.n_columns} "
                                    "columns")
            if (self.me < q) == bool(h.seed) or (h.seed and len(h.seed) != SEED_BYTES):
                raise ProtocolError(f"logistic regression: bad mask seed from {q!r}")
            if h.seed:
                self.seeds[q] = bytes(h.seed)
            self.crypto.add_peer(q, bytes(h.public_key))
            self.columns[q] = h.n_columns
        self.columns[self.me] = self.d
        widest = max(self.columns, key=lambda q: self.columns[q])
        if self.n < MIN_ROWS_PER_COLUMN * self.columns[widest]:
            raise LinearError(
                f"{self.n} rows are too few for {widest!r}'s {self.columns[widest]} columns: "
                f"a party's first gradient holds one sum per column over the labels, and "
                f"with about as many columns as rows it would give the labels away (at least "
                f"{MIN_ROWS_PER_COLUMN} rows per column of every party)")
        self.layout = Layout.for_columns(max(self.columns.values()))
        self.k = 0
        out = self._begin_round()
        early, self.early = self.early, []
        for env in early:
            out += self.on_message(env)
        return out

    # ------------------------------------------------------------------ rounds
    def _contribution(self) -> np.ndarray:
        if self.k == 0:
            return quantize(0.5 - self.y, C_BITS, C_CLIP)
        return quantize(0.25 * self.scale * (self.Xd @ self.dir), C_BITS, C_CLIP)

    def _begin_round(self) -> list[Action]:
        assert self.layout is not None
        self.own = None
        out: list[Action] = []
        if self.me in self.contributors(self.k):
            c = self._contribution()
            self.own = local_sums(self.Xq, c, self.layout)
            if self.others:
                out.append(Compute(("encrypt", self.k), _encrypt, (self.crypto, c,
                                                                   self.layout)))
        return out + self._maybe_finish_round()

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        what = key[0] if isinstance(key, tuple) else None
        if what == "encrypt":
            return CODEC.broadcast(self.others, m.Contrib(key[1]), result)
        if what == "product":
            _, k, peer = key
            data, masks = result
            self.masks[(k, peer)] = masks
            return [CODEC.send(peer, m.Product(k), data)]
        if what == "decrypt":
            _, k, peer = key
            zmask = zero_sum_mask(self.me, [q for q in self.contributors(k) if q != peer],
                                  self.seeds, f"sums|{k}|{peer}".encode(), result.size,
                                  INNER.plain_bits)
            vals = (result.ravel() + zmask) % np.uint64(T)
            return [CODEC.send(peer, m.Sums(k), vals.astype("<u8").tobytes())]
        raise InternalError(f"logistic regression: unexpected computation {key!r}")

    def _on_contrib(self, sender: str, k: int, tail: memoryview) -> list[Action]:
        self._once("a contribution", sender, k)
        if k not in (self.k, self.k + 1) or sender not in self.contributors(k):
            raise ProtocolError(f"logistic regression: contribution for iteration {k} from "
                                f"{sender!r} while at iteration {self.k}")
        assert self.layout is not None
        return [Compute(("product", k, sender), _products,
                        (self.crypto, sender, tail, self.Xq, self.layout))]

    def _on_product(self, sender: str, k: int, tail: memoryview) -> list[Action]:
        self._once("products", sender, k)
        if k > self.k or self.me not in self.contributors(k):
            raise ProtocolError(f"logistic regression: products for iteration {k} from "
                                f"{sender!r}, which this party did not ask for")
        assert self.layout is not None
        return [Compute(("decrypt", k, sender), _decrypt,
                        (self.crypto, tail, self.layout, self.n, self.columns[sender]))]

    def _on_sums(self, sender: str, k: int, tail: memoryview) -> list[Action]:
        self._once("sums", sender, k)
        if k not in (self.k, self.k + 1) or sender not in self.contributors(k) \
                or sender == self.me:
            raise ProtocolError(f"logistic regression: sums for iteration {k} from "
                                f"{sender!r} while at iteration {self.k}")
        assert self.layout is not None
        shape = (len(segments(self.n, self.layout)), self.d)
        if len(tail) != 8 * shape[0] * shape[1]:
            raise ProtocolError(f"logistic regression: {sender!r} sent {len(tail)} bytes of "
                                f"sums; expected {8 * shape[0] * shape[1]}")
        self.got.setdefault(k, {})[sender] = np.frombuffer(tail, "<u8").reshape(shape)
        return self._maybe_finish_round() if k == self.k else []

    def _maybe_finish_round(self) -> list[Action]:
        k = self.k
        expected = [q for q in self.contributors(k) if q != self.me]
        got = self.got.get(k, {})
        if self.finished == k or any(q not in got for q in expected):
            return []
        self.finished = k
        total = np.zeros(self.d, dtype=np.int64)
        if expected:
            acc = np.zeros(got[expected[0]].shape, dtype=np.uint64)
            for q in expected:
                acc = (acc + got[q] - self.masks.pop((k, q))) % np.uint64(T)
            total += centered(acc).sum(axis=0)
        if self.own is not None:
            total += self.own.sum(axis=0)
        self.got.pop(k, None)
        u = total / float(1 << (X_BITS + C_BITS)) / self.n
        if k == 0:
            self.r = u + self.reg * self.w
            parts = [float(self.r @ self.r)]
        else:
            self.hp = u / self.scale + self.reg * self.dir
            parts = [float(self.dir @ self.hp), float(self.r @ self.hp),
                     float(self.hp @ self.hp)]
        mask = zero_sum_scalars(self.me, self.parties, self.seeds, f"scalars|{k}".encode(),
                                len(parts))
        values = _encode_scalars(parts, mask)
        if self.is_label:
            self.scalars[self.me] = values
            return self._maybe_step()
        return [CODEC.send(self.label, m.Scalars(k, values))]

    # ------------------------------------------------------------------ steps
    def _on_scalars(self, sender: str, s: m.Scalars) -> list[Action]:
        if not self.is_label or s.round != self.k or sender in self.scalars:
            raise ProtocolError(f"logistic regression: unexpected scalars from {sender!r} "
                                f"for iteration {s.round}")
        self.scalars[sender] = list(s.values)
        return self._maybe_step()

    def _maybe_step(self) -> list[Action]:
        if any(q not in self.scalars for q in self.parties):
            return []
        k, n_parts = self.k, 1 if self.k == 0 else 3
        sums = _sum_scalars(self.scalars.values(), n_parts)
        self.scalars = {}
        if k == 0:
            self.rr = self.rr0 = self.pp = max(sums[0], 0.0)
            alpha = beta = 0.0
            stop = self.rr0 == 0.0
        else:
            p_hp, r_hp, hp_hp = sums
            if not p_hp > 0:  # converged to the precision of the fixed point
                return self._announce(m.Step(k, 0.0, 0.0, 1.0, True))
            alpha = self.rr / p_hp
            rr = max(self.rr + 2 * alpha * r_hp + alpha * alpha * hp_hp, 0.0)
            beta = rr / self.rr if self.rr > 0 else 0.0
            self.rr, self.pp = rr, rr + beta * beta * self.pp
            stop = (k >= self.p.max_iter or self.stop_requested
                    or math.sqrt(rr) <= self.p.tol * math.sqrt(self.rr0))
        scale = 1.0 / math.sqrt(self.pp) if self.pp > 0 else 1.0
        return self._announce(m.Step(k, alpha, beta, scale, bool(stop or self.pp == 0)))

    def _announce(self, step: m.Step) -> list[Action]:
        out: list[Action] = CODEC.broadcast(self.others, step)
        return out + self._apply(step)

    def _on_step(self, sender: str, s: m.Step) -> list[Action]:
        if self.is_label or sender != self.label or s.round != self.k:
            raise ProtocolError(f"logistic regression: unexpected step from {sender!r} for "
                                f"iteration {s.round}")
        if not all(math.isfinite(v) for v in (s.alpha, s.beta, s.scale)) or s.scale <= 0:
            raise ProtocolError(f"logistic regression: a non-finite step from {sender!r}")
        return self._apply(s)

    def _apply(self, s: m.Step) -> list[Action]:
        if s.round == 0:
            self.dir = -self.r
        else:
            self.w = self.w + s.alpha * self.dir
            self.r = self.r + s.alpha * self.hp
            self.dir = -self.r + s.beta * self.dir
        self.scale = s.scale
        norm = math.sqrt(self.rr) if self.is_label else float("nan")
        self.norms.append(norm)
        if self.on_iteration is not None:
            self.on_iteration(s.round, self.p.max_iter, norm)
        if s.stop:
            self.done = True
            self.result = Fitted(self.model_id, list(self.parties), self.w.copy(), s.round,
                                 dict(self.seeds), self.norms)
            if self.on_done is not None:
                self.on_done(self.result)
            return []
        self.k += 1
        return self._begin_round()
