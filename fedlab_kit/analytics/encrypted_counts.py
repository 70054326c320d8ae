"""Joint grouped counts under BFV: a chain of parties, one key holder (sans-IO).

The *key holder* (e.g. the retailer) encrypts per-row 0/1 values (exact integers, BFV);
each *multiplier* in the chain (e.g. the operator: "did this person visit a campaign
store?") multiplies them slot by slot with its own 0/1 row mask; the last party, the
*grouper* (e.g. the media owner: district and exposure), adds them up per group, adds DP
noise under encryption and floods each result (:meth:`~fedlab_kit.he.bfv.BfvPublic.flood`)
so that what the key holder decrypts is, within statistical distance 2^-40, a function of
the noisy group sums alone. The first evaluator also computes the input check
(:func:`~fedlab_kit.he.bfv.zero_one_check`) and the grouper folds it into every result, so a
key holder that encrypts anything but 0 and 1 gets noise back.

Who learns what: the key holder learns the noisy group sums (and the public plan: row
count, number of groups); multipliers and the grouper see only ciphertexts (BFV, 128-bit
security) and the row count. The relay sees sizes. Rows must be PSI-aligned beforehand.

Message flow (kinds): every other party -> key holder ``ec/plan`` (row count, layout
wishes); key holder -> first in chain ``ec/data`` (public context + ciphertexts); each
multiplier -> next ``ec/data`` (+ the input check); grouper -> key holder ``ec/result``.
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

from ..errors import InputError, ProtocolError
from ..he import RowLayout, SparseMask
from ..he.bfv import SLOTS, BfvPublic, BfvSecret, plain_modulus, zero_one_check
from ..protocol import Action, Codec, Compute, Envelope, Protocol


class _Plan(msgspec.Struct, array_like=True):
    n_rows: int
    width: int = 0  # grouper only: slots per row it needs


class _Data(msgspec.Struct, array_like=True):
    n_rows: int
    width: int
    context: bytes
    cts: bytes
    check: bytes = b""  # the folded input check, from the first evaluator on


#: evaluators in a chain: the noise budget holds two multipliers and the grouper with the
#: flooding margin (see ``tests/test_bfv.py``)
MAX_CHAIN = 3


class _Result(msgspec.Struct, array_like=True):
    n_masks: int
    cts: bytes
    meta: bytes  # JSON from the grouper


CODEC = Codec("ec", {"plan": _Plan, "data": _Data, "result": _Result})
TITLE = "the joint count"


@dataclass(frozen=True)
class CountsResult:
    """What the key holder gets: (n_masks, width) noisy sums and the grouper's metadata."""

    sums: np.ndarray
    meta: dict[str, Any]


class KeyHolder(Protocol):
    """Encrypts 0/1 ``values`` (n_rows, V) replicated ``copies`` times per row (the grouper
    says how many) and decrypts the noisy sums at the end."""

    name, title = "encrypted-counts", TITLE

    def __init__(self, values: np.ndarray, chain: Sequence[str]) -> None:
        super().__init__()
        self.values = np.asarray(values, dtype=float)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if not np.isin(self.values, (0.0, 1.0)).all():
            raise InputError("values to count must be 0 or 1")
        if len(self.values) >= plain_modulus() // 4:
            raise InputError(f"too many rows to count exactly: {len(self.values)}")
        if not chain:
            raise InputError("the chain needs at least the grouper")
        if len(chain) > MAX_CHAIN:
            raise InputError(f"a chain has at most {MAX_CHAIN} parties, got {len(chain)}")
        self.chain = list(chain)
        self.plans: dict[str, _Plan] = {}
        self.secret: BfvSecret | None = None
        self.layout: RowLayout | None = None

    def start(self) -> list[Action]:
        return []

    def progress(self) -> tuple[int, int]:
        """Plans in, data encrypted and sent, result decrypted."""
        return len(self.plans) + (self.secret is not None) + self.done, len(self.chain) + 2

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
            if cts else np.zeros((0, self.layout.width), np.int64)
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
        self.layout = RowLayout(n, width, slots=SLOTS)
        self.secret = BfvSecret(width)
        rows = np.zeros((n, width), np.int64)
        rows[:, : copies * self.values.shape[1]] = np.repeat(self.values, copies, axis=1)
        cts = self.secret.encrypt_dump(self.layout.place(rows))
        data = _Data(n, width, self.secret.to_bytes(), cts)
        return [CODEC.send(self.chain[0], data)]


def _apply_row_mask(context: bytes, cts: bytes, n_rows: int, width: int, mask: np.ndarray,
                    first: bool) -> tuple[bytes, bytes]:
    """Multiplier work: ciphertexts times a 0/1 (n_rows, width) mask; the first evaluator
    also computes the input check of the key holder's ciphertexts."""
    ctx = BfvPublic.from_bytes(context)
    layout = RowLayout(n_rows, width, slots=SLOTS)
    items = ctx.load(cts, expect=layout.n_cts)
    check = ctx.dump([zero_one_check(ctx, items)]) if first else b""
    out = [ctx.multiply(ct, vec) for ct, vec in
           zip(items, layout.place(mask.astype(np.int64)), strict=True)]
    return ctx.dump(out), check


def _check(context: bytes, cts: bytes, n_rows: int, width: int) -> bytes:
    """The input check when the grouper is the first evaluator."""
    ctx = BfvPublic.from_bytes(context)
    items = ctx.load(cts, expect=RowLayout(n_rows, width, slots=SLOTS).n_cts)
    return ctx.dump([zero_one_check(ctx, items)])


def _group(context: bytes, cts: bytes, check: bytes, n_rows: int, width: int,
           masks: list[SparseMask], noise: np.ndarray) -> bytes:
    """Grouper work on bytes (see :func:`grouped_counts`)."""
    ctx = BfvPublic.from_bytes(context)
    layout = RowLayout(n_rows, width, slots=SLOTS)
    items = ctx.load(cts, expect=layout.n_cts)
    (destruct,) = ctx.load(check, expect=1)
    return ctx.dump(grouped_counts(ctx, items, destruct, layout, masks, noise))


def grouped_counts(ctx: BfvPublic, items: list[seal.Ciphertext], destruct: seal.Ciphertext,
                   layout: RowLayout, masks: Sequence[SparseMask], noise: np.ndarray
                   ) -> list[seal.Ciphertext]:
    """Per mask the masked sums folded over rows, plus the DP noise (one row of noise per
    mask) and the input check, flooded: what goes back to the key holder. ``items`` are
    turned to NTT form in place."""
    ev = ctx.evaluator
    for ct in items:
        if not ct.is_ntt_form():
            ev.transform_to_ntt_inplace(ct)
    out = []
    for mask, row_noise in zip(masks, noise, strict=True):
        acc = masked_count(ctx, items, layout, mask)
        ctx.add_plain(acc, np.tile(row_noise, layout.rows_per_ct))
        ctx.self_destruct(acc, destruct)
        ctx.flood(acc)
        out.append(acc)
    return out


def masked_count(ctx: BfvPublic, items: list[seal.Ciphertext], layout: RowLayout,
                 mask: SparseMask) -> seal.Ciphertext:
    """The masked sums of one mask folded over rows (``items`` in NTT form): the
    deterministic part of a result."""
    acc = ctx.sum_products((items[b], ctx.encode(vec, ntt_like=items[b]))
                           for b, vec in layout.place_sparse(mask).items())
    if acc is None:  # an empty group
        return ctx.encrypt(np.zeros(SLOTS, np.int64))
    ctx.fold(acc)
    return acc


class Multiplier(Protocol):
    """Multiplies the chain's ciphertexts by its ``mask`` (n_rows, width) and passes them on.

    ``mask_for(width)`` builds the mask once the key holder has fixed the row width: 0/1,
    or small whole numbers (a slot that adds up several 0/1 factors, e.g. over campaigns),
    as long as the largest possible sum stays below a quarter of the plaintext modulus.
    """

    name, title = "encrypted-counts", TITLE

    def __init__(self, key_holder: str, n_rows: int, next_party: str,
                 mask_for: Callable[[int], np.ndarray]) -> None:
        super().__init__()
        self.key_holder, self.n_rows, self.next = key_holder, n_rows, next_party
        self.mask_for = mask_for

    def start(self) -> list[Action]:
        return [CODEC.send(self.key_holder, _Plan(self.n_rows))]

    def progress(self) -> tuple[int, int]:
        """Data in, masked data passed on."""
        return hasattr(self, "_data") + self.done, 2

    def on_message(self, env: Envelope) -> list[Action]:
        data: _Data = CODEC.decode(env, _Data)
        if data.n_rows != self.n_rows:
            raise ProtocolError(f"encrypted counts: {data.n_rows} rows arrived, expected "
                                f"{self.n_rows}")
        mask = np.asarray(self.mask_for(data.width))
        if mask.shape != (self.n_rows, data.width):
            raise ProtocolError(f"encrypted counts: mask shape {mask.shape} does not match "
                                f"{(self.n_rows, data.width)}")
        if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.integer):
            raise ProtocolError(f"encrypted counts: the mask must be 0/1 or whole numbers, "
                                f"not {mask.dtype}")
        mask = mask.astype(np.int64)
        top = int(mask.max(initial=0))
        if mask.min(initial=0) < 0 or top * max(self.n_rows, 1) >= plain_modulus() // 4:
            raise ProtocolError(f"encrypted counts: mask values must be in [0, "
                                f"{plain_modulus() // 4 // max(self.n_rows, 1)}) for "
                                f"{self.n_rows} rows")
        self._data = data
        return [Compute("mask", _apply_row_mask,
                        (data.context, data.cts, data.n_rows, data.width, mask,
                         not data.check))]

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        cts, check = result
        data = _Data(self._data.n_rows, self._data.width, self._data.context, cts,
                     check or self._data.check)
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

    def progress(self) -> tuple[int, int]:
        """Data in, each job of sums computed, result sent."""
        jobs = min(self.jobs, len(self.masks))
        return hasattr(self, "_data") + len(self.parts) + self.done, jobs + 2

    def on_message(self, env: Envelope) -> list[Action]:
        data: _Data = CODEC.decode(env, _Data)
        if (data.n_rows, data.width) != (self.n_rows, self.width):
            raise ProtocolError(f"encrypted counts: got {data.n_rows} rows x {data.width} "
                                f"slots, expected {self.n_rows} x {self.width}")
        noise, meta = self.noise()
        noise = np.asarray(noise)
        if noise.shape != (len(self.masks), self.width):
            raise InputError(f"noise must have shape {(len(self.masks), self.width)}")
        if not np.array_equal(noise, np.rint(noise)):
            raise InputError("noise for exact counts must be whole numbers")
        self.noise_values = noise.astype(np.int64)
        self.meta = msgspec.json.encode(meta)
        self._data = data
        if not data.check:  # the grouper is the first evaluator: it checks the inputs
            return [Compute("check", _check, (data.context, data.cts, data.n_rows, data.width))]
        return self._jobs(data.check)

    def _jobs(self, check: bytes) -> list[Action]:
        data, noise = self._data, self.noise_values
        bounds = np.linspace(0, len(self.masks), min(self.jobs, len(self.masks)) + 1).astype(int)
        self.n_jobs = len(bounds) - 1
        return [Compute(j, _group, (data.context, data.cts, check, data.n_rows, data.width,
                                    self.masks[a:b], noise[a:b]))
                for j, (a, b) in enumerate(itertools.pairwise(bounds))]

    def on_computed(self, key: Hashable, result: Any) -> list[Action]:
        if key == "check":
            return self._jobs(result)
        self.parts[int(key)] = result  # type: ignore[call-overload]
        if len(self.parts) < self.n_jobs:
            return []
        merged = [p for j in range(self.n_jobs)
                  for p in msgspec.msgpack.decode(self.parts[j], type=list[bytes])]
        res = _Result(len(merged), msgspec.msgpack.encode(merged), self.meta)
        self.done, self.result = True, {"masks": len(self.masks)}
        return [CODEC.send(self.key_holder, res)]
