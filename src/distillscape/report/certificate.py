"""Section "Is the landing a minimum?": the curvature certificate's verdict table and sentences."""
from __future__ import annotations

import math

from .text import _is_number, stat_text


VERDICT_NAMES = {"minimum": "minima", "saddle": "saddles", "not_stationary": "not stationary"}


CERTIFIED = {"lambda_max": "λ_max", "lambda_min": "λ_min", "abs_ratio": "|λ_min| / λ_max", "grad_norm": "‖∇L‖",
             "trace_slq": "trace (SLQ)"}


def certificate_pivot(cert: dict) -> tuple[list[str], list[list[str]]]:
    """Group (init, landing, direct minimum) x verdict counts (k/n with Wilson 95% interval) and the mean ±
    std of the certified statistics."""
    header = ["points", *VERDICT_NAMES.values(), *CERTIFIED.values()]
    rows = []
    for group, d in (cert.get("groups") or {}).items():
        c, st = d.get("counts", {}), d.get("stats", {})
        rows.append([group.replace("_", " ")]
                    + [f"{c[v]['k']}/{c[v]['n']} [{c[v]['low']:.2f}, {c[v]['high']:.2f}]" if v in c else "" for v in VERDICT_NAMES]
                    + [stat_text(st.get(k), with_n=False) for k in CERTIFIED])
    return header, rows


def certificate_summary(cert: dict) -> list[str]:
    """Sentences of a certificate.json, each with the statistic it rests on."""
    out, groups, s = [], cert.get("groups") or {}, cert.get("settings") or {}
    # certificates written before `objective` was recorded are all on the true task
    on = s.get("objective") or f"the true task ({s.get('examples')} training examples)"
    rule = (f"(a point is a minimum when ‖∇L‖ ≤ {s.get('grad_tol')} and none of its {s.get('certificate_eigs')} lowest "
            f"Ritz values θ has θ < −(residual + {s.get('negative_tol')} λ_max); Lanczos on the Hessian of {on})")
    for group, what in (("landing", "landings"), ("init", "inits")):
        if (c := groups.get(group, {}).get("counts")):
            n = next(iter(c.values()))["n"]
            parts = [f"{c[v]['k']} {name} (95% interval of the fraction [{c[v]['low']:.2f}, {c[v]['high']:.2f}])"
                     for v, name in VERDICT_NAMES.items() if v in c]
            neg = groups[group].get("negative_curvature")
            more = (f" {neg['k']} of {n} have certified negative curvature, whatever their gradient (95% interval "
                    f"[{neg['low']:.2f}, {neg['high']:.2f}])." if neg else "")
            out.append(f"Of {n} {what}, " + ", ".join(parts) + (f" {rule}." if group == "landing" else ".") + more)
    if (dm := groups.get("direct_minimum", {}).get("points")):
        p = dm[0]
        why = {"minimum": "it is certified as a minimum",
               "saddle": f"it is NOT a minimum but a saddle ({p['negative_count']} significantly negative eigenvalues)",
               "not_stationary": f"it is NOT a minimum: not stationary (‖∇L‖ = {p['grad_norm']:.3g} > {s.get('grad_tol')})"}
        out.append(f"The direct minimum: λ_max {p['lambda_max']:.4g}, λ_min {p['lambda_min']:.4g}, "
                   f"‖∇L‖ {p['grad_norm']:.3g}: {why.get(p['verdict'], p['verdict'])}.")
    if (estimate := s.get("return_estimate")):  # an RL run's: what of the return is certified
        out.append(f"Return estimate certified: {estimate}.")
    for key, what in (("lambda_max", "The top Hessian eigenvalue λ_max"), ("abs_ratio", "|λ_min| / λ_max")):
        d = (cert.get("landing_minus_init") or {}).get(key)
        if not d or not _is_number(d.get("low")) or not math.isfinite(d["low"]):
            continue
        differs = d["low"] > 0 or d["high"] < 0
        out.append(f"{what} at the landing minus at its init: {d['mean']:.3g} (95% interval [{d['low']:.3g}, "
                   f"{d['high']:.3g}], {d['n']} pairs): " + (("higher" if d["low"] > 0 else "lower") + " at the landing."
                                                          if differs else "no clear difference."))
    return out
