"""From a composed config to typed settings: `settings(cfg)` (the task's schema instance, every value
checked), `section`, `as_settings`, `validate`; unknown keys get the nearest known one, and any OmegaConf
failure becomes one `ConfigError` line naming the key."""
from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from ..errors import ConfigError
from .arch import ARCHS, POLICY_ARCHS
from .checks import _choice, _seed


def _schema_of(node: Any) -> type | None:
    t = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    return t if t is not None and is_dataclass(t) else None


def _unknown_keys(name: str, node: DictConfig, schema: type) -> None:
    """A key a schema does not have (put there with `+key=`, or by a config file written by hand): the
    nearest known key is suggested. Nested schemas are walked."""
    known = {f.name: f for f in fields(schema)}
    for key in node:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" Did you mean {name}.{close[0]}?" if close else ""
            raise ConfigError(f"unknown key {name}.{key}.{hint} Known keys: {', '.join(sorted(known))}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and (sub := _schema_of(child)) is not None and not child._is_missing():
            _unknown_keys(f"{name}.{key}", child, sub)


def _to_object(name: str, node: DictConfig):
    try:
        return OmegaConf.to_object(node)
    except ConfigError:
        raise
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or name
        raise ConfigError(f"{key}=??? must be given (add {key}=... to the command line)") from None
    except OmegaConfBaseException as e:  # a wrong type: OmegaConf names the key in full_key
        key = getattr(e, "full_key", None) or name
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None


# keys of a schema that are handed on as they are (extra Trainer arguments given with +trainer.x=...)
OPEN_SECTIONS = ("trainer",)


def section(cfg: DictConfig, name: str, schema: type | None = None):
    """The typed, checked settings of one section of a config (a dataclass instance)."""
    node = cfg[name]
    schema = schema or _schema_of(node)
    if schema is None:
        raise ConfigError(f"{name} has no schema; it must be one of the config groups of conf/")
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{name} must be a mapping, got {node!r}")
    if _schema_of(node) is None:  # plain data (e.g. read back from an artifact): typed by the schema
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    if name not in OPEN_SECTIONS:
        _unknown_keys(name, node, schema)
    return _to_object(name, node)


def as_settings(schema: type, value):
    """`value` (a schema instance, a DictConfig or a plain dict) as a checked instance of `schema`."""
    if isinstance(value, schema):
        return value
    node = value if isinstance(value, DictConfig) else OmegaConf.create(dict(value))
    if _schema_of(node) is None:
        _unknown_keys(schema.__name__, node, schema)
        node = OmegaConf.merge(OmegaConf.structured(schema), node)
    return _to_object(schema.__name__, node)


def _without_hydra(cfg: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg


def _dotted(node, prefix: str = ""):
    """Every key of a config node, dotted (distill.optim.lr_images), parents before their children."""
    if isinstance(node, DictConfig):
        for k in node.keys():
            yield f"{prefix}{k}"
            if not node._get_node(k)._is_missing() and not node._get_node(k)._is_interpolation():
                yield from _dotted(node._get_node(k), f"{prefix}{k}.")


def _unknown_top_keys(cfg: DictConfig, schema: type) -> None:
    """A key added with `+` at the top of a task's config (`+distil.steps=3`, `+foo=bar`): no part of the task
    reads it, and the job would run its defaults without a word. Refused with the nearest key the config has."""
    known = {f.name for f in fields(schema)}
    for key in cfg.keys():
        if key == "hydra" or key in known:
            continue
        added = [k for k in _dotted(cfg._get_node(key), f"{key}.")] or [str(key)]
        leaf = next((k for k in reversed(added) if "." in k), str(key))
        have = [k for k in _dotted(_without_hydra(cfg)) if k.split(".")[0] in known]
        close = difflib.get_close_matches(leaf, have, n=1, cutoff=0.6) or difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the task's keys are: {', '.join(sorted(known))}"
        raise ConfigError(f"unknown key {leaf}: {hint} (no task reads it; a `+` adds only entries of a mapping, "
                          f"e.g. +study.tasks.<stage>=..., or extra Trainer arguments +trainer.<arg>=...)")


def _check(cfg: DictConfig):
    """Every check of `validate`; returns the typed settings when cfg has a task schema, else None."""
    if (root := _schema_of(cfg)) is not None:
        _unknown_top_keys(cfg, root)
    for name in list(cfg.keys()):
        if name == "hydra" or name in OPEN_SECTIONS:
            continue
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and not node._is_missing() and (schema := _schema_of(node)) is not None:
            _unknown_keys(name, node, schema)
    if "arch" in cfg and cfg.arch is not None:
        _choice("arch._target_", cfg.arch.get("_target_"), ARCHS)
        if "dataset" in cfg and cfg.get("env") is None and cfg.arch.get("_target_") in POLICY_ARCHS:
            name = str(cfg.arch.get("_target_")).rsplit(".", 1)[-1]
            raise ConfigError(f"arch {name} is a policy network for an RL task (env=cartpole, env=centipede); the "
                              f"dataset {cfg.dataset.get('name')} needs an image classifier: arch=mlp, lenet, "
                              f"simple_convnet or convnet (or add env=<name> to distill an RL task)")
    if "seed" in cfg:
        _seed("seed", cfg.seed)
    if _schema_of(cfg) is not None:  # one pass: every section's __post_init__, then the task's own keys
        return _to_object("config", _without_hydra(cfg))
    for name in list(cfg.keys()):  # a config composed by hand: each typed section on its own
        node = cfg._get_node(name)
        if name != "hydra" and isinstance(node, DictConfig) and not node._is_missing() and _schema_of(node):
            section(cfg, name)
    return None


def validate(cfg: DictConfig) -> DictConfig:
    """Check a composed config against its schemas; return cfg unchanged or raise ConfigError naming the key."""
    _check(cfg)
    return cfg


def settings(cfg: DictConfig):
    """The whole config as typed settings: the task's schema instance (e.g. DistillJob) whose sections
    are the group schemas' instances, every value checked (`validate`)."""
    typed = _check(cfg)
    if typed is None:
        raise ConfigError("this config was not composed from a task's conf/<task>.yaml (it has no task schema)")
    return typed
