"""YAML configs: loading with dotted overrides, and one validating `instantiate`.

A component is written as `{target: dotted.path.Class, params: {...}}`. `instantiate` accepts only targets
from this project (and a short allowlist), checks `params` against the constructor signature (unknown or
missing keys raise with the class name and the valid keys) and instantiates nested components first.

References:
    crowsonkb/k-diffusion `config.py` (explicit, validated construction);
    Stability-AI/stablediffusion `ldm/util.py::instantiate_from_config` (the `target`/`params` format).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "ldm.",
    "comparison_models.",
    "torch.optim.",
    "lightning.pytorch.callbacks.",
)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a YAML config and apply `key.sub=value` overrides (OmegaConf dotlist syntax).

    Args:
        path: YAML file.
        overrides: e.g. `["model.params.scale_factor=0.2"]`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an override is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    cfg = OmegaConf.load(path)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like key.sub=value.")
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def to_container(cfg: Any) -> Any:
    """Plain Python containers with interpolations resolved."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _import_target(target: str) -> Any:
    if not isinstance(target, str) or not target.startswith(ALLOWED_TARGET_PREFIXES):
        raise ValueError(
            f"Config target {target!r} is not allowed; targets must start with one of {ALLOWED_TARGET_PREFIXES}."
        )
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Config target {target!r} cannot be imported: {err}") from None


def check_params(obj: Any, params: Mapping[str, Any], *, name: str) -> None:
    """Raise if `params` has keys the callable does not accept, or lacks required ones."""
    sig = inspect.signature(obj)
    accepted = {
        k: p
        for k, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    unknown = sorted(set(params) - set(accepted))
    if unknown and not has_var_kw:
        raise ValueError(f"{name}: unknown config key(s) {unknown}; valid keys: {sorted(accepted)}.")
    missing = sorted(k for k, p in accepted.items() if p.default is inspect.Parameter.empty and k not in params)
    if missing:
        raise ValueError(f"{name}: missing required config key(s) {missing}.")


def is_component(value: Any) -> bool:
    return isinstance(value, (Mapping, DictConfig)) and "target" in value


def instantiate(cfg: Mapping[str, Any] | DictConfig, **extra: Any) -> Any:
    """Build the object a `{target, params}` node describes.

    Nested nodes that are themselves `{target, params}` mappings are built first. `extra` keyword arguments
    are added to (and override) `params`.

    Raises:
        ValueError: missing `target`, a target outside the allowlist, or params that do not fit the signature.
    """
    cfg = to_container(cfg)
    if not isinstance(cfg, Mapping) or "target" not in cfg:
        raise ValueError(f"Expected a config node with a 'target' key; got {cfg!r:.200}.")
    unknown_top = set(cfg) - {"target", "params"}
    if unknown_top:
        raise ValueError(f"Config node for {cfg['target']}: unknown keys {sorted(unknown_top)} (use target/params).")
    obj = _import_target(cfg["target"])
    params = dict(cfg.get("params") or {})
    params.update(extra)
    check_params(obj, params, name=cfg["target"])
    params = {k: instantiate(v) if is_component(v) else v for k, v in params.items()}
    return obj(**params)
