"""POI crowd regression inputs: per-POI columns of each party, the footfall label, P30."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedlab_kit.analytics import poi_crowd
from fedlab_kit.data import (
    load_campaigns,
    load_footfall,
    load_pois,
    load_sample,
    load_sample_visits,
    load_truth,
)
from fedlab_kit.errors import FedlabError


@pytest.fixture(scope="module")
def pois() -> pd.DataFrame:
    return load_pois()


def test_every_party_has_one_row_per_poi_in_the_poi_order(pois: pd.DataFrame) -> None:
    campaigns, visits = load_campaigns(), load_sample_visits()
    frames = [poi_crowd.retailer_features(pois, campaigns),
              poi_crowd.operator_features(pois, visits, load_sample("operator")),
              poi_crowd.media_features(pois, load_sample("media"), campaigns)]
    for frame in frames:
        assert frame["poi_id"].tolist() == pois["poi_id"].tolist()
        assert not frame.drop(columns="poi_id").isna().any().any()
    op = frames[1]
    days = visits["visit_date"].nunique()
    assert op["sub_visits_per_day"].sum() * days == pytest.approx(len(visits))
    assert frames[0]["campaign_store"].sum() == (campaigns["role"] == "store").sum()
    assert frames[2]["billboards"].sum() == (campaigns["role"] == "billboard").sum()


def test_footfall_counts_follow_the_true_crowd(pois: pd.DataFrame) -> None:
    counted = load_footfall()
    truth = load_truth("poi_crowd").set_index("poi_id")["visits_per_day"]
    assert 0.5 * len(pois) < len(counted) < 0.7 * len(pois)  # ~60% of POIs have counters
    ratio = counted["footfall_per_day"].to_numpy() / truth.loc[counted["poi_id"]].to_numpy()
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)  # counters are off by ~5%
    assert ratio.min() > 0.8 and ratio.max() < 1.25
    label = poi_crowd.footfall_label(counted, pois)
    np.testing.assert_allclose(np.expm1(label), counted["footfall_per_day"])


def test_bad_inputs_are_named(pois: pd.DataFrame) -> None:
    counted = load_footfall().head(5).copy()
    with pytest.raises(FedlabError, match="twice"):
        poi_crowd.footfall_label(pd.concat([counted, counted.head(1)]), pois)
    bad = counted.assign(footfall_per_day=[1.0, -2.0, 3.0, None, 5.0])
    with pytest.raises(FedlabError, match="2 missing or negative"):
        poi_crowd.footfall_label(bad, pois)
    stranger = counted.assign(poi_id=["nowhere", *counted["poi_id"].tolist()[1:]])
    with pytest.raises(FedlabError, match=r"1 POIs missing from the POI table.*nowhere"):
        poi_crowd.footfall_label(stranger, pois)
    visits = load_sample_visits().head(3).assign(poi_id="nowhere")
    with pytest.raises(FedlabError, match="visit table"):
        poi_crowd.operator_features(pois, visits, load_sample("operator"))


def test_p30_counts_predictions_within_thirty_percent() -> None:
    true = np.array([10.0, 10.0, 10.0, 100.0])
    assert poi_crowd.p30(np.array([12.9, 7.1, 13.5, 50.0]), true) == 0.5
    assert poi_crowd.p30(true, true) == 1.0
    with pytest.raises(ValueError):
        poi_crowd.p30(np.ones(3), np.ones(4))
