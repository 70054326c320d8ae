"""A party's privacy budget, persisted in SQLite so it survives kernel restarts.

Every differentially private release spends part of a fixed ``(epsilon, delta)`` budget
under basic (sequential) composition. :meth:`PrivacyLedger.spend` checks and records a
spend in one ``BEGIN IMMEDIATE`` transaction, so concurrent threads or processes that
share the file can never overspend together.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from fedlab_kit.dp.errors import BudgetExceeded, DPError

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budget (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        party TEXT NOT NULL,
        total_epsilon REAL NOT NULL,
        total_delta REAL NOT NULL,
        created TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS releases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        query TEXT NOT NULL,
        mechanism TEXT NOT NULL,
        noise_scale REAL,
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        meta TEXT NOT NULL)""",
)
RELEASE_COLUMNS = ("id", "time", "query", "mechanism", "noise_scale", "epsilon", "delta", "meta")
DEFAULT_PARTY = "local"


class Budget(NamedTuple):
    """An ``(epsilon, delta)`` pair."""

    epsilon: float
    delta: float


def check_epsilon(epsilon: float, what: str = "epsilon") -> float:
    """Return ``epsilon`` as a float, or raise DPError unless it is finite and > 0."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise DPError(f"{what} must be a number, got {epsilon!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise DPError(f"{what} must be a finite number > 0, got {epsilon!r}")
    return value


def check_delta(delta: float, what: str = "delta") -> float:
    """Return ``delta`` as a float, or raise DPError unless 0 <= delta < 1."""
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise DPError(f"{what} must be a number, got {delta!r}") from None
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise DPError(f"{what} must be in [0, 1), got {delta!r}")
    return value


def _left(total: float, spent: list[float]) -> float:
    """``total - sum(spent)``, correctly rounded, never below zero."""
    return max(0.0, math.fsum([total, *(-s for s in spent)]))


def _meta_json(meta: Mapping[str, Any] | None) -> str:
    def plain(obj: Any) -> Any:
        if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
            return obj.item()
        if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
            return obj.tolist()
        # json's ``default`` hook must raise TypeError; it becomes a DPError just below
        raise TypeError(f"meta value {obj!r} is not JSON serialisable")

    try:
        return json.dumps(dict(meta or {}), sort_keys=True, default=plain)
    except (TypeError, ValueError) as exc:
        raise DPError(f"release meta must be JSON serialisable: {exc}") from None


class PrivacyLedger:
    """One party's privacy budget and the list of its releases, in a SQLite file.

    The total budget is stored when the file is created; opening an existing file
    reopens the same budget (see :meth:`open`). Opening it with a different total or
    party is refused, because a budget must never be silently enlarged.
    """

    def __init__(self, path: str | os.PathLike[str], total_epsilon: float,
                 total_delta: float = 0.0, party: str | None = None, *,
                 timeout: float = 30.0) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise DPError("a privacy ledger needs a file path, not an in-memory database")
        self.path = Path(path)
        self._timeout = float(timeout)
        total = Budget(check_epsilon(total_epsilon, "total_epsilon"),
                       check_delta(total_delta, "total_delta"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.party, self.total = self._init_budget(party, total)
        self._listeners: list[Callable[[int], None]] = []

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(release_id)`` after every release recorded through this object
        (e.g. a panel that shows the budget); returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners \
            else None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_listeners": []}  # listeners stay in their process

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, timeout: float = 30.0) -> PrivacyLedger:
        """Reopen an existing ledger with the budget and party stored in it."""
        if not Path(path).is_file():
            raise DPError(f"no privacy ledger at {str(path)!r}")
        try:
            con = sqlite3.connect(Path(path), timeout=timeout)
            try:
                row = con.execute(
                    "SELECT party, total_epsilon, total_delta FROM budget").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise DPError(f"{str(path)!r} is not a privacy ledger: {exc}") from None
        if row is None:
            raise DPError(f"{str(path)!r} is not a privacy ledger: it has no budget")
        return cls(path, row[1], row[2], row[0], timeout=timeout)

    @contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction; ``immediate`` takes the write lock at once."""
        con = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _init_budget(self, party: str | None, total: Budget) -> tuple[str, Budget]:
        with self._transaction(immediate=True) as con:
            for statement in _SCHEMA:
                con.execute(statement)
            row = con.execute(
                "SELECT party, total_epsilon, total_delta FROM budget").fetchone()
            if row is None:
                name = party or DEFAULT_PARTY
                con.execute("INSERT INTO budget VALUES (1, ?, ?, ?, ?)",
                            (name, total.epsilon, total.delta, _now()))
                return name, total
        stored = Budget(float(row[1]), float(row[2]))
        if stored != total or (party is not None and party != row[0]):
            raise DPError(
                f"the privacy ledger at {str(self.path)!r} belongs to party {row[0]!r} with"
                f" total epsilon={stored.epsilon:.10g}, delta={stored.delta:.10g}; refusing to"
                f" open it as party {party or row[0]!r} with epsilon={total.epsilon:.10g},"
                f" delta={total.delta:.10g}. A budget cannot be changed once created; use"
                " PrivacyLedger.open(path) to reopen it as stored")
        return row[0], stored

    @staticmethod
    def _spent_lists(con: sqlite3.Connection) -> tuple[list[float], list[float]]:
        rows = con.execute("SELECT epsilon, delta FROM releases").fetchall()
        return [float(r[0]) for r in rows], [float(r[1]) for r in rows]

    def _remaining(self, con: sqlite3.Connection) -> Budget:
        eps, delta = self._spent_lists(con)
        return Budget(_left(self.total.epsilon, eps), _left(self.total.delta, delta))

    def _fits(self, con: sqlite3.Connection, epsilon: float, delta: float) -> bool:
        eps, dels = self._spent_lists(con)
        return (math.fsum([*eps, epsilon]) <= self.total.epsilon
                and math.fsum([*dels, delta]) <= self.total.delta)

    def _refuse_unless_fits(self, con: sqlite3.Connection, query: str, epsilon: float,
                            delta: float) -> None:
        if not self._fits(con, epsilon, delta):
            raise BudgetExceeded(query, self.party, (epsilon, delta), self._remaining(con),
                                 self.total)

    def spent(self) -> Budget:
        """The ``(epsilon, delta)`` spent so far (basic composition)."""
        with self._transaction() as con:
            eps, delta = self._spent_lists(con)
        return Budget(math.fsum(eps), math.fsum(delta))

    def remaining(self) -> Budget:
        """The ``(epsilon, delta)`` still available."""
        with self._transaction() as con:
            return self._remaining(con)

    def can_spend(self, epsilon: float, delta: float = 0.0) -> bool:
        """Whether a spend of ``(epsilon, delta)`` would be accepted right now."""
        epsilon, delta = check_epsilon(epsilon), check_delta(delta)
        with self._transaction() as con:
            return self._fits(con, epsilon, delta)

    def require(self, query: str, epsilon: float, delta: float = 0.0) -> None:
        """Raise :class:`BudgetExceeded` now if ``(epsilon, delta)`` does not fit: for a
        release paid in several parts, before the first part is spent."""
        epsilon, delta = check_epsilon(epsilon), check_delta(delta)
        with self._transaction() as con:
            self._refuse_unless_fits(con, query, epsilon, delta)

    def spend(self, query: str, mechanism: str, epsilon: float, delta: float = 0.0, *,
              noise_scale: float | None = None, meta: Mapping[str, Any] | None = None) -> int:
        """Record a release and return its id, or raise :class:`BudgetExceeded`.

        The check and the insert run in one ``BEGIN IMMEDIATE`` transaction, so two
        concurrent spends cannot both pass a check that only one of them fits.
        """
        epsilon, delta = check_epsilon(epsilon), check_delta(delta)
        if not isinstance(query, str) or not query.strip():
            raise DPError(f"a release needs a non-empty query name, got {query!r}")
        if noise_scale is not None and not (math.isfinite(noise_scale) and noise_scale >= 0):
            raise DPError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
        meta_text = _meta_json(meta)
        with self._transaction(immediate=True) as con:
            self._refuse_unless_fits(con, query, epsilon, delta)
            cur = con.execute(
                "INSERT INTO releases (time, query, mechanism, noise_scale, epsilon, delta, meta)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), query, str(mechanism),
                 None if noise_scale is None else float(noise_scale), epsilon, delta,
                 meta_text))
            release_id = cur.lastrowid
        assert release_id is not None
        for listener in list(self._listeners):
            with suppress(Exception):  # a display must never undo or fail a release
                listener(int(release_id))
        return int(release_id)

    def releases(self) -> pd.DataFrame:
        """Every recorded release, oldest first (``meta`` is a JSON string)."""
        with self._transaction() as con:
            rows = con.execute(f"SELECT {', '.join(RELEASE_COLUMNS)} FROM releases"
                               " ORDER BY id").fetchall()
        frame = pd.DataFrame(rows, columns=list(RELEASE_COLUMNS))
        return frame.astype({"id": "int64", "epsilon": "float64", "delta": "float64",
                             "noise_scale": "float64"})

    def __repr__(self) -> str:
        return (f"PrivacyLedger({str(self.path)!r}, party={self.party!r},"
                f" total_epsilon={self.total.epsilon:.10g}, total_delta={self.total.delta:.10g})")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
