"""The feature holder decides what it answers: the attacks a label holder could run by
asking for tiny nodes or splits, and the floor an honest training keeps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from boost_workers import ACTIVE, fit_local

from fedlab_kit.boost import SecureBoostPassive, SecureBoostRegressor
from fedlab_kit.boost import messages as m
from fedlab_kit.errors import ProtocolError
from fedlab_kit.protocol import Envelope

PLAIN = b"fedlab-boost-plaintext-v1"
N = 200


def _env(msg: object) -> Envelope:
    return Envelope(ACTIVE, "media", "s", m.kind(msg), 0, m.encode(msg))  # type: ignore[arg-type]


def _served(floor: int = 20, setup_floor: int = 1):
    """A feature holder after the setup and the root's histogram request."""
    X = np.random.default_rng(3).normal(size=(N, 2))
    srv = SecureBoostPassive(insecure_plaintext=True, min_child_rows=floor)
    proto = srv.fit_protocol("media", ACTIVE, X)
    (hello,) = proto.on_message(_env(m.Setup(m.VERSION, "id", ["media"], 16, False, PLAIN,
                                             6, 10, setup_floor)))
    announced = m.decode(Envelope("media", ACTIVE, "s", hello.kind, 0, bytes(hello.payload)))
    (_job,) = proto.on_message(_env(m.HistRequest(0, 0, [], [0], [], [0, 1],
                                                  b"\0" * 16 * N)))
    usable = m.unbits(proto._usable, (1, 2, 16), ACTIVE)
    return proto, announced, usable, X


def test_a_label_holder_cannot_isolate_a_row() -> None:
    """The attack: split one row off the root (a partition of the label holder's own
    split) and ask for its histogram: every slot would give that row's bin codes."""
    proto, announced, _, _ = _served()
    assert announced.min_child_rows == 20  # its own floor, although the setup asked for 1
    alone = np.zeros(N, dtype=bool)
    alone[17] = True
    request = m.HistRequest(0, 1, [m.Partition(0, 1, 2, m.bits(alone))], [1], [2], [0, 1],
                            b"\0" * 16 * 1)
    with pytest.raises(ProtocolError, match="node 1 of 1 rows; it answers only nodes of at "
                                            "least 20 rows"):
        proto.on_message(_env(request))


@pytest.mark.parametrize("left_rows", [1, 5, 19])
def test_too_small_children_are_refused(left_rows: int) -> None:
    proto, _, _, _ = _served()
    mask = np.arange(N) < left_rows
    request = m.HistRequest(0, 1, [m.Partition(0, 1, 2, m.bits(mask))], [2], [1], [0, 1],
                            b"\0" * 16 * (N - left_rows))
    with pytest.raises(ProtocolError, match=f"of {left_rows} rows"):
        proto.on_message(_env(request))


def test_a_split_with_a_small_child_is_refused() -> None:
    """Asked to split at a threshold that leaves a few rows on one side, it refuses,
    whatever the label holder's histogram told it."""
    proto, _, usable, _ = _served()
    slot = int(np.flatnonzero(~usable[0, 0, 1:])[0]) + 1  # a candidate the floor forbids
    assert usable[0, 0].any() and not usable[0, 0, slot]
    with pytest.raises(ProtocolError, match="answers only nodes of at least 20 rows"):
        proto.on_message(_env(m.SplitRequest(0, 0, [m.Choice(0, 0, slot, False)])))


def test_a_derived_node_must_be_the_sibling_of_a_requested_one() -> None:
    proto, _, _, _ = _served()
    mask = np.arange(N) < 100
    request = m.HistRequest(0, 1, [m.Partition(0, 1, 2, m.bits(mask))], [1], [7], [0, 1],
                            b"\0" * 16 * 100)
    with pytest.raises(ProtocolError, match="not the sibling"):
        proto.on_message(_env(request))


def test_depth_and_trees_beyond_the_setup_are_refused() -> None:
    proto, _, _, _ = _served()
    with pytest.raises(ProtocolError, match="agreed to 10 trees of depth 6"):
        proto.on_message(_env(m.HistRequest(10, 0, [], [0], [], [0], b"\0" * 16 * N)))


@pytest.mark.parametrize("active_floor", [1, 20])
def test_an_honest_training_keeps_every_partys_floor(active_floor: int) -> None:
    """Squared error: a node's cover is its row count. Every leaf holds at least the
    strictest party's floor (the feature holder's 20 even if the label holder asks 1),
    and the training never trips the feature holder's checks."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4))
    y = X[:, 0] * 3 + np.sin(X[:, 2] * 3) * 5 + rng.normal(0, 0.1, 400)
    reg = SecureBoostRegressor(n_estimators=5, max_depth=6, min_child_rows=active_floor,
                               insecure_plaintext=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_local(reg, X[:, :2], y, {"media": (SecureBoostPassive(insecure_plaintext=True),
                                               X[:, 2:])})
    leaves = [n.cover for t in reg.model.trees for n in t if n.is_leaf]
    assert min(leaves) >= 20 and len(leaves) > 5 * 4  # it still grew real trees
    owners = {n.owner for t in reg.model.trees for n in t if not n.is_leaf}
    assert owners == {ACTIVE, "media"}
