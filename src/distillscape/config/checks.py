"""The range checks the schemas' `__post_init__`s run: each raises one `ConfigError` line that names
the key and what is allowed."""
from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from .names import MAX_MODELS, MAX_SEED, PRECISIONS


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _finite(key: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")


def _at_least(key: str, value, low, strict: bool = False) -> None:
    if value is None:
        return
    _finite(key, value)
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}={value} must be {'>' if strict else '>='} {low}")


def _at_most(key: str, value, high, why: str) -> None:
    if value is not None and value > high:
        raise ConfigError(f"{key}={value} must be <= {high} ({why})")


def _count(key: str, value, low: int = 1) -> None:
    """A number of models, steps or examples: at least `low`, and not absurdly many."""
    _at_least(key, value, low)
    _at_most(key, value, MAX_MODELS, "more would exhaust memory before it ran")


def _seed(key: str, value) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key}={value!r} must be an integer in [0, {MAX_SEED}]")


def _rate(key: str, value) -> None:
    _at_least(key, value, 0.0, strict=True)


def _precision(prefix: str, precision: str, tolerance: float, sample_key: str, sample: int) -> None:
    """A precision option and its certificate's settings: precision one of PRECISIONS, a positive tolerance,
    a sample of at least 0 (the certificate's fp32 recomputations)."""
    _choice(f"{prefix}.precision", precision, PRECISIONS)
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"{prefix}.precision_tolerance={tolerance} must be a positive number "
                          f"(e.g. 1e-3: a bf16 loss within 0.1% of fp32)")
    _at_least(f"{prefix}.{sample_key}", sample, 0)
