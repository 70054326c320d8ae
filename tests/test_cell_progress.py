"""Long notebook cells show progress: the joint-count protocols report their steps up to
completion, and CellProgress draws one bar per step that ends full."""

from __future__ import annotations

import numpy as np
import pytest

from fedlab_kit.analytics import encrypted_counts as E
from fedlab_kit.demo.progress import CANCEL_HINT, CellProgress
from fedlab_kit.protocol import LocalNetwork


def test_joint_count_protocols_report_progress_to_the_end() -> None:
    n, width = 50, 8
    rng = np.random.default_rng(0)
    masks = [(np.arange(n), rng.integers(0, width, n))]
    protos = {"k": E.KeyHolder(rng.integers(0, 2, n).astype(float), ["m", "g"]),
              "m": E.Multiplier("k", n, "g", lambda w: np.ones((n, w), bool)),
              "g": E.Grouper("k", n, width, masks, lambda: (np.zeros((1, width)), {}))}
    before = {name: p.progress() for name, p in protos.items()}
    LocalNetwork(protos).run()
    for name, proto in protos.items():
        done, total = proto.progress()
        assert total > 0 and done == total, (name, done, total)
        assert before[name][0] < total, name  # it did start below the end


def test_cell_progress_draws_a_bar_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    with CellProgress("Joint releases") as bar:
        funnel, crowd = bar.step("funnel"), bar.step("crowd")
        for done in range(6):
            funnel("the joint count", done, 4)  # a step past the total stays at the total
        crowd("the joint count", 0, 0)  # total unknown yet
        crowd("the joint count", 2, 3)
        bar.tree(7, 10)
    assert CANCEL_HINT in capsys.readouterr().out
    shown = {label: (b.n, b.total) for label, b in bar.bars.items()}
    assert shown == {"funnel: the joint count": (4, 4), "crowd: the joint count": (2, 3),
                     "Joint releases: trees": (7, 10)}
