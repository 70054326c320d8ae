"""Federated prediction of vertical logistic regression (sans-IO).

The label holder asks every feature holder for its share of the logits of the prediction
rows; with two or more feature holders the shares carry zero-sum masks (seeds from
training), so the label holder learns only their sum, ``z - z_own``, which the predicted
probabilities tell it anyway. Logits travel as fixed point (2^-32) mod 2^64.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ProtocolError
from ..protocol import Action, Envelope, Protocol
from . import messages as m
from .errors import LinearError
from .fixed import zero_sum_mask
from .model import LinearModel

CODEC = m.CODEC
LOGIT_BITS = 32


def _fixed(z: np.ndarray) -> np.ndarray:
    if not np.all(np.abs(z) < 2.0 ** 30):
        raise LinearError("a logit is out of range (|z| >= 2^30): check the input rows")
    return np.rint(z * 2.0 ** LOGIT_BITS).astype(np.int64).astype(np.uint64)


class LabelPredictor(Protocol):
    """The label holder's side: the result is the logit of every row."""

    name, title = "linear-predict", "logistic regression prediction"

    def __init__(self, model: LinearModel, X: np.ndarray) -> None:
        super().__init__()
        self.model, self.X = model, X
        self.features = model.parties[1:]
        self.got: dict[str, np.ndarray] = {}

    def start(self) -> list[Action]:
        if not self.features:
            return self._finish()
        req = m.PredictRequest(m.VERSION, self.model.model_id, len(self.X), os.urandom(16))
        return CODEC.broadcast(self.features, req)

    def on_message(self, env: Envelope) -> list[Action]:
        msg, tail = CODEC.decode_with_data(env, m.Logits)
        if env.sender not in self.features or env.sender in self.got:
            raise ProtocolError(f"logistic regression: unexpected logits from {env.sender!r}")
        if msg.model_id != self.model.model_id:
            raise LinearError(f"{env.sender!r} answered for another model ({msg.model_id})")
        if len(tail) != 8 * len(self.X):
            raise ProtocolError(f"logistic regression: {env.sender!r} sent {len(tail)} bytes "
                                f"of logits for {len(self.X)} rows")
        self.got[env.sender] = np.frombuffer(tail, "<u8")
        return self._finish() if len(self.got) == len(self.features) else []

    def _finish(self) -> list[Action]:
        acc = np.zeros(len(self.X), dtype=np.uint64)
        for v in self.got.values():
            acc += v  # wraps mod 2^64
        others = acc.astype(np.int64) / 2.0 ** LOGIT_BITS
        self.done, self.result = True, self.model.logits(self.X) + others
        return []


class FeaturePredictor(Protocol):
    """A feature holder's side of one prediction round."""

    name, title = "linear-predict", "logistic regression prediction"

    def __init__(self, model: LinearModel, X: np.ndarray) -> None:
        super().__init__()
        self.model, self.X = model, X

    def start(self) -> list[Action]:
        return []

    def on_message(self, env: Envelope) -> list[Action]:
        req = CODEC.decode(env, m.PredictRequest)
        label = self.model.parties[0]
        if env.sender != label or self.done:
            raise ProtocolError(f"logistic regression: unexpected prediction request from "
                                f"{env.sender!r}")
        if req.model_id != self.model.model_id:
            raise LinearError(f"{label!r} asks for model {req.model_id} but this party holds "
                              f"model {self.model.model_id}: load the matching model file")
        if req.n_rows != len(self.X):
            raise LinearError(f"{label!r} predicts {req.n_rows} rows but {self.model.party!r} "
                              f"has {len(self.X)}: align the rows with PSI first")
        z = _fixed(self.model.logits(self.X))
        z += zero_sum_mask(self.model.party, self.model.parties[1:], self.model.seeds,
                           b"predict|" + bytes(req.nonce), len(z), 64)
        self.done, self.result = True, None
        return [CODEC.send(label, m.Logits(self.model.model_id), z.astype("<u8").tobytes())]
