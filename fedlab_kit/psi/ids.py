"""Turning a column of customer IDs into the byte strings PSI hashes, with a clear account
of every row that cannot take part.

IDs are typed: the integer ``42`` and the string ``"42"`` are *different* IDs (encoded as
``i:42`` and ``s:42``) unless ``normalize="str"`` maps every ID to its string form first.
``normalize="strip"`` / ``"lower"`` are ``"str"`` plus trimming (and lower-casing): every
ID, integers included, becomes text. Bytes are read as UTF-8 text (``b"alpha"`` is the ID
``"alpha"``), since columns of text often arrive as bytes. Integral floats (pandas turns an
integer column with a missing value into floats) count as integers. Nulls, empty strings
and bytes that are not UTF-8 are excluded and counted; duplicates are refused unless
``duplicates="first"`` keeps the first occurrence. The report's type counts are of the IDs
that take part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..errors import InputError

Normalize = Literal["str", "strip", "lower"] | None
DuplicatePolicy = Literal["raise", "first"]


class IdError(InputError):
    """The ID column cannot be used as given."""


@dataclass
class IdReport:
    """What happened to the input rows before PSI."""

    n_input: int
    n_used: int
    excluded: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)

    @property
    def n_excluded(self) -> int:
        return self.n_input - self.n_used

    def summary(self) -> str:
        parts = [f"{self.n_used} of {self.n_input} rows take part"]
        parts += [f"{n} excluded as {why} (e.g. {self.examples.get(why, [])[:3]})"
                  for why, n in self.excluded.items() if n]
        if len([t for t, n in self.types.items() if n]) > 1:
            parts.append(f"mixed ID types {self.types}: int 42 and str '42' differ unless "
                         "normalize='str'")
        return "; ".join(parts)


def _encode(value: Any, normalize: Normalize) -> tuple[bytes | None, str]:
    """(encoded key or None, type name or exclusion reason)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None, "null"
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "non-UTF-8 bytes"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None, "null"
        if not float(value).is_integer():
            return None, "non-integer float"
        value = int(value)
    if isinstance(value, bool | np.bool_):
        return None, "boolean"
    if isinstance(value, int | np.integer):
        if normalize is None:
            return b"i:" + str(int(value)).encode(), "int"
        value = str(int(value))
    if not isinstance(value, str):
        return None, f"unsupported type {type(value).__name__}"
    if normalize in ("strip", "lower"):
        value = value.strip()
    if normalize == "lower":
        value = value.lower()
    if value == "":
        return None, "empty"
    try:
        return b"s:" + value.encode("utf-8"), "str"
    except UnicodeEncodeError:
        return None, "non-UTF-8 string"


def _encode_plain(values: list[Any]) -> tuple[list[bytes], str] | None:
    """:func:`_encode` for a column of only non-empty strings or only ints (not bools), in
    one pass each; ``None`` for anything else (the general path decides)."""
    if not values:
        return None
    kind = type(values[0])
    if kind not in (str, int) or not all(type(v) is kind for v in values):
        return None
    if kind is int:
        return [b"i:%d" % v for v in values], "int"
    if "" in values:
        return None
    try:
        return [("s:" + v).encode("utf-8") for v in values], "str"
    except UnicodeEncodeError:  # lone surrogates: excluded row by row
        return None


def encode_ids(
    values: Iterable[Any] | pd.Series, *, normalize: Normalize = None, offset: int = 0,
    report: IdReport | None = None,
) -> tuple[list[bytes], np.ndarray, IdReport]:
    """Encode IDs (no duplicate check). Rows are input positions, counted from ``offset``."""
    if normalize not in (None, "str", "strip", "lower"):
        raise IdError(f"normalize must be None, 'str', 'strip' or 'lower', got {normalize!r}")
    if isinstance(values, pd.Series | pd.Index | np.ndarray):
        values = values.tolist()
    else:
        values = list(values)
    report = report or IdReport(0, 0)
    report.n_input += len(values)
    fast = _encode_plain(values) if normalize is None else None
    if fast is not None:  # every value a non-empty str, or every one an int
        keys_fast, what = fast
        report.types[what] = report.types.get(what, 0) + len(keys_fast)
        report.n_used += len(keys_fast)
        return keys_fast, np.arange(offset, offset + len(values), dtype=np.int64), report
    keys: list[bytes] = []
    rows: list[int] = []
    for row, value in enumerate(values, offset):
        key, what = _encode(value, normalize)
        if key is None:
            report.excluded[what] = report.excluded.get(what, 0) + 1
            examples = report.examples.setdefault(what, [])
            if len(examples) < 5:
                examples.append(f"row {row}: {value!r}")
            continue
        report.types[what] = report.types.get(what, 0) + 1
        keys.append(key)
        rows.append(row)
    report.n_used += len(keys)
    return keys, np.asarray(rows, dtype=np.int64), report


_TYPES = {b"i:": "int", b"s:": "str"}


def dedup(keys: list[bytes], rows: np.ndarray, policy: DuplicatePolicy,
          report: IdReport) -> tuple[list[bytes], np.ndarray]:
    """Refuse duplicates (``"raise"``) or keep each key's first row (``"first"``)."""
    if policy not in ("raise", "first"):
        raise IdError(f"duplicates must be 'raise' or 'first', got {policy!r}")
    if len(set(keys)) == len(keys):
        return keys, rows
    order = np.argsort(rows, kind="stable")
    seen: set[bytes] = set()
    keep: list[int] = []
    dupes: list[str] = []
    for i in order:
        if keys[i] in seen:
            if len(dupes) < 5:
                dupes.append(keys[i].decode(errors="replace")[2:])
            continue
        seen.add(keys[i])
        keep.append(int(i))
    n_dupes = len(keys) - len(keep)
    kept = set(keep)
    for i in range(len(keys)):  # type counts are of the IDs that take part
        if i not in kept:
            what = _TYPES[keys[i][:2]]
            report.types[what] = report.types.get(what, 0) - 1
    if policy == "raise":
        raise IdError(
            f"{n_dupes} duplicate IDs (e.g. {dupes}); PSI needs one row per customer: "
            "deduplicate first, or pass duplicates='first' to keep the first occurrence"
        )
    report.excluded["duplicate"] = report.excluded.get("duplicate", 0) + n_dupes
    examples = report.examples.setdefault("duplicate", [])
    examples.extend(dupes[: max(0, 5 - len(examples))])
    report.n_used -= n_dupes
    keep.sort()
    return [keys[i] for i in keep], rows[keep]


def prepare_ids(
    ids: Iterable[Any] | pd.Series, *, duplicates: DuplicatePolicy = "raise",
    normalize: Normalize = None,
) -> tuple[list[bytes], np.ndarray, IdReport]:
    """Encode IDs for hashing. Returns (keys, input row positions of the keys, report)."""
    if duplicates not in ("raise", "first"):
        raise IdError(f"duplicates must be 'raise' or 'first', got {duplicates!r}")
    keys, rows, report = encode_ids(ids, normalize=normalize)
    keys, rows = dedup(keys, rows, duplicates, report)
    return keys, rows, report
