"""Compose a training config: base YAML + profile + dotted overrides, with pyyaml only.

NeMo's own scripts do this with Hydra; here it is plain dict merging so that the orchestration env
(the DAG's skip-if-unchanged check) can compute the same resolved config without NeMo or OmegaConf.
Interpolations such as `${model.language_model.pretrained_model_name}` stay unresolved here; OmegaConf
resolves them when the config reaches NeMo.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tasks.errors import UsageError
from tasks.vocab import MODELS, PROFILES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MISSING = "???"


def _read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.optim.lr=5e-5` -> (["model", "optim", "lr"], 5e-05); values are YAML scalars or lists."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"override {text!r} is not KEY=VALUE with a dotted key such as model.optim.lr=5e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UsageError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from exc
    return key.split("."), value


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of `cfg`; a key not in the config is a usage error (exit 2)."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(path[: i + 1])
                raise UsageError(f"override {text!r}: {where!r} is not a section of the config")
            node = node[part]
        if path[-1] not in node:
            raise UsageError(f"override {text!r}: unknown config key {'.'.join(path)!r}")
        node[path[-1]] = value
    return out


def _fix_floats(node: Any) -> Any:
    """YAML 1.1 leaves `5e-5` (no dot) a string: turn such numeric strings into floats."""
    if isinstance(node, dict):
        return {k: _fix_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_floats(v) for v in node]
    if isinstance(node, str) and node[:1] in "0123456789.+-" and "e" in node.lower():
        try:
            return float(node)
        except ValueError:
            return node
    return node


def compose(model: str, profile: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The config for `model` under `profile` with `overrides` applied (unresolved interpolations)."""
    if model not in MODELS:
        raise UsageError(f"model {model!r} is not one of {', '.join(MODELS)}")
    if profile not in PROFILES:
        raise UsageError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    base = _read_yaml(CONFIG_DIR / f"{model}.yaml")
    prof = _read_yaml(CONFIG_DIR / "profiles" / f"{profile}.yaml").get(model, {})
    return _fix_floats(apply_overrides(_merge(base, prof), list(overrides or [])))


def get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
