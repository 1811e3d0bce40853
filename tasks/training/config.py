"""The training config with OmegaConf, as NeMo's scripts compose theirs: base YAML, then the profile, then
dotted overrides (`model.optim.lr=5e-5 trainer.max_epochs=3`), merged with `OmegaConf.merge`.

`configs/<model>.yaml` is the schema as well as the defaults: each value there gives its key a type
(int, float, bool, str, list, section) in a structured config, so OmegaConf itself refuses a profile or
an override with an unknown key or a value of the wrong type; the error becomes one sentence naming the
key. Keys that are null or `???` in the base file, interpolations, and the Lightning arguments that take
several types (`ANY_TYPED`: OmegaConf 2.3 has no Union) accept any value. Interpolations such as
`${model.language_model.pretrained_model_name}` stay unresolved here; OmegaConf resolves them when NeMo
reads the config.

`resolve_config` is the one place that composes a config and its fingerprint: the DAG's plan step (the
skip-if-unchanged check, orchestration env) and `train` (training env) both call it. No NeMo import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, List  # noqa: UP035  (OmegaConf 2.3 reads typing.List, not list[...])

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from tasks.errors import DataError, UsageError
from tasks.training.limits import check_limits
from tasks.vocab import Model, Profile

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
MISSING = "???"
# Lightning Trainer arguments that take more than one type (devices: 1 | "auto" | [0, 1]; precision:
# 32 | "bf16-mixed"; val_check_interval: 1.0 (fraction) | 50 (batches); logger: bool | a logger;
# deterministic: bool | "warn").
ANY_TYPED = frozenset(
    {
        "trainer.devices",
        "trainer.precision",
        "trainer.val_check_interval",
        "trainer.logger",
        "trainer.deterministic",
    }
)


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """A composed config (typed, struct mode, interpolations unresolved) and its fingerprint."""

    model: str
    profile: str
    overrides: tuple[str, ...]
    config: DictConfig
    fingerprint: str  # sha256 (16 hex) of the config: the DAG skips training when it equals the champion's

    def to_container(self) -> dict[str, Any]:
        """A plain dict copy, interpolations unresolved, `???` kept as the string."""
        return OmegaConf.to_container(self.config, resolve=False)


def _untyped(path: str, value: Any) -> bool:
    return (
        path in ANY_TYPED or value is None or (isinstance(value, str) and (value == MISSING or "${" in value))
    )


def _leaf_type(value: Any) -> Any:
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        inner = kinds.pop() if len(kinds) == 1 and kinds <= {bool, int, float, str} else Any
        return List[inner]  # noqa: UP006
    return type(value)


def _schema(name: str, node: dict[str, Any], prefix: str = "") -> type:
    """A dataclass whose fields have the types and defaults of the base YAML (recursively)."""
    fields = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            sub = _schema(f"{name}_{key}", value, f"{path}.")
            fields.append((key, sub, dataclasses.field(default_factory=sub)))
        elif _untyped(path, value):
            fields.append((key, Any, dataclasses.field(default=value)))
        elif isinstance(value, list):
            fields.append(
                (key, _leaf_type(value), dataclasses.field(default_factory=lambda v=value: list(v)))
            )
        else:
            fields.append((key, _leaf_type(value), dataclasses.field(default=value)))
    return dataclasses.make_dataclass(name, fields)


@cache
def _base_schema(model: str) -> type:
    base = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{model}.yaml"), resolve=False)
    return _schema(f"{model.capitalize()}Config", base)


def _problem(exc: OmegaConfBaseException) -> str:
    """OmegaConf's own message, first line, as the tail of a sentence."""
    msg = str(getattr(exc, "msg", None) or exc).splitlines()[0].strip()
    return msg[:1].lower() + msg[1:]


def _apply_override(cfg: DictConfig, text: str) -> DictConfig:
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("+")
    # OmegaConf.from_dotlist reads a bare `key` as key=null: require the `=` as Hydra does.
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"override {text!r} is not KEY=VALUE with a dotted key such as model.optim.lr=5e-5")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={raw}"]))
    except yaml.YAMLError as exc:
        raise UsageError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from None
    except ConfigKeyError as exc:
        raise UsageError(f"override {text!r}: unknown config key {exc.full_key!r}") from None
    except ValidationError as exc:
        where = exc.full_key or key
        if key.startswith(f"{where}."):
            raise UsageError(f"override {text!r}: {where!r} is not a section of the config") from None
        if isinstance(OmegaConf.select(cfg, where), DictConfig):
            raise UsageError(
                f"override {text!r}: {where!r} is a section of the config, not a value"
            ) from None
        raise UsageError(f"override {text!r}: config key {where!r}: {_problem(exc)}") from None
    except OmegaConfBaseException as exc:
        raise UsageError(f"override {text!r}: {_problem(exc)}") from None


def _with_profile(cfg: DictConfig, model: str, profile: str) -> DictConfig:
    path = CONFIG_DIR / "profiles" / f"{profile}.yaml"
    section = OmegaConf.load(path).get(model) or {}
    try:
        return OmegaConf.merge(cfg, section)
    except ConfigKeyError as exc:
        raise DataError(f"{path}: field {model}.{exc.full_key} is not a key of {model}.yaml") from None
    except OmegaConfBaseException as exc:
        raise DataError(f"{path}: field {model}.{exc.full_key}: {_problem(exc)}") from None


def fingerprint(model: str, profile: str, cfg: DictConfig) -> str:
    """sha256 (16 hex) of the config's values: key order and YAML comments do not change it."""
    doc = {"model": model, "profile": profile, "config": OmegaConf.to_container(cfg, resolve=False)}
    canonical = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def resolve_config(
    model: str, profile: str, overrides: list[str] | tuple[str, ...] | None = None
) -> ResolvedConfig:
    """The config of `model` under `profile` with `overrides` applied, and its fingerprint.

    Raises:
        UsageError: an unknown model or profile, a malformed override, an unknown key, a wrong type or a
            value out of its range (`tasks.training.limits`).
    """
    model = Model.parse(model).value
    profile = Profile.parse(profile).value
    overrides = tuple(overrides or ())
    cfg = _with_profile(OmegaConf.structured(_base_schema(model)), model, profile)
    for text in overrides:
        cfg = _apply_override(cfg, text)
    check_limits(flatten(cfg))  # ranges (max_epochs >= 1, ...): keys and types are the schema's
    return ResolvedConfig(model, profile, overrides, cfg, fingerprint(model, profile, cfg))


def config_fingerprint(model: str, profile: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """The fingerprint alone (the DAG's plan step compares it with the champion's tag)."""
    return resolve_config(model, profile, overrides).fingerprint


def flatten(cfg: DictConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (MLflow params); interpolations unresolved."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
