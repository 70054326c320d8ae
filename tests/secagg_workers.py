"""Party processes of the secure-aggregation end-to-end tests."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def vectors(name: str, rounds: int, size: int) -> list[np.ndarray]:
    """A party's vectors (integers, so sums are exact), the same in the test process."""
    rng = np.random.default_rng(sum(map(ord, name)))
    return [rng.integers(-10 ** 6, 10 ** 6, size).astype(float) for _ in range(rounds)]


def secure_sum_party(key: str, invitation: str, members: list[str], rounds: int, size: int,
                     timeout: float, out: Any, report: bool = False) -> None:
    """Sum this party's :func:`vectors` with the others (the first member aggregates; with
    ``report`` it alone puts ("round", k) on ``out`` as rounds close: a killed process must
    not hold the queue's lock); put the result or the error on ``out``."""
    from fedlab_kit import Identity, Invitation, Party
    from fedlab_kit.errors import FedlabError
    from fedlab_kit.horizontal import secure_sum

    warnings.simplefilter("ignore")
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        seen = [0]

        def progress(what: str, done: int, total: int) -> None:
            if report and party.name == members[0] and done > seen[0]:
                seen[0] = done
                out.put(("round", done))

        try:
            res = secure_sum(party, vectors(party.name, rounds, size), members=members,
                             aggregator=members[0], timeout=timeout, progress=progress)
            out.put((party.name, {"totals": res.totals, "included": res.included}))
        except (FedlabError, TimeoutError) as exc:
            out.put((party.name, {"error": str(exc), "type": type(exc).__name__}))
