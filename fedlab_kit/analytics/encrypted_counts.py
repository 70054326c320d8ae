"""Joint grouped counts under CKKS: a chain of parties, one key holder (sans-IO).

The *key holder* (e.g. the retailer) encrypts per-row values; each *multiplier* in the
chain (e.g. the operator: "did this person visit a campaign store?") multiplies them slot
by slot with its own 0/1 row mask; the last party, the *grouper* (e.g. the media owner:
district and exposure), adds them up per group with :func:`~fedlab_kit.he.grouped_sums`,
adds DP noise under encryption and re-randomises; the key holder decrypts noisy sums only.

Who learns what: the key holder learns the noisy group sums (and the public plan: row
count, number of groups); multipliers and the grouper see only ciphertexts (CKKS, 128-bit
security) and the row count. The relay sees sizes. Rows must be PSI-aligned beforehand.

Message flow (kinds): every other party -> key holder ``ec/plan`` (row count, layout
wishes); key holder -> first in chain ``ec/data`` (public context + ciphertexts); each
multiplier -> next ``ec/data``; grouper -> key holder ``ec/result`` (ciphertexts + meta).
A party that refuses (bad input, budget, misaligned rows) stops through the driver, which
tells the others why.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import tenseal.sealapi as seal

from ..dp.errors import BudgetExceeded
from ..dp.ledger import PrivacyLedger, check_epsilon
from ..errors import InputError, ProtocolError
from ..he import PublicContext, RowLayout, SecretContext, SparseMask, grouped_sums
from ..he.ckks import SLOTS
from ..he.grouped import zero_product
from ..protocol import Action, Codec, Compute, Envelope, Protocol


class _Plan(msgspec.Struct, array_like=True):
    n_rows: int
    width: int = 0  # grouper only: slots per row it needs


class _Data(msgspec.Struct, array_like=True):
    n_rows: int
    width: int
    context: bytes
    cts: bytes


class _Result(msgspec.Struct, array_like=True):
    n_masks: int
    cts: bytes
    meta: bytes  # JSON from the grouper


CODEC = Codec("ec", {"plan": _Plan, "data": _Data, "result": _Result})
TITLE = "the joint count"


def check_budget(ledger: PrivacyLedger, epsilon: float, query: str) -> None:
    """Refuse before any data moves if ``ledger`` cannot pay ``epsilon``."""
    eps = check_epsilon(epsilon)
    left = ledger.remaining()
    if eps > left.epsilon:
        raise BudgetExceeded(query, ledger.party, (eps, 0.0), tuple(left), tuple(ledger.total))


@dataclass(frozen=True)
class CountsResult:
    """What the key holder gets: (n_masks, width) noisy sums and the grouper's metadata."""

    sums: np.ndarray
    meta: dict[str, Any]


class KeyHolder(Protocol):
    """Encrypts ``values`` (n_rows, V) replicated ``copies`` times per row (the grouper says
    how many) and decrypts the noisy sums at the end."""

    name, title = "encrypted-counts", TITLE

    def __init__(self, values: np.ndarray, chain: Sequence[str]) -> None:
        super().__init__()
        self.values = np.asarray(values, dtype=float)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if not np.isfinite(self.values).all():
            raise InputError("values to encrypt must be finite numbers")
        if not chain:
            raise InputError("the chain needs at least the grouper")
        self.chain = list(chain)
        self.plans: dict[str, _Plan] = {}
        self.secret: SecretContext | None = None
        self.layout: RowLayout | None = None

    def start(self) -> list[Action]:
        return []

    def on_message(self, env: Envelope) -> list[Action]:
        if env.sender not in self.chain:
            raise ProtocolError(f"encrypted counts: unexpected message from {env.sender!r}")
        msg = CODEC.decode(env, (_Plan, _Result))
        if isinstance(msg, _Plan):
            return self._on_plan(env, msg)
        res: _Result = msg
        if env.sender != self.chain[-1] or self.secret is None or self.layout is None:
            raise ProtocolError(f"encrypted counts: result from {env.sender!r} out of turn")
        cts = self.secret.load(res.cts, expect=res.n_masks)
        sums = np.stack([self.secret.decrypt(ct)[: self.layout.width] for ct in cts]) \
            if cts else np.zeros((0, self.layout.width))
        try:
            meta = msgspec.json.decode(res.meta)
        except msgspec.DecodeError as exc:
            raise ProtocolError("encrypted counts: grouper metadata is not JSON") from exc
        self.done, self.result = True, CountsResult(sums, meta)
        return []

    def _on_plan(self, env: Envelope, plan: _Plan) -> list[Action]:
        if env.sender in self.plans:
            raise ProtocolError(f"encrypted counts: {env.sender!r} sent its plan twice")
        n = len(self.values)
        if plan.n_rows != n:
            raise ProtocolError(
                f"encrypted counts: {env.sender!r} has {plan.n_rows} aligned rows, this party "
                f"has {n}; run PSI first and pass the aligned rows in PSI order")
        self.plans[env.sender] = plan
        if len(self.plans) < len(self.chain):
            return []
        width = self.plans[self.chain[-1]].width
        copies = width // self.values.shape[1]
        if copies < 1 or width > SLOTS:
            raise ProtocolError(f"encrypted counts: grouper asked for an invalid width {width}")
        self.layout = RowLayout(n, width)
        self.secret = SecretContext(depth=len(self.chain), rotations=self.layout.fold_steps)
        rows = np.zeros((n, width))
        rows[:, : copies * self.values.shape[1]] = np.repeat(self.values, copies, axis=1)
        cts = self.secret.encrypt_dump(self.layout.place(rows))
        data = _Data(n, width, self.secret.to_bytes(), cts)
        return [CODEC.send(self.chain[0], data)]


def _apply_row_mask(context: bytes, cts: bytes, n_rows: int, width: int,
                    mask: np.ndarray) -> bytes:
    """Multiplier work: ciphertexts times a 0/1 (n_rows, width) mask, rescaled."""
    ctx = PublicContext.from_bytes(context)
    layout = RowLayout(n_rows, width)
    items = ctx.load(cts, expect=layout.n_cts)
    out = []
    for ct, vec in zip(items, layout.place(mask.astype(float)), strict=True):
        if vec.any():
            res = seal.Ciphertext()
            ctx.evaluator.multiply_plain(ct, ctx.encode(vec, like=ct), res)
            ctx.evaluator.rescale_to_next_inplace(res)
        else:  # SEAL refuses a product that is a transparent zero
            res = zero_product(ctx, ct)
        ctx.rerandomise(res)
        out.append(res)
    return ctx.dump(out)


def _group(context: bytes, cts: bytes, n_rows: int, width: int,
           masks: list[SparseMask], noise: np.ndarray) -> bytes:
    """Grouper work: masked, folded sums + noise (one row of noise per mask), re-randomised."""
    ctx = PublicContext.from_bytes(context)
    layout = RowLayout(n_rows, width)
    items = ctx.load(cts, expect=layout.n_cts)
    out = []
    for ct, row_noise in zip(grouped_sums(ctx, items, layout, masks), noise, strict=True):
        ctx.add_plain(ct, np.tile(row_noise, layout.rows_per_ct))
        ctx.rerandomise(ct)
        out.append(ct)
    return ctx.dump(out)


class Multiplier(Protocol):
    """Multiplies the chain's ciphertexts by its 0/1 ``mask`` (n_rows, width) and passes them on.

    ``mask_for(width)`` builds the mask once the key holder has fixed the row width.
    """

    name, title = "encrypted-counts", TITLE

    def __init__(self, key_holder: str, n_rows: int, next_party: str,
                 mask_for: Callable[[int], np.ndarray]) -> None:
        super().__init__()
        self.key_holder, self.n_rows, self.next = key_holder, n_rows, next_party
        self.mask_for = mask_for

    def start(self) -> list[Action]:
        return [CODEC.send(self.key_holder, _Plan(self.n_rows))]

    def on_message(self, env: Envelope) -> list[Action]:
        data: _Data = CODEC.decode(env, _Data)
        if data.n_rows != self.n_rows:
            raise ProtocolError(f"encrypted counts: {data.n_rows} rows arrived, expected "
                                f"{self.n_rows}")
        mask = np.asarray(self.mask_for(data.width), dtype=bool)
        if mask.shape != (self.n_rows, data.width):
            raise ProtocolError(f"encrypted counts: mask shape {mask.shape} does not match "
                                f"{(self.n_rows, data.width)}")
        self._data = data
        return [Compute("mask", _apply_row_mask,
                        (data.context, data.cts, data.n_rows, data.width, mask))]

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        data = _Data(self._data.n_rows, self._data.width, self._data.context, result)
        self.done, self.result = True, {"rows": self.n_rows}
        return [CODEC.send(self.next, data)]


class Grouper(Protocol):
    """Adds up the chain's values per group under encryption, adds noise, returns the result.

    ``masks`` are sparse 0/1 masks over (row, slot-in-row) for rows of ``width`` slots;
    ``noise()`` is called only once the encrypted data has arrived and returns the
    (n_masks, width) noise to add (e.g. spent on the party's privacy ledger) and the JSON
    metadata sent with the result. Work is split into ``jobs`` computations.
    """

    name, title = "encrypted-counts", TITLE

    def __init__(self, key_holder: str, n_rows: int, width: int, masks: Sequence[SparseMask],
                 noise: Callable[[], tuple[np.ndarray, dict[str, Any]]], jobs: int = 2) -> None:
        super().__init__()
        self.key_holder, self.n_rows, self.width = key_holder, n_rows, width
        self.masks, self.noise, self.jobs = list(masks), noise, max(1, jobs)
        if not self.masks:
            raise InputError("nothing to count: no groups given")
        self.parts: dict[int, bytes] = {}

    def start(self) -> list[Action]:
        return [CODEC.send(self.key_holder, _Plan(self.n_rows, self.width))]

    def on_message(self, env: Envelope) -> list[Action]:
        data: _Data = CODEC.decode(env, _Data)
        if (data.n_rows, data.width) != (self.n_rows, self.width):
            raise ProtocolError(f"encrypted counts: got {data.n_rows} rows x {data.width} "
                                f"slots, expected {self.n_rows} x {self.width}")
        noise, meta = self.noise()
        noise = np.asarray(noise, dtype=float)
        if noise.shape != (len(self.masks), self.width):
            raise InputError(f"noise must have shape {(len(self.masks), self.width)}")
        self.meta = msgspec.json.encode(meta)
        bounds = np.linspace(0, len(self.masks), min(self.jobs, len(self.masks)) + 1).astype(int)
        self.n_jobs = len(bounds) - 1
        return [Compute(j, _group, (data.context, data.cts, data.n_rows, data.width,
                                    self.masks[a:b], noise[a:b]))
                for j, (a, b) in enumerate(itertools.pairwise(bounds))]

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        self.parts[int(key)] = result  # type: ignore[call-overload]
        if len(self.parts) < self.n_jobs:
            return []
        merged = [p for j in range(self.n_jobs)
                  for p in msgspec.msgpack.decode(self.parts[j], type=list[bytes])]
        res = _Result(len(merged), msgspec.msgpack.encode(merged), self.meta)
        self.done, self.result = True, {"masks": len(self.masks)}
        return [CODEC.send(self.key_holder, res)]
