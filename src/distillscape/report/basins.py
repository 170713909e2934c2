"""Section "Is the landing a minimum?", its part "One basin or two": the barriers along the trained curves
landing -> direct minimum beside the straight lines' (landing_stats.json["curve"], distillscape.basins)."""
from __future__ import annotations

from ..stats import separated
from .text import ci_text

PATHS = {"line": "straight line", "curve": "curve"}


def basin_pivot(curve: dict) -> tuple[list[str], list[list[str]]]:
    """Split (train, test) x barrier along the straight line, along the curve and their paired difference,
    each as mean [95% interval] (n)."""
    b, diff = curve.get("barriers") or {}, curve.get("line_minus_curve") or {}
    header = ["split", "barrier, straight line", f"barrier, {curve.get('kind')} curve", "straight − curve (paired)"]
    return header, [[split, ci_text(b.get(f"barrier_line_{split}")), ci_text(b.get(f"barrier_curve_{split}")),
                     ci_text(diff.get(split))] for split in ("train", "test")]


def basin_sentences(curve: dict) -> list[str]:
    """"One basin or two": the curved and straight train-loss barriers with their intervals; a barrier is called
    one, and the two called different, only where the interval excludes zero."""
    b, diff = curve.get("barriers") or {}, (curve.get("line_minus_curve") or {}).get("train")
    line, curved = b.get("barrier_line_train"), b.get("barrier_curve_train")
    if not line or not curved or not diff:
        return []
    ends = curve.get("line_train_loss") or []
    scale = f" (the mean end losses: {ends[0]:.3g} at the landing, {ends[-1]:.3g} at the direct minimum)" if ends else ""
    kind = {"bezier": "quadratic Bezier curve", "polychain": "polygonal chain (one bend)"}.get(curve.get("kind"), "curve")
    on_line = ("the straight line crosses a barrier" if separated(line, 0.0) > 0
               else "no clear barrier on the straight line (its interval includes 0)")
    lowered = separated(diff, 0.0)
    if separated(curved, 0.0) <= 0:
        on_curve = "no clear barrier along the curve (its interval includes 0): a low-loss path joins them, one basin"
    elif lowered > 0:
        share = curved["mean"] / line["mean"] if line["mean"] else float("nan")
        on_curve = (f"along the curve a barrier remains beyond its interval, {share:.1%} of the straight line's: the "
                    "curve joins them lower, though not flat")
    else:
        on_curve = ("the curve does not lower the barrier beyond its interval: no lower path was found, which points "
                    "to two basins (or to a curve trained too briefly)")
    difference = {1: f"the curve lowers the barrier by {ci_text(diff)}", -1: f"the curve raises it, by {ci_text(diff)}",
                  0: f"no clear difference between the two (straight − curve {ci_text(diff)}: the interval includes 0)"}
    return [f"One basin or two: from each of {curve.get('landings')} landings to the direct minimum, a {kind} trained "
            f"on the true task ({curve.get('steps')} steps) has a train-loss barrier of {ci_text(curved)}, the straight "
            f"line {ci_text(line)} (mean [95% interval] (n); the barrier is the largest height of the loss above the "
            f"straight line between the two end losses){scale}. {on_line[0].upper() + on_line[1:]}; {on_curve}; "
            f"{difference[lowered]}."]
