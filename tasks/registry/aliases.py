"""Alias moves and their history: every move is recorded on the registered model (who, when, why, from, to).

The history is the registered-model tag `alias_history`, a JSON list of {when, who, alias, from, to,
why}. A registered-model tag holds at most 5000 characters on SQL stores, so full pages spill into
`alias_history.0000`, `alias_history.0001`, ... (oldest first); `history_from_tags` joins them.
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.vocab import Alias

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER = Alias.champion.value, Alias.challenger.value
HISTORY_TAG = "alias_history"
HISTORY_PAGE_CHARS = 4500  # registered-model tag values are VARCHAR(5000) on SQL stores


def actor_name(actor: str | None) -> str:
    """Who moves an alias: `actor`, else NCBI_RETRAIN_ACTOR, else the OS user."""
    if actor:
        return actor
    if env := os.environ.get("NCBI_RETRAIN_ACTOR"):
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def history_from_tags(tags: dict[str, str]) -> list[dict[str, Any]]:
    """Every recorded move, oldest first: the archived pages in order, then the current page."""
    entries: list[dict[str, Any]] = []
    for key in sorted(k for k in tags if k.startswith(HISTORY_TAG + ".")):
        entries += json.loads(tags[key])
    return entries + json.loads(tags.get(HISTORY_TAG) or "[]")


def record(client: MlflowClient, name: str, entry: dict[str, Any]) -> None:
    """Append one alias move to the registered model's history (spilling full pages to numbered tags)."""
    tags = client.get_registered_model(name).tags
    page = json.loads(tags.get(HISTORY_TAG) or "[]")
    if page and all(page[-1].get(k) == entry.get(k) for k in ("alias", "from", "to", "why")):
        return  # the same move recorded by a concurrent or retried call
    page.append(entry)
    if len(json.dumps(page)) > HISTORY_PAGE_CHARS and len(page) > 1:
        n = sum(1 for k in tags if k.startswith(HISTORY_TAG + "."))
        # Archive first: a crash in between duplicates entries, never loses them.
        client.set_registered_model_tag(name, f"{HISTORY_TAG}.{n:04d}", json.dumps(page[:-1]))
        page = page[-1:]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(page))


def move_alias(
    client: MlflowClient, name: str, alias: str, version: str | None, why: str, who: str
) -> dict[str, Any] | None:
    """Point `alias` at `version` (None deletes it) and record the move; None when nothing moved."""
    current = client.get_registered_model(name).aliases.get(alias)
    current = str(current) if current is not None else None
    if current == version:
        return None
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    entry = {"when": when, "who": who, "alias": alias, "from": current, "to": version, "why": why[:500]}
    record(client, name, entry)
    return entry


def has_held(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    """Whether `alias` was ever recorded as moving to `version`."""
    tags = client.get_registered_model(name).tags
    return any(e.get("alias") == alias and e.get("to") == version for e in history_from_tags(tags))
