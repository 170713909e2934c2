"""Section "Where does one step land on the true task?": the landing_stats.json table and its sentences."""
from __future__ import annotations

import math

from ..landing import STATS as LANDING_STATS
from .text import _is_number, mean_interval, stat_text


def landing_kinds(stats: dict) -> dict[str, dict]:
    """kind -> stat -> {"mean", "std", "n"} of a landing_stats.json (its `kinds`; an older file kept
    the kinds at the top level)."""
    if isinstance(stats.get("kinds"), dict):
        return stats["kinds"]
    return {k: v for k, v in stats.items() if isinstance(v, dict) and v
            and all(isinstance(x, dict) and "mean" in x for x in v.values())}


def landing_pivot(stats: dict) -> tuple[list[str], list[list[str]]]:
    """Statistic x kind (distilled, random real, random synthetic) of a landing_stats.json: mean ± std
    with n, rates of 0/1 events as k/n; the direct minimum's value where it has the statistic."""
    kinds = landing_kinds(stats)
    if not kinds:
        return [], []
    names = list(kinds)
    direct = stats.get("direct_minimum", {}) or {}
    header = ["statistic"] + [k.replace("_", " ") for k in names] + (["direct minimum"] if direct else []) + ["what it is"]
    rows, seen = [], []
    for kind in names:
        seen += [s for s in kinds[kind] if s not in seen]
    for stat in seen:
        row = [stat] + [stat_text(kinds[k].get(stat)) for k in names]
        if direct:
            # landing_train_loss -> train_loss, top_eig_landing -> top_eig: the direct minimum's own value
            key = stat.removeprefix("landing_").removesuffix("_landing")
            row.append(f"{direct[key]:.4g}" if "landing" in stat and key != stat and _is_number(direct.get(key)) else "")
        rows.append(row + [LANDING_STATS.get(stat, "")])
    return header, rows


def landing_summary(stats: dict) -> list[str]:
    out = []

    def mean(kind, stat):
        v = landing_kinds(stats).get(kind, {}).get(stat, {})
        return v.get("mean") if _is_number(v.get("mean")) and math.isfinite(v["mean"]) else None

    loss, direct_loss = mean("distilled", "landing_train_loss"), (stats.get("direct_minimum") or {}).get("train_loss")
    if loss is not None and _is_number(direct_loss):
        out.append(f"The distilled landing's train loss is {loss:.3g}, against {direct_loss:.3g} at the direct "
                   f"minimum" + (f" and {mean('random_real', 'landing_train_loss'):.3g} after one step on random real "
                                 f"images" if mean("random_real", "landing_train_loss") is not None else "") + ".")
    if (b := mean("distilled", "barrier_to_direct")) is not None:
        ref = max(loss or 0.0, 1e-12)
        verdict = "linearly connected" if b <= 0.05 * ref else "not linearly connected"
        out.append(f"The landing's barrier to the direct minimum is {b:.3g}: {verdict} "
                   f"(threshold: 5% of the landing's train loss).")
    ratio = landing_kinds(stats).get("distilled", {}).get("grad_norm_ratio", {})
    if (g := mean("distilled", "grad_norm_ratio")) is not None:
        low, high = mean_interval(ratio)
        # a gradient norm says how far a point is from stationary, not how flat the surface is there
        if math.isfinite(low) and (high < 1 or low > 1):
            verdict = ("the landing is closer to stationary than the init" if high < 1 else
                       "the landing is further from stationary than the init")
        else:
            verdict = "no clear difference from the init in how far from stationary it is"
        interval = f" (95% interval [{low:.3g}, {high:.3g}] over {ratio.get('n')} landings)" if math.isfinite(low) else ""
        out.append(f"The gradient norm at the landing is {g:.3g}× the gradient norm at the init{interval}: {verdict}. "
                   "(A gradient norm measures distance from stationarity, not flatness; curvature is in \"Is the "
                   "landing a minimum?\".)")
    if (r := mean("distilled", "polish_distance_ratio")) is not None and (drop := mean("distilled", "polish_loss_drop")) is not None:
        out.append(f"Polishing on real data moves {r:.3g}× the step's length further and removes {drop:.3g} train loss: "
                   + ("the landing is close to where training on real data settles." if r < 1 and drop < 0.1 * max(loss or 1, 1e-12) else
                      "training on real data still moves it and lowers its loss."))
    return out
