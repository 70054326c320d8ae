"""Released (DP) frames for the map tests: crowd cells of the sample city and a funnel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fedlab_kit.data import load_pois

SHOWN_COUNT = 4321            # a released cell count that must appear on the map
HIDDEN_COUNT = 987_654        # the noisy count of a suppressed cell: must never appear


def crowd_cells(counts: Sequence[int]) -> pd.DataFrame:
    """One H3 r8 cell of the sample city per count (+-71 intervals), the last suppressed."""
    top = load_pois()["h3_r8"].value_counts().sort_index().index[: len(counts)]
    frame = pd.DataFrame({"h3": list(top), "count": list(counts)})
    frame["ci_low"] = frame["count"] - 71
    frame["ci_high"] = frame["count"] + 71
    frame["suppressed"] = [False] * (len(counts) - 1) + [True]
    return frame


def district_funnel(stages: Sequence[str]) -> pd.DataFrame:
    """A funnel for D01 and D02 (each stage 40% of the one before, +-40 intervals); the last
    stage carries a lift and is suppressed in D02."""
    rows = []
    last = len(stages) - 1
    for district, top in (("D01", 5000), ("D02", 3000)):
        count = top
        for i, stage in enumerate(stages):
            rows.append({"district_id": district, "stage": stage, "count": count,
                         "ci_low": count - 40, "ci_high": count + 40,
                         "rate": np.nan if i == 0 else 0.4,
                         "lift": 0.123 if i == last else np.nan,
                         "suppressed": district == "D02" and i == last})
            count = int(count * 0.4)
    return pd.DataFrame(rows)
