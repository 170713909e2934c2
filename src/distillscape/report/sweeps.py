"""Across the jobs of a multirun: jobs grouped by their overrides (seeds pooled) with their headline
metrics, and the swept settings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .reading import RunRecord, _is_path_override, _metrics, _override_kv
from .text import _is_number


SEED_KEYS = ("seed", "distill.seed", "distill.init_seed", "distill.eval_seed", "baseline.seed")


SWEEP_METRICS = {"test/onestep_acc_mean": "one-step test accuracy", "random_real/acc_mean": "random real one-step accuracy",
                 "direct/acc": "direct training accuracy"}


def sweep_groups(runs: list[RunRecord]) -> dict[Path, list[dict]]:
    """Per multirun: its jobs grouped by their overrides other than seeds, each group with the settings
    that define it, its jobs and mean ± std across them (n = jobs) of the headline metrics."""
    out: dict[Path, list[dict]] = {}
    for sweep in dict.fromkeys(r.sweep for r in runs if r.sweep is not None):
        jobs = [r for r in runs if r.sweep == sweep]
        groups: dict[tuple, dict] = {}
        for run in jobs:
            settings = {k: v for k, v in map(_override_kv, run.overrides)
                        if k not in SEED_KEYS and not _is_path_override(k) and (run.varying is None or k in run.varying)}
            g = groups.setdefault(tuple(sorted(settings.items())), {"settings": settings, "jobs": [], "values": {}})
            g["jobs"].append(run)
            m = _metrics(run)
            for key in SWEEP_METRICS:
                if _is_number(m.get(key)):
                    g["values"].setdefault(key, []).append(float(m[key]))
        for g in groups.values():
            g["stats"] = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                              "n": len(v)} for k, v in g["values"].items()}
            g["label"] = " ".join(f"{k}={v}" for k, v in g["settings"].items()) or "all jobs"
        out[sweep] = list(groups.values())
    return out


def swept_keys(groups: list[dict]) -> list[str]:
    """The settings whose value differs between groups (the axes of the sweep), numeric ones first."""
    keys = list(dict.fromkeys(k for g in groups for k in g["settings"]))
    varying = [k for k in keys if len({g["settings"].get(k) for g in groups}) > 1]

    def numeric(k):
        try:
            [float(g["settings"][k]) for g in groups if k in g["settings"]]
            return True
        except ValueError:
            return False
    return sorted(varying, key=lambda k: not numeric(k))
