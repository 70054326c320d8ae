"""The demo's training stages: encrypted SecureBoost and logistic regression on aligned rows.

1. Conversion: the retailer predicts its ``converted`` label from its own columns plus the
   media owner's (exposure, interests, engagement) and the operator's (mobility, spend)
   columns, and compares with a model on its own columns alone: the value of federation.
   Rows split 80/20 by PSI position, the same split at every party. Then the same with
   vertical logistic regression (:func:`logistic_stage`): AUC and the top coefficients.
2. POI crowd regression: rows are the POIs where the retailer counts footfall (aligned by
   PSI on POI ids); the retailer's public POI attributes, the operator's subscriber visits
   and the media owner's billboards and audience predict footfall per day; P30 on held-out
   POIs, with and without the partners.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import FedlabError

FEATURES = {
    "retailer": ["past_spend", "tenure_days", "age_band"],
    "media": ["exposed_beauty_launch", "exposed_auto_expo", "exposed_sports_sale",
              "n_impressions", "interest_beauty", "interest_auto", "interest_sports",
              "interest_travel", "interest_food", "sessions_per_week", "avg_session_minutes",
              "click_rate"],
    "operator": ["n_visits", "distinct_pois", "distinct_districts", "mall_visits",
                 "store_visits", "night_share", "weekend_share", "avg_dwell_minutes",
                 "radius_km", "arpu", "data_gb"],
}
PARAMS = {"n_estimators": 10, "max_depth": 4, "learning_rate": 0.3, "max_bin": 32}
TRAIN_SHARE = 0.8
POI_PARAMS = {"n_estimators": 30, "max_depth": 4, "learning_rate": 0.3, "max_bin": 32}
POI_TRAIN_SHARE = 0.75
LR_PARAMS = {"C": 1.0, "max_iter": 50}


def features(role: str, rows: pd.DataFrame) -> pd.DataFrame:
    """A party's numeric model columns (ordered categories as codes)."""
    X = rows[FEATURES[role]].copy()
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = pd.Categorical(X[col]).codes.astype(float)
    return X.astype(float)


def training_stage(party: Any, role: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Train and evaluate; the retailer's report has the AUCs, the others' their splits."""
    from sklearn.metrics import roc_auc_score

    from ..boost import SecureBoostClassifier, SecureBoostPassive

    X = features(role, rows)
    cut = int(TRAIN_SHARE * len(X))
    if role != "retailer":
        srv = SecureBoostPassive().fit(X.iloc[:cut], party=party, active="retailer",
                                       timeout=900)
        srv.predict(X.iloc[cut:], party=party, active="retailer", timeout=900)
        return {"splits_held": len(srv.model.records)}
    y = rows["converted"].to_numpy()
    clf = SecureBoostClassifier(**PARAMS)
    clf.fit(X.iloc[:cut], y[:cut], party=party, passive=["media", "operator"], timeout=900)
    federated = clf.predict_proba(X.iloc[cut:], party=party, timeout=900)[:, 1]
    alone = SecureBoostClassifier(**PARAMS).fit(X.iloc[:cut], y[:cut], party=None, passive=[])
    own = alone.predict_proba(X.iloc[cut:], party=None)[:, 1]
    top = np.argsort(clf.feature_importances_)[::-1][:5]
    return {"train_rows": cut, "test_rows": len(X) - cut,
            "auc_federated": round(float(roc_auc_score(y[cut:], federated)), 4),
            "auc_retailer_only": round(float(roc_auc_score(y[cut:], own)), 4),
            "top_features": [clf.feature_names_[i] for i in top]}


def top_coefficients(weights: dict[str, float], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` largest standardised weights by magnitude (per standard deviation of the
    column, so columns on different scales compare)."""
    return sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:k]


def logistic_stage(party: Any, role: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Vertical logistic regression on the same rows and split as the SecureBoost stage.
    The feature holders report their own columns' weights (standardised), the retailer
    the AUCs and its own."""
    from sklearn.metrics import roc_auc_score

    from ..linear import SecureLogisticPassive, SecureLogisticRegression

    X = features(role, rows)
    cut = int(TRAIN_SHARE * len(X))
    if role != "retailer":
        lr = SecureLogisticPassive().fit(X.iloc[:cut], party=party, active="retailer",
                                         timeout=900)
        lr.predict(X.iloc[cut:], party=party, active="retailer", timeout=900)
        return {"weights": dict(zip(lr.model.columns, lr.model.weights.round(4).tolist(),
                                    strict=True))}
    y = rows["converted"].to_numpy()
    clf = SecureLogisticRegression(**LR_PARAMS)
    clf.fit(X.iloc[:cut], y[:cut], party=party, passive=["media", "operator"], timeout=900)
    federated = clf.decision_function(X.iloc[cut:], party=party, timeout=900)
    alone = SecureLogisticRegression(**LR_PARAMS).fit(X.iloc[:cut], y[:cut], party=None,
                                                      passive=[])
    own = alone.decision_function(X.iloc[cut:], party=None)
    return {"auc_federated": round(float(roc_auc_score(y[cut:], federated)), 4),
            "auc_retailer_only": round(float(roc_auc_score(y[cut:], own)), 4),
            "iterations": clf.n_iter_,
            "weights": dict(zip(clf.model.columns, clf.model.weights.round(4).tolist(),
                                strict=True))}


def poi_columns(role: str, own: pd.DataFrame, pois: pd.DataFrame, campaigns: pd.DataFrame,
                visits: pd.DataFrame | None = None) -> pd.DataFrame:
    """A party's per-POI columns (``poi_id`` first) from its own table ``own`` (the
    operator's subscribers, the media owner's users; unused for the retailer)."""
    from ..analytics import poi_crowd

    if role == "retailer":
        return poi_crowd.retailer_features(pois, campaigns)
    if role == "operator":
        if visits is None:
            raise FedlabError("the operator's POI columns need its visit table")
        return poi_crowd.operator_features(pois, visits, own)
    return poi_crowd.media_features(pois, own, campaigns)


def poi_crowd_stage(party: Any, role: str, own: pd.DataFrame, *, pois: pd.DataFrame,
                    campaigns: pd.DataFrame, footfall: pd.DataFrame | None = None,
                    visits: pd.DataFrame | None = None, session: str = "demo-poi",
                    progress: Any = None) -> dict[str, Any]:
    """PSI on POI ids (the retailer's counted POIs x every POI at the partners), then the
    encrypted crowd regression; the retailer (who passes its ``footfall`` counts) gets P30
    with and without the partners, the others what they served. ``progress``: a
    :class:`~fedlab_kit.demo.progress.CellProgress` (PSI stages, then trees)."""
    from ..analytics import poi_crowd
    from ..boost import SecureBoostPassive, SecureBoostRegressor

    frame = poi_columns(role, own, pois, campaigns, visits)
    if role == "retailer":
        if footfall is None:
            raise FedlabError("the retailer's POI crowd model needs its footfall counts")
        label = poi_crowd.footfall_label(footfall, pois)
        frame = frame.set_index("poi_id").loc[footfall["poi_id"]].reset_index()
        frame["label"] = label.to_numpy()
    rows = party.psi(frame["poi_id"], session=f"{session}-psi", progress=progress).align(frame)
    trees = None if progress is None else progress.tree
    X = rows.drop(columns=["poi_id", "label"], errors="ignore").astype(float)
    cut = int(POI_TRAIN_SHARE * len(X))
    if role != "retailer":
        srv = SecureBoostPassive().fit(X.iloc[:cut], party=party, active="retailer",
                                       session=session, timeout=900,
                                       progress=None if trees is None else
                                       (lambda t, _splits: trees(t, POI_PARAMS["n_estimators"])))
        srv.predict(X.iloc[cut:], party=party, active="retailer", session=session, timeout=900)
        return {"pois": len(X), "splits_held": len(srv.model.records)}
    y = rows["label"].to_numpy()
    reg = SecureBoostRegressor(**POI_PARAMS)
    reg.fit(X.iloc[:cut], y[:cut], party=party, passive=["media", "operator"],
            session=session, timeout=900, progress=trees)
    federated = np.expm1(reg.predict(X.iloc[cut:], party=party, session=session, timeout=900))
    alone = SecureBoostRegressor(**POI_PARAMS).fit(X.iloc[:cut], y[:cut], party=None,
                                                   passive=[])
    own_only = np.expm1(alone.predict(X.iloc[cut:], party=None))
    true = np.expm1(y[cut:])
    return {"train_pois": cut, "test_pois": len(X) - cut,
            "p30_federated": round(poi_crowd.p30(federated, true), 4),
            "p30_retailer_only": round(poi_crowd.p30(own_only, true), 4)}
