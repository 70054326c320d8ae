"""The demo's training stage: encrypted SecureBoost on the three-party aligned rows.

The retailer predicts its ``converted`` label from its own columns plus the media owner's
(exposure, interests, engagement) and the operator's (mobility, spend) columns, and compares
with a model on its own columns alone: the value of federation. Rows split 80/20 by PSI
position, the same split at every party.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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

    from .boost import SecureBoostClassifier, SecureBoostPassive

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
