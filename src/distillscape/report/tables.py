"""Raw metric tables: any JSON result as rows (metric, mean ± std, n, range), for the appendix and the
logger's table of every metric."""
from __future__ import annotations

from dataclasses import dataclass

from .reading import RunRecord
from .text import _is_number, binary_count


SKIP_KEYS = {"config", "settings", "groups", "per_image", "confusion_matrices", "normalization", "classes", "arch", "inner",
             "figures", "param_names", "format_version", "image_shape", "num_classes"}


@dataclass
class Row:
    metric: str
    mean: float | str
    std: float | None = None
    n: float | None = None
    range: tuple[float, float] | None = None

    def cells(self) -> list[str]:
        n = f"{int(self.n)}" if isinstance(self.n, (int, float)) else ""
        rng = f"{self.range[0]:.4g} .. {self.range[1]:.4g}" if self.range else ""
        binary = self.range is None or set(self.range) <= {0, 1}
        if binary and (k := binary_count(self.mean, self.std, self.n)) is not None:
            return [self.metric, f"{k}/{int(self.n)}", n, rng]
        mean = f"{self.mean:.4g}" if isinstance(self.mean, (int, float)) else str(self.mean)
        std = f" ± {self.std:.3g}" if self.std is not None else ""
        return [self.metric, mean + std, n, rng]


def _find_n(base: str, flat: dict) -> float | None:
    """The number of inits behind `base`: `<base>_inits`/`_n`, or the same for a shorter prefix
    (test/onestep_acc -> test/onestep_inits; random_real/acc -> random_real/inits)."""
    head, _, tail = base.rpartition("/")
    parts = tail.split("_")
    for i in range(len(parts), 0, -1):
        stem = (head + "/" if head else "") + "_".join(parts[:i])
        for suffix in ("_inits", "_n"):
            if _is_number(flat.get(stem + suffix)):
                return flat[stem + suffix]
    for key in ("inits", "n"):
        if head and _is_number(flat.get(f"{head}/{key}")):
            return flat[f"{head}/{key}"]
    return None


def flat_rows(flat: dict) -> list[Row]:
    """Rows of a flat `name -> number` dict, folding `x_mean`, `x_std`, `x_min`, `x_max` into one row
    with the number of inits found beside them."""
    rows, used = [], set()
    for k, v in flat.items():
        if k.endswith("_mean") and _is_number(v):
            base = k[:-5]
            std = flat.get(base + "_std")
            lo, hi = flat.get(base + "_min"), flat.get(base + "_max")
            rows.append(Row(base, v, std if _is_number(std) else None, _find_n(base, flat),
                            (lo, hi) if _is_number(lo) and _is_number(hi) else None))
            used |= {k, base + "_std", base + "_min", base + "_max"}
    for k, v in flat.items():
        if k not in used and _is_number(v):
            # a plain number is a mean over inits only when it is an accuracy or a loss
            per_init = any(w in k.rsplit("/", 1)[-1] for w in ("acc", "loss"))
            rows.append(Row(k, v, None, _find_n(k, flat) if per_init else None))
    return rows


def nested_rows(data, prefix: str = "") -> list[Row]:
    """Rows of any JSON result: a dict with a numeric `mean` is one row (with `std` and `n`/`inits` if
    present), other dicts are walked, numbers at the same level are folded by `flat_rows`."""
    if not isinstance(data, dict):
        return []
    if _is_number(data.get("mean")):
        n = next((data[k] for k in ("n", "inits", "count") if _is_number(data.get(k))), None)
        std = data.get("std")
        lo, hi = data.get("min"), data.get("max")
        return [Row(prefix.rstrip("/") or "value", data["mean"], std if _is_number(std) else None, n,
                    (lo, hi) if _is_number(lo) and _is_number(hi) else None)]
    rows, flat = [], {}
    for k, v in data.items():
        if k in SKIP_KEYS:
            continue
        if isinstance(v, dict):
            rows += nested_rows(v, f"{prefix}{k}/")
        elif _is_number(v):
            flat[f"{prefix}{k}"] = v
        elif isinstance(v, list) and 0 < len(v) <= 8 and all(_is_number(x) for x in v):
            rows.append(Row(f"{prefix}{k}", ", ".join(f"{x:.4g}" for x in v)))
    return flat_rows(flat) + rows


def all_rows(runs: list[RunRecord]) -> list[list]:
    """Every metric as (run, file, metric, mean, std, n): the logger's table."""
    out = []
    for run in runs:
        for name, data in run.results.items():
            for r in nested_rows(data):
                if _is_number(r.mean):
                    out.append([run.label, name, r.metric, float(r.mean),
                                None if r.std is None else float(r.std), None if r.n is None else float(r.n)])
    return out
