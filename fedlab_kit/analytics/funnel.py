"""Ad-effect funnel across three parties: exposure -> visit -> purchase -> repeat purchase.

Over PSI-aligned rows: the retailer (key holder) encrypts per person ``[1, 1, bought,
bought and repeat]``; the operator (multiplier) multiplies, per campaign, by "visited one of
the campaign's stores" (all stages but the first); the media owner (grouper) adds up per
home district, campaign and exposed/control group, adds OpenDP discrete Laplace noise under
encryption and re-randomises; the retailer decrypts noisy stage counts only.

Noise is drawn on the *exit* counts (persons whose funnel ends at each stage): a person is
in exactly one exit cell per campaign, so the L1 sensitivity is the number of campaigns,
and stage counts (sums of exit counts) get correlated noise. Media and operator both pay the
epsilon on their own ledgers (the release contains their data); the retailer's own data
(purchases) is not protected from itself, so it pays nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np
import pandas as pd

from ..dp import PrivacyLedger
from ..dp.errors import DPError
from ..dp.hierarchy import (
    discrete_laplace_variance,
    exits_from_stages,
    linear_halfwidths,
    nonnegative_exits,
    reconcile,
    stages_from_exits,
)
from ..dp.mechanisms import check_share, release_noise, suppression_note
from ..dp.preview import DISTRICT_SHARE
from ..net.driver import run, stopping
from ..net.session import Party
from ..protocol import ProgressCallback
from .encrypted_counts import (
    TITLE,
    CountsResult,
    Grouper,
    KeyHolder,
    Multiplier,
)
from .joint_crowd import check_flags

SESSION = "joint-funnel"
STAGES = ("persons", "visited", "purchased", "repeat")
GROUPS = ("exposed", "control")
Z95 = 1.959963984540054


def _copies(n_campaigns: int) -> int:
    """Slots per stage: a power of two above 2 campaigns x 2 groups + the district total."""
    return 1 << (2 * n_campaigns).bit_length()


def _width(n_campaigns: int) -> int:
    return len(STAGES) * _copies(n_campaigns)


def _slot(stage: int, campaign: int, group: int, copies: int) -> int:
    return stage * copies + 2 * campaign + group


def _total_slot(stage: int, n_campaigns: int, copies: int) -> int:
    """The slot of the district total (over campaigns and groups) of a stage."""
    return stage * copies + 2 * n_campaigns


def funnel_for_outcomes(party: Party, purchased: Any, repeat: Any, *,
                        chain: Sequence[str], session: str = SESSION,
                        timeout: float | None = 600,
                        progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Retailer: the released funnel (one row per campaign, district, group and stage).

    ``purchased`` and ``repeat`` are 0/1 per PSI-aligned row (PSI order); ``chain`` names
    the visit holder, then the exposure holder (who adds the noise).
    """
    with stopping(party, list(chain), session=session, protocol=TITLE):
        res = run(party, outcomes_protocol(purchased, repeat, chain), session=session,
                  timeout=timeout, progress=progress, watch=list(chain))
    return funnel_frame(res)


def outcomes_protocol(purchased: Any, repeat: Any, chain: Sequence[str]) -> KeyHolder:
    """The retailer's protocol (see :func:`funnel_for_outcomes`)."""
    bought = check_flags(purchased, "purchased flags")
    again = check_flags(repeat, "repeat-purchase flags") * bought
    values = np.stack([np.ones_like(bought), np.ones_like(bought), bought, again], axis=1)
    return KeyHolder(values, list(chain))


def campaign_visitors(persons: pd.Series, visits: pd.DataFrame, campaign_sites: pd.DataFrame,
                      *, person_col: str = "user_id") -> pd.DataFrame:
    """0/1 per person (in the order of ``persons``) and campaign (sorted names): did the
    person visit one of the campaign's stores (``campaign_sites`` rows with role "store")?"""
    campaigns = sorted(campaign_sites["campaign"].unique())
    stores = campaign_sites[campaign_sites["role"] == "store"]
    return pd.DataFrame({
        c: pd.Series(persons).isin(visits.loc[visits["poi_id"].isin(
            stores.loc[stores["campaign"] == c, "poi_id"]), person_col]).astype(int).to_numpy()
        for c in campaigns})


def funnel_for_visits(party: Party, visited: pd.DataFrame, *, ledger: PrivacyLedger,
                      epsilon: float, key_holder: str, next_party: str,
                      session: str = SESSION, timeout: float | None = 600,
                      executor: Executor | None = None,
                      progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Operator: ``visited`` has one 0/1 column per campaign (in the media owner's campaign
    order), one row per PSI-aligned person. Pays ``epsilon`` on its ledger. ``key_holder``
    holds the outcomes, ``next_party`` the exposures."""
    with stopping(party, [key_holder, next_party], session=session, protocol=TITLE):
        ledger.require("joint funnel, visits", epsilon)
        return _serve_visits(party, visited, ledger=ledger, epsilon=epsilon,
                             key_holder=key_holder, next_party=next_party, session=session,
                             timeout=timeout, executor=executor, progress=progress)


def _serve_visits(party: Party, visited: pd.DataFrame, *, ledger: PrivacyLedger,
                  epsilon: float, key_holder: str, next_party: str, session: str,
                  timeout: float | None, executor: Executor | None,
                  progress: ProgressCallback | None) -> dict[str, Any]:
    flags = np.stack([check_flags(visited[c], f"visited flags of {c!r}") for c in visited.columns],
                     axis=1) if len(visited.columns) else np.zeros((len(visited), 0))
    n_campaigns = flags.shape[1]
    if n_campaigns == 0:
        raise DPError("visited has no campaign columns")

    def mask_for(width: int) -> np.ndarray:
        if width != _width(n_campaigns):
            raise DPError(f"the media owner planned {width} slots per person; with "
                          f"{n_campaigns} campaigns expected {_width(n_campaigns)}: do both "
                          "parties pass the same campaigns?")
        ledger.spend(f"joint funnel ({n_campaigns} campaigns), visits", "laplace (by media)",
                     epsilon, 0.0, meta={"campaigns": list(map(str, visited.columns))})
        copies = _copies(n_campaigns)
        mask = np.zeros((len(flags), width), dtype=np.int64)
        visited_any = (flags > 0).sum(axis=1)
        for c in range(n_campaigns):
            for g in range(2):
                mask[:, _slot(0, c, g, copies)] = 1
                for s in range(1, len(STAGES)):
                    mask[:, _slot(s, c, g, copies)] = flags[:, c] > 0
        # district totals add up the campaigns: a person reaches stage s in this many
        mask[:, _total_slot(0, n_campaigns, copies)] = n_campaigns
        for s in range(1, len(STAGES)):
            mask[:, _total_slot(s, n_campaigns, copies)] = visited_any
        return mask

    proto = Multiplier(key_holder, len(flags), next_party, mask_for)
    return run(party, proto, session=session, timeout=timeout, executor=executor,
               progress=progress, watch=[key_holder, next_party])


def funnel_for_exposure(party: Party, district: Any, exposed: pd.DataFrame, *,
                        ledger: PrivacyLedger, epsilon: float,
                        key_holder: str, districts: Sequence[str],
                        district_share: float = DISTRICT_SHARE,
                        suppress_below: int = 10, session: str = SESSION,
                        timeout: float | None = 600, executor: Executor | None = None,
                        progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Media owner: home ``district`` per aligned row and one 0/1 ``exposed`` column per
    campaign. Adds the noise and pays ``epsilon`` on its ledger. Returns a report.
    ``districts`` is the public list of districts (e.g. ``load_districts()["district_id"]``):
    keys taken from the data would reveal, outside DP, which districts hold an aligned
    person. ``district_share`` of epsilon releases the district totals (over campaigns and
    groups) directly, the rest the (campaign, group) funnels; raise it when district
    totals are the question (0 releases the funnels only).
    Every other party in the room takes part (``key_holder`` holds the outcomes)."""
    with stopping(party, _peers(party), session=session, protocol=TITLE):
        ledger.require("joint funnel, exposure", epsilon)
        share = check_share(district_share, "district_share")
        return _serve_exposure(party, district, exposed, ledger=ledger, epsilon=epsilon,
                               districts=districts, key_holder=key_holder, share=share,
                               suppress_below=suppress_below, session=session,
                               timeout=timeout, executor=executor, progress=progress)


def _serve_exposure(party: Party, district: Any, exposed: pd.DataFrame, *,
                    ledger: PrivacyLedger, epsilon: float, districts: Sequence[str],
                    key_holder: str, share: float, suppress_below: int, session: str,
                    timeout: float | None, executor: Executor | None,
                    progress: ProgressCallback | None) -> dict[str, Any]:
    dist = pd.Series(np.asarray(district, dtype=object))
    if dist.isna().any():
        raise DPError(f"{int(dist.isna().sum())} aligned rows have no district")
    if districts is None or isinstance(districts, str):
        raise DPError("pass districts: the public list of districts (keys from the data "
                      "would reveal which districts hold an aligned person)")
    keys = [str(d) for d in districts]
    unknown = ~dist.astype(str).isin(keys)
    if unknown.any():
        raise DPError(f"{int(unknown.sum())} rows have a district outside the given districts, "
                      f"e.g. {dist[unknown].head(3).tolist()}")
    campaigns = [str(c) for c in exposed.columns]
    if not campaigns:
        raise DPError("exposed has no campaign columns")
    flags = np.stack([check_flags(exposed[c], f"exposure flags of {c!r}") for c in campaigns],
                     axis=1)
    n_c = len(campaigns)
    copies, width = _copies(n_c), _width(n_c)
    d_index = pd.Index(keys).get_indexer(dist.astype(str))
    masks = []
    for d in range(len(keys)):
        rows = np.flatnonzero(d_index == d)
        r_parts, s_parts = [], []
        for s in range(len(STAGES)):
            for c in range(n_c):
                r_parts.append(rows)
                s_parts.append(s * copies + 2 * c + np.where(flags[rows, c] > 0, 0, 1))
            if share > 0:  # without a totals release the totals slots stay empty
                r_parts.append(rows)
                s_parts.append(np.full(len(rows), _total_slot(s, n_c, copies)))
        masks.append((np.concatenate(r_parts), np.concatenate(s_parts)))
    report: dict[str, Any] = {"persons": len(dist), "districts": len(keys),
                              "campaigns": campaigns, "district_share": share}
    query = f"joint funnel ({n_c} campaigns, {len(keys)} districts)"

    def noise() -> tuple[np.ndarray, dict[str, Any]]:
        # a person is in one exit per campaign: L1 sensitivity n_c, for the funnels and
        # for the district totals alike
        rel = release_noise(ledger, query, (len(keys), n_c, 2, len(STAGES)),
                            epsilon * (1 - share), sensitivity=n_c,
                            meta={"campaigns": campaigns, "stages": list(STAGES)})
        out = np.zeros((len(keys), width))
        stage_noise = stages_from_exits(rel.values.astype(float))
        for c in range(n_c):
            for g in range(2):
                for s in range(len(STAGES)):
                    out[:, _slot(s, c, g, copies)] = stage_noise[:, c, g, s]
        meta = {"districts": keys, "campaigns": campaigns, "copies": copies,
                "noise_scale": rel.noise_scale, "total_noise_scale": None,
                "epsilon": epsilon, "district_share": share, "mechanism": rel.mechanism,
                "suppress_below": suppress_below}
        report["release_id"] = rel.release_id
        if share > 0:
            tot = release_noise(ledger, f"{query}: district totals", (len(keys), len(STAGES)),
                                epsilon * share, sensitivity=n_c,
                                meta={"campaigns": campaigns, "stages": list(STAGES)})
            tot_noise = stages_from_exits(tot.values.astype(float))
            for s in range(len(STAGES)):
                out[:, _total_slot(s, n_c, copies)] = tot_noise[:, s]
            meta["total_noise_scale"] = tot.noise_scale
            report["totals_release_id"] = tot.release_id
        return out, meta

    grouper = Grouper(key_holder, len(dist), width, masks, noise,
                      jobs=2 if executor is not None else 1)
    run(party, grouper, session=session, timeout=timeout, executor=executor, progress=progress,
        watch=_peers(party))
    return report


def funnel_frame(res: CountsResult, alpha: float = 0.05) -> pd.DataFrame:
    """Decrypted stage counts -> funnel frame with intervals, rates and lift (post-processing).

    Rows with ``level == "campaign"`` are the (campaign, district, group) funnels; rows with
    ``level == "district"`` (campaign and group "all") the district totals over campaigns
    and groups. Both are the least-squares consistent estimate from the two releases, made
    monotone by projecting exits onto >= 0 (:mod:`fedlab_kit.dp.hierarchy`).
    ``[ci_low, ci_high]`` is a ``1 - alpha`` interval for the true stage count over the
    aligned persons: ``± dp_noise`` around the linear estimate (the quantile of its DP noise
    law), widened where needed to hold the monotone estimate (so post-processing never
    lowers coverage). Rates and lift
    combine DP noise and sampling variance (binomial, delta method).
    """
    meta = res.meta
    districts, campaigns, copies = meta["districts"], meta["campaigns"], int(meta["copies"])
    n_c, n_s = len(campaigns), len(STAGES)
    slots = np.array([[[_slot(s, c, g, copies) for s in range(n_s)] for g in range(2)]
                      for c in range(n_c)])
    detail = res.sums[:, slots]  # (D, C, G, S)
    exits = exits_from_stages(np.rint(detail)).reshape(len(districts), 2 * n_c, n_s)
    b_d, b_t = float(meta["noise_scale"]), meta.get("total_noise_scale")
    if b_t is None:  # no district totals were released: they are the sums of the funnels
        lin, b_t = exits, math.inf
    else:
        totals = np.rint(res.sums[:, [_total_slot(s, n_c, copies) for s in range(n_s)]])
        lin = reconcile(exits, exits_from_stages(totals), discrete_laplace_variance(b_d),
                        discrete_laplace_variance(float(b_t)))
    errors = linear_halfwidths(2 * n_c, n_s, b_d, float(b_t), alpha)
    final, final_tot = nonnegative_exits(lin, lin.sum(axis=-2))
    cells = _interval_frame(stages_from_exits(lin), stages_from_exits(final), errors.detail,
                            errors.detail_var)
    tots = _interval_frame(stages_from_exits(lin.sum(axis=-2))[:, None, :],
                           stages_from_exits(final_tot)[:, None, :], errors.total,
                           errors.total_var)
    idx = pd.MultiIndex.from_product([districts, campaigns, GROUPS, STAGES],
                                     names=["district_id", "campaign", "group", "stage"])
    detail_df = cells.set_index(idx).reset_index()
    idx_t = pd.MultiIndex.from_product([districts, ["all"], ["all"], STAGES],
                                       names=["district_id", "campaign", "group", "stage"])
    total_df = tots.set_index(idx_t).reset_index()
    df = pd.concat([detail_df.assign(level="campaign"), total_df.assign(level="district")],
                   ignore_index=True)
    df = df[["campaign", "district_id", "group", "stage", "level", "count", "ci_low",
             "ci_high", "dp_noise", "dp_var"]]
    key = ["campaign", "district_id", "group"]
    prev = df.groupby(key, sort=False)["count"].shift(1)
    prev_var = df.groupby(key, sort=False)["dp_var"].shift(1)
    df["rate"], df["rate_ci_low"], df["rate_ci_high"] = _ratio_ci(df["count"], prev,
                                                                 df["dp_var"], prev_var)
    df = _lift(df, key)
    below = int(meta["suppress_below"])
    df["suppressed"] = df["count"] < below
    df["suppressed_because"] = suppression_note(df["suppressed"], below)
    df["epsilon"] = float(meta["epsilon"])
    df.attrs["interval"] = (f"{1 - alpha:.0%} for the true stage count over the aligned "
                            "persons (DP noise; no sampling)")
    return df.drop(columns=["dp_var"])


def _interval_frame(linear: np.ndarray, final: np.ndarray, half: np.ndarray,
                    var: np.ndarray) -> pd.DataFrame:
    """Flat (count, ci_low, ci_high, dp_noise, dp_var) for stage arrays (..., S)."""
    count = np.rint(final)
    low = np.maximum(np.floor(np.minimum(linear - half, final)), 0)
    high = np.ceil(np.maximum(linear + half, final))
    shape = final.shape
    return pd.DataFrame({"count": count.ravel().astype(np.int64),
                         "ci_low": low.ravel().astype(np.int64),
                         "ci_high": high.ravel().astype(np.int64),
                         "dp_noise": np.broadcast_to(half, shape).ravel().round(1),
                         "dp_var": np.broadcast_to(var, shape).ravel()})


def _ratio_ci(num: pd.Series, den: pd.Series, var_num: pd.Series,
              var_den: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Rate num/den with a 95 % interval: binomial sampling + DP noise (delta method)."""
    den_pos = den.where(den > 0)
    p = (num / den_pos).clip(0, 1)
    var = p * (1 - p) / den_pos + (var_num + p * p * var_den) / den_pos**2
    half = Z95 * np.sqrt(var)
    return p, (p - half).clip(0, 1), (p + half).clip(0, 1)


def _lift(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Exposed vs control: relative uplift of the share of persons reaching each stage,
    with a 95 % interval (binomial sampling + DP noise, delta method)."""
    first = df[df["stage"] == STAGES[0]].set_index(key)[["count", "dp_var"]]
    base = df.join(first.rename(columns={"count": "_n", "dp_var": "_nvar"}), on=key)
    share, _, _ = _ratio_ci(base["count"], base["_n"], base["dp_var"], base["_nvar"])
    n = base["_n"].where(base["_n"] > 0)
    var = share * (1 - share) / n + (base["dp_var"] + share**2 * base["_nvar"]) / n**2
    wide = df[["campaign", "district_id", "stage", "group"]].assign(share=share, var=var)
    piv = wide.pivot_table(index=["campaign", "district_id", "stage"], columns="group",
                           values=["share", "var"], dropna=False)
    se, sc = piv[("share", "exposed")], piv[("share", "control")]
    ve, vc = piv[("var", "exposed")], piv[("var", "control")]
    lift = se / sc.where(sc > 0) - 1
    half = Z95 * np.sqrt(ve / sc**2 + se**2 * vc / sc**4)  # ratio of independent shares
    lifts = pd.DataFrame({"lift": lift, "lift_ci_low": lift - half, "lift_ci_high": lift + half})
    out = df.join(lifts, on=["campaign", "district_id", "stage"])
    no_lift = (out["group"] == "control") | (out["stage"] == STAGES[0])
    out.loc[no_lift, ["lift", "lift_ci_low", "lift_ci_high"]] = math.nan
    return out


def _peers(party: Any) -> list[str]:
    """Every other party in the room (none for a stand-in without a room, in tests)."""
    return list(getattr(party, "peers", []))
