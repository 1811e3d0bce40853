"""The gate policy: `tasks/gates.yaml` (or another file of that shape) read and validated with pydantic.

A bad policy is one sentence naming the file, the line and the field (`gates.yaml:17: field
classifier.bootstrap.resamples must be greater than or equal to 1000, got 50`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError
from pydantic import create_model as _create_model

from tasks.errors import DataError, UsageError
from tasks.vocab import GATE_METRIC, Model, Profile, field_error

POLICY_FILE = Path(__file__).resolve().parents[1] / "gates.yaml"
Mode = Literal["non_inferior", "superior"]


# ------------------------------------------------------------------------------------ the YAML's shape
Fraction = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
_STRICT = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently ignored setting


def _per_profile(name: str, kind: Any) -> type[BaseModel]:
    """A mapping with one required value per profile (the profiles come from tasks.vocab)."""
    return _create_model(name, __config__=_STRICT, **{p.value: (kind, ...) for p in Profile})


Floors = _per_profile("Floors", Fraction)
Switches = _per_profile("Switches", StrictBool)


class BootstrapSettings(BaseModel):
    model_config = _STRICT

    resamples: StrictInt = Field(2000, ge=1000)
    seed: StrictInt = Field(20261201, ge=0)
    confidence: StrictFloat = Field(0.95, ge=0.5, le=0.999)


class PolicyEntry(BaseModel):
    """One model's section of gates.yaml (the file's comments say what each field means)."""

    model_config = _STRICT

    metric: str
    floor: Floors
    mode: Mode = "non_inferior"
    margin: Fraction = 0.01
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    max_class_f1_drop: Fraction | None = None
    behaviour: Switches = Field(default_factory=lambda: Switches(tiny=False, cpu=True, gpu=True))


# ------------------------------------------------------------------------------------------ the policy
@dataclass(frozen=True)
class GatePolicy:
    """One model's gate policy, flat (see tasks/gates.yaml for the meaning of each field)."""

    model: str
    metric: str
    floor: dict[str, float]
    mode: Mode = "non_inferior"
    margin: float = 0.01
    resamples: int = 2000
    seed: int = 20261201
    confidence: float = 0.95
    max_class_f1_drop: float | None = None
    behaviour: dict[str, bool] = field(default_factory=lambda: {"tiny": False, "cpu": True, "gpu": True})
    source: str = str(POLICY_FILE)

    def floor_for(self, profile: str) -> float:
        return self.floor[Profile.parse(profile).value]

    def behaviour_for(self, profile: str) -> bool:
        return self.behaviour[Profile.parse(profile).value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_lines(path: Path, text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping key path of a YAML text to its 1-based line, so errors can name the line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kp = (*prefix, str(key.value))
                lines[kp] = key.start_mark.line + 1
                walk(value, kp)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else "?"
        raise DataError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if root is not None:
        walk(root, ())
    return lines


def load_policy(model: str, path: Path | None = None) -> GatePolicy:
    """Read `model`'s gate policy from `path` (default: tasks/gates.yaml) and validate every field."""
    model = Model.parse(model).value
    path = Path(path) if path else POLICY_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read gate policy {path}: {exc.strerror}") from exc
    lines = key_lines(path, text)
    doc = yaml.safe_load(text) or {}

    def where(keys: tuple[str, ...]) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{path}:{lines[keys[:n]]}"
        return f"{path}:1"

    if not isinstance(doc, dict) or not isinstance(doc.get(model), dict):
        raise DataError(
            f"{where((model,))}: field {model} is missing (expected a mapping with the policy of this model)"
        )
    try:
        entry = PolicyEntry.model_validate(doc[model])
    except ValidationError as exc:
        loc = tuple(str(p) for p in exc.errors()[0]["loc"])
        sentence = field_error(exc).replace("field ", f"field {model}.", 1)
        raise DataError(f"{where((model, *loc))}: {sentence}") from None
    expected = GATE_METRIC[Model(model)]
    if entry.metric != expected:
        raise DataError(
            f"{where((model, 'metric'))}: field {model}.metric must be {expected!r} for {model}, "
            f"got {entry.metric!r}"
        )
    return GatePolicy(
        model=model,
        metric=entry.metric,
        floor={k: float(v) for k, v in entry.floor.model_dump().items()},
        mode=entry.mode,
        margin=float(entry.margin),
        resamples=entry.bootstrap.resamples,
        seed=entry.bootstrap.seed,
        confidence=float(entry.bootstrap.confidence),
        max_class_f1_drop=None if entry.max_class_f1_drop is None else float(entry.max_class_f1_drop),
        behaviour=entry.behaviour.model_dump(),
        source=str(path),
    )
