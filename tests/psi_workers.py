"""PSI party processes for the end-to-end tests."""

from __future__ import annotations

from typing import Any

from fedlab_kit import Identity, Invitation, Party


def psi_party(key: str, invitation: str, ids: list[Any], kwargs: dict[str, Any],
              out: Any) -> None:
    with Party(Identity.load(key), Invitation.from_string(invitation)) as party:
        res = party.psi(ids, workers=1, **kwargs)
        aligned = None if res.rows is None else [ids[i] for i in res.rows]
        out.put((party.name, {"size": res.size, "aligned": aligned, "sizes": res.sizes,
                              "excluded": res.report.excluded}))
