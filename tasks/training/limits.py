"""Value ranges a training config must respect, beyond its keys and types (the config module checks those).

Lightning accepts `trainer.max_epochs=-1` on purpose (it means "train until max_steps", i.e. forever here);
from an operator it is a typo, so every front door (CLI, DAG through the CLI) refuses it before anything is
written. The ranges are pydantic types, checked on the flattened config.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, TypeAdapter, ValidationError

from tasks.errors import UsageError
from tasks.training.decoding import DECODERS
from tasks.training.encoders import ATTENTION, CLS_ONLY

# (key, or `.suffix` for every key ending so) -> the type its value must validate as, and why
RULES: tuple[tuple[str, TypeAdapter, str], ...] = (
    ("trainer.max_epochs", TypeAdapter(PositiveInt), "Lightning reads -1 as 'never stop'"),
    ("model.optim.lr", TypeAdapter(PositiveFloat), "a learning rate"),
    (".batch_size", TypeAdapter(PositiveInt), "items per step"),
    (".max_seq_length", TypeAdapter(PositiveInt), "tokens per item"),
    ("model.decoding", TypeAdapter(Literal[DECODERS]), "how NER tags are decoded"),
    ("model.attention", TypeAdapter(Literal[ATTENTION]), "transformers' attention in training"),
    ("model.cls_only_last_layer", TypeAdapter(Literal[CLS_ONLY]), "when the last layer computes [CLS] alone"),
    (".bucket_pool", TypeAdapter(PositiveInt), "batches per length-sorted pool"),
    (".length_groups", TypeAdapter(PositiveInt), "groups of similar length per training batch"),
    (
        "exp_manager.ema.decay",
        TypeAdapter(Annotated[float, Field(ge=0, lt=1)]),
        "the share of the weight average kept per step; 1 would never update it",
    ),
)


def check_limits(flat: dict[str, Any]) -> None:
    """Raise UsageError (one sentence naming the key) for the first value out of its range.

    `flat` is the config flattened to dotted keys (`tasks.training.config.flatten`)."""
    for key, value in flat.items():
        for rule, adapter, why in RULES:
            if key == rule or (rule.startswith(".") and key.endswith(rule)):
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    problem = exc.errors()[0]["msg"]
                    raise UsageError(
                        f"config key {key!r} is {value!r}: {problem[:1].lower()}{problem[1:]} ({why})"
                    ) from None
