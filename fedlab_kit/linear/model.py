"""Each party's part of a trained logistic regression, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LinearError
from .fixed import scaled

FORMAT = "fedlab-logistic"
FORMAT_VERSION = 1
LABEL, FEATURE = "label holder", "feature holder"


@dataclass
class LinearModel:
    """One party's block: its columns' standardisation and weights (on the standardised
    columns), the intercept at the label holder, the parties (label holder first) and the
    pairwise mask seeds this party shares with them (secret: keep the file private)."""

    model_id: str
    party: str
    role: str
    parties: list[str]
    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    intercept: float | None
    n_iter: int
    params: dict[str, Any]
    seeds: dict[str, bytes] = field(repr=False, default_factory=dict)

    @property
    def coef(self) -> np.ndarray:
        """Coefficients per original (unstandardised) column."""
        return self.weights / self.std

    @property
    def offset(self) -> float:
        """This block's constant on the original scale (plus the intercept, if held)."""
        return float(-(self.weights * self.mean / self.std).sum()
                     + (self.intercept or 0.0))

    def logits(self, X: np.ndarray) -> np.ndarray:
        """This block's share of the logit of each row (standardised and clipped as in
        training; the intercept included at the label holder)."""
        z = scaled(X, self.mean, self.std) @ self.weights if len(self.columns) \
            else np.zeros(len(X))
        return z + (self.intercept or 0.0)

    def save(self, path: str | Path) -> None:
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "role": self.role,
               "model_id": self.model_id, "party": self.party, "parties": self.parties,
               "columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist(),
               "weights": self.weights.tolist(), "intercept": self.intercept,
               "n_iter": self.n_iter, "params": self.params,
               "seeds": {k: v.hex() for k, v in self.seeds.items()}}
        Path(path).write_text(json.dumps(doc, allow_nan=False, indent=1))

    @classmethod
    def load(cls, path: str | Path, role: str) -> LinearModel:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise LinearError(f"cannot read a logistic regression model from {str(path)!r}: "
                              f"{exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise LinearError(f"{str(path)!r} is not a fedlab logistic regression model file")
        if doc.get("version") != FORMAT_VERSION:
            raise LinearError(f"{str(path)!r} has model format version {doc.get('version')}; "
                              f"this kit reads version {FORMAT_VERSION}")
        if doc.get("role") != role:
            raise LinearError(f"{str(path)!r} holds the {doc.get('role')}'s part of a model, "
                              f"not the {role}'s")
        try:
            model = cls(str(doc["model_id"]), str(doc["party"]), role,
                        [str(p) for p in doc["parties"]], [str(c) for c in doc["columns"]],
                        np.asarray(doc["mean"], float), np.asarray(doc["std"], float),
                        np.asarray(doc["weights"], float),
                        None if doc["intercept"] is None else float(doc["intercept"]),
                        int(doc["n_iter"]), dict(doc["params"]),
                        {str(k): bytes.fromhex(v) for k, v in doc["seeds"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise LinearError(f"{str(path)!r} is a damaged logistic regression model file: "
                              f"{exc!r}") from None
        k = len(model.columns)
        if not (model.mean.shape == model.std.shape == model.weights.shape == (k,)) \
                or not np.all(model.std > 0):
            raise LinearError(f"{str(path)!r} is a damaged logistic regression model file: "
                              "column arrays do not fit")
        return model
