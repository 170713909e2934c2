"""Section "Do the distilled instances look like real data?": the likeness table of an instances.json
and its sentences, and which classes no distilled image stands for."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .reading import _read_json
from .text import stat_text


LIKENESS_RATES = ("pixel_nn_same_class", "feature_nn_same_class", "class_mean_nearest_is_own", "direct_agrees")


LIKENESS_STATS = {  # likeness statistic -> what it is, for the table and the sentences
    "pixel_nn_same_class": "nearest real image (pixels) has its class",
    "feature_nn_same_class": "nearest real image (direct-model features) has its class",
    "class_mean_nearest_is_own": "nearest real class mean is its class",
    "direct_agrees": "direct model predicts its class",
    "class_mean_cosine_own": "cosine to its class mean",
    "class_mean_cosine_best_other": "cosine to the nearest other class mean",
    "pixel_nn_rms": "RMS pixel distance to the nearest real image",
    "feature_nn_rms": "RMS feature distance to the nearest real image",
}


def likeness_pivot(instances: dict) -> tuple[list[str], list[list[str]]]:
    """Statistic x batch kind (distilled / random real / noise) table of an instances.json; rates of
    0/1 events as k/n."""
    lk = instances.get("likeness", {})
    kinds = list(lk)
    if not kinds:
        return [], []
    header = ["statistic"] + [f"{k} (n={next(iter(lk[k].values()))['n']})" for k in kinds]
    rows = [[f"{stat}: {LIKENESS_STATS[stat]}" if stat in LIKENESS_STATS else stat]
            + [stat_text(lk[k].get(stat), with_n=False, known_rate=stat in LIKENESS_RATES) for k in kinds]
            for stat in lk[kinds[0]]]
    return header, rows


def likeness_summary(instances: dict) -> list[str]:
    lk = instances.get("likeness", {})
    if "distilled" not in lk:
        return []
    others = [k for k in lk if k != "distilled"]
    out = []
    for stat in ("pixel_nn_same_class", "feature_nn_same_class", "direct_agrees"):
        d = lk["distilled"].get(stat)
        if not d:
            continue
        cmp = ", ".join(f"{k.replace('_', ' ')} {stat_text(lk[k].get(stat), with_n=False, known_rate=True)}"
                        for k in others if stat in lk[k])
        out.append(f"{LIKENESS_STATS[stat][0].upper() + LIKENESS_STATS[stat][1:]}: "
                   f"{stat_text(d, with_n=False, known_rate=True)} distilled images" + (f" ({cmp})." if cmp else "."))
    if all("pixel_nn_rms" in lk.get(k, {}) for k in ("distilled", "random_real", "noise")):
        d, r, z = (lk[k]["pixel_nn_rms"]["mean"] for k in ("distilled", "random_real", "noise"))
        if d <= r:
            where = "as close to real images as held-out real images are, or closer"
        elif d >= z:
            where = "as far from real images as noise is, or farther"
        else:
            where = f"between held-out real images and noise, nearer {'the real images' if d - r < z - d else 'noise'}"
        out.append(f"In pixel space the distilled images lie {where}: RMS distance to the nearest real training "
                   f"image {d:.3g} (random real {r:.3g}, noise {z:.3g}).")
    return out


def class_coverage(instances: dict) -> tuple[list[str], list[str]]:
    """(every class, the classes no distilled image stands for) of an instances.json: an image stands for
    its soft label's most likely class (per_image[i].label); the classes are those of the batch's
    distilled.json (its `source`), else those its confusion matrices span."""
    meta = _read_json(Path(instances["source"]) / "distilled.json") if isinstance(instances.get("source"), str) else None
    classes = [str(c) for c in (meta or {}).get("classes") or []]
    if not classes and instances.get("confusion_matrices"):
        size = len(next(iter(instances["confusion_matrices"].values())))
        classes = [str(c) for c in range(size)]
    stood_for = {str(p.get("label")) for p in instances.get("per_image") or [] if isinstance(p, dict)}
    return classes, [c for c in classes if c not in stood_for]


def one_step_recall(instances: dict) -> dict[str, float]:
    """class -> recall of the pooled one-step models (the diagonal of their row-normalised test confusion
    matrix), where instances.json holds it."""
    matrices = instances.get("confusion_matrices") or {}
    key = next((k for k in matrices if "one-step models, pooled" in k), None)
    if key is None:
        return {}
    m = np.asarray(matrices[key], dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        return {}
    classes, _ = class_coverage(instances)
    names = classes if len(classes) == len(m) else [str(i) for i in range(len(m))]
    rows = m.sum(1)
    return {names[i]: float(m[i, i] / rows[i]) for i in range(len(m)) if rows[i] > 0}


def class_coverage_summary(instances: dict) -> list[str]:
    """Which classes no distilled image stands for, and how one step does on them."""
    classes, missing = class_coverage(instances)
    if not classes:
        return []
    if not missing:
        return [f"Every class has a distilled image that stands for it (its soft label's most likely class): "
                f"{len(classes)} of {len(classes)}."]
    recall = one_step_recall(instances)
    text = (f"No distilled image stands for class{'es' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(no image's soft label has {'them' if len(missing) > 1 else 'it'} as its most likely class): "
            f"{len(classes) - len(missing)} of {len(classes)} classes are covered.")
    if recall:
        others = [v for c, v in recall.items() if c not in missing]
        text += (" One step's test recall on " + ", ".join(f"{c}: {recall[c]:.2f}" for c in missing if c in recall)
                 + (f", against {np.mean(others):.2f} on the other classes." if others else "."))
    return [text]
