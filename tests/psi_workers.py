"""PSI party processes for the end-to-end tests."""

from __future__ import annotations

import time
from typing import Any

from fedlab_kit import Identity, Invitation, Party


def psi_party(key: str, invitation: str, ids: list[Any], kwargs: dict[str, Any],
              out: Any, signal: bool = False) -> None:
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        if signal:
            out.put(("started", party.name))
        t0 = time.monotonic()
        res = party.psi(ids, workers=1, **kwargs)
        t1 = time.monotonic()
        aligned = None if res.rows is None else [ids[i] for i in res.rows]
        out.put((party.name, {"size": res.size, "aligned": aligned, "sizes": res.sizes,
                              "excluded": res.report.excluded, "t0": t0, "t1": t1,
                              "buckets": res.buckets, "protocol": res.protocol,
                              "summary": res.summary()}))


def psi_until_done(key: str, invitation: str, ids: list[Any], kwargs: dict[str, Any],
                   out: Any) -> None:
    """Run PSI, and run it again (resuming from the checkpoint) when a peer drops out."""
    from fedlab_kit.errors import PeerLost

    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        for attempt in range(5):
            try:
                res = party.psi(ids, workers=1, **kwargs)
                break
            except PeerLost as exc:
                out.put((party.name, {"retry": attempt, "error": str(exc)}))
        out.put((party.name, {"size": res.size, "aligned": [ids[i] for i in res.rows],
                              "buckets": res.buckets, "resumed": res.buckets_resumed}))


def psi_files_party(key: str, invitation: str, source: str, column: str,
                    kwargs: dict[str, Any], out: Any) -> None:
    """PSI on a folder of files (PartitionedIds); reports the dataset positions."""
    from fedlab_kit.psi import PartitionedIds

    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        res = party.psi(PartitionedIds(source, column), workers=1, **kwargs)
        out.put((party.name, {"size": res.size, "rows": res.rows.tolist(),
                              "buckets": res.buckets, "used": res.report.n_used,
                              "excluded": res.report.excluded}))
