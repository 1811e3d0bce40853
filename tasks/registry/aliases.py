"""Alias moves and their history: every move is recorded on the registered model (who, when, why, from, to).

The history is the registered-model tag `alias_history`, a JSON list of {when, who, alias, from, to,
why} (a move made outside this project also carries `source: outside` and what MLflow reported). A
registered-model tag holds at most 5000 characters on SQL stores, so full pages spill into
`alias_history.0000`, `alias_history.0001`, ... (oldest first); `history_from_tags` joins them. The
latest moves are also shown readably, as a Markdown table in the registered model's description
(below a marker line; whatever a person wrote above it is kept).
"""

from __future__ import annotations

import getpass
import json
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.vocab import Alias

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CHALLENGER = Alias.champion.value, Alias.challenger.value
HISTORY_TAG = "alias_history"
PENDING_TAG = "alias_move_pending"  # set while this project moves an alias, until the move is recorded
HISTORY_PAGE_CHARS = 4500  # registered-model tag values are VARCHAR(5000) on SQL stores


HISTORY_MARKER = "<!-- ncbi-retrain: alias history (written by the pipeline; edit above this line) -->"
HISTORY_SHOWN = 15  # moves shown in the description (a description holds 5000 characters)


def actor_name(actor: str | None) -> str:
    """Who moves an alias: `actor`, else NCBI_RETRAIN_ACTOR, else the Airflow DAG whose task this is
    (Airflow exports AIRFLOW_CTX_DAG_ID to its tasks: never the worker's OS account), else the OS user
    (a person running the CLI on their own machine)."""
    if actor:
        return actor
    if env := os.environ.get("NCBI_RETRAIN_ACTOR"):
        return env
    if dag_id := os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return f"airflow:{dag_id}"
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
    show_history(client, name)


def history_markdown(entries: list[dict[str, Any]], limit: int = HISTORY_SHOWN) -> str:
    """The latest `limit` moves, newest first, as a Markdown table."""
    lines = [
        f"### Alias history (latest {min(limit, len(entries))} of {len(entries)}; "
        "all: `ncbi-retrain models history`)",
        "",
        "| when (UTC) | who | alias | from | to | why |",
        "|---|---|---|---|---|---|",
    ]
    for e in reversed(entries[-limit:]):
        why = str(e.get("why", "")).replace("|", "\\|").replace("\n", " ")
        why = (why[:157] + "...") if len(why) > 160 else why
        outside = " **(outside move)**" if e.get("source") == "outside" else ""
        lines.append(
            f"| {e.get('when', '')} | {e.get('who', '')} | {e.get('alias', '')} | {e.get('from') or '-'} "
            f"| {e.get('to') or '-'} | {why}{outside} |"
        )
    return "\n".join(lines)


def show_history(client: MlflowClient, name: str) -> None:
    """Rewrite the history table in the registered model's description, keeping the text above it."""
    rm = client.get_registered_model(name)
    own = (rm.description or "").split(HISTORY_MARKER)[0].rstrip()
    entries = history_from_tags(rm.tags)
    for limit in (HISTORY_SHOWN, 8, 3):  # stay under the 5000-character column
        text = "\n\n".join(p for p in (own, HISTORY_MARKER, history_markdown(entries, limit)) if p)
        if len(text) <= 5000:
            client.update_registered_model(name, description=text)
            return


def move_alias(
    client: MlflowClient, name: str, alias: str, version: str | None, why: str, who: str
) -> dict[str, Any] | None:
    """Point `alias` at `version` (None deletes it) and record the move; None when nothing moved."""
    current = client.get_registered_model(name).aliases.get(alias)
    current = str(current) if current is not None else None
    if current == version:
        return None
    # Announce the move first: the champion guard, woken by MLflow's webhook for this very move, then
    # waits for its history entry instead of taking it for an outside move.
    pending = {"alias": alias, "to": version, "who": who, "at": time.time()}
    client.set_registered_model_tag(name, PENDING_TAG, json.dumps(pending))
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    entry = {"when": when, "who": who, "alias": alias, "from": current, "to": version, "why": why[:500]}
    record(client, name, entry)
    client.delete_registered_model_tag(name, PENDING_TAG)
    return entry


def has_held(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    """Whether `alias` was ever recorded as moving to `version`."""
    tags = client.get_registered_model(name).tags
    return any(e.get("alias") == alias and e.get("to") == version for e in history_from_tags(tags))
