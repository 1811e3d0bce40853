"""`ncbi_promote`: a person moves `champion` (promote a version, or roll back), with a recorded reason."""

from __future__ import annotations

import logging

from tasks.errors import UsageError
from tasks.vocab import MODELS, ChampionMove, Model

log = logging.getLogger(__name__)


def manual_promotion(model: str, action: str, version: str | None, reason: str, actor: str) -> ChampionMove:
    """`promote` a version (or `previous`) to champion, or `rollback` to a version / the previous champion."""
    from tasks.registry import champion_version, promote, rollback

    if not reason.strip():
        raise UsageError("param reason is empty: say why the champion moves")
    if model not in MODELS:
        raise UsageError(f"param model is {model!r}: expected classifier or ner")
    name = Model(model).registered_name
    before = (champion_version(model) or {}).get("version")
    target = None if version in (None, "", "previous") else str(version)
    if action == "rollback" or target is None:
        rollback(name, target, reason, actor=actor)
    elif action == "promote":
        promote(name, target, reason, actor=actor)
    else:
        raise UsageError(f"param action is {action!r}: expected promote or rollback")
    after = (champion_version(model) or {}).get("version")
    log.info("%s champion: v%s -> v%s (%s)", name, before, after, reason)
    return ChampionMove(
        name=name,
        before=None if before is None else str(before),
        after=None if after is None else str(after),
        reason=reason,
    )
