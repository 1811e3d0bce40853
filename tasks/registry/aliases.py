"""Alias moves and their history: every move is recorded on the registered model (who, when, why, from, to).

The history is the registered-model tag `alias_history`, a JSON list of {when, who, alias, from, to,
why} (a move made outside this project also carries `source: outside` and what MLflow reported). A
registered-model tag holds at most 5000 characters on SQL stores, so full pages spill into
`alias_history.0000`, `alias_history.0001`, ... (oldest first); `history_from_tags` joins them. The
latest moves are also shown readably, as a Markdown table in the registered model's description
(below a marker line; whatever a person wrote above it is kept).

Moves of one registered model are serialized across processes and machines by `alias_lock`: MLflow has no
compare-and-set on aliases or tags, so two `promote` / `rollback` racing would both read the same champion
and the same history page and one move would vanish from the history. The one thing every client shares
atomically through the tracking server is the uniqueness of a registered model's name (a primary key in
the store), so the lock is a registered model `<name>.alias-lock` created to take it and deleted to free
it (hidden from `models list`). A holder that crashed is recognised by the lock's tags: its process is
gone (same host and PID namespace), or it belongs to this process but is no longer held (an earlier call
that lost the server), or its lease (`LOCK_TTL_S`) has expired.

A move is also repaired when it was cut in half: if the alias already points where asked but the history
does not say so (the process or the server died between the two writes), the move is recorded then,
from the last recorded position, so the history always replays to the current aliases.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.errors import ServiceError
from tasks.vocab import Alias

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = Alias.champion.value, Alias.challenger.value
HISTORY_TAG = "alias_history"
PENDING_TAG = "alias_move_pending"  # set while this project moves an alias, until the move is recorded
HISTORY_PAGE_CHARS = 4500  # registered-model tag values are VARCHAR(5000) on SQL stores
LOCK_SUFFIX = ".alias-lock"
LOCK_TTL_S = 120  # a lock older than this is taken over (a holder on another machine that died)
LOCK_WAIT_S = 180  # how long a move waits for another one before giving up (ServiceError)
_held: dict[str, str] = {}  # lock name -> token, the locks this process holds now (re-entrant)


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


def lock_name(name: str) -> str:
    return f"{name}{LOCK_SUFFIX}"


def is_lock(name: str) -> bool:
    return name.endswith(LOCK_SUFFIX)


@contextlib.contextmanager
def alias_lock(client: MlflowClient, name: str) -> Iterator[None]:
    """Hold the lock on NAME's alias moves (re-entrant within a process); see the module docstring."""
    lock = lock_name(name)
    if lock in _held:
        yield
        return
    token = _acquire(client, name, lock)
    _held[lock] = token
    try:
        yield
    finally:
        del _held[lock]
        _release(client, lock, token)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _acquire(client: MlflowClient, name: str, lock: str) -> str:
    from mlflow.exceptions import MlflowException

    token = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        tags = {
            "token": token,
            "host": socket.gethostname(),
            "pidns": _pid_namespace(),
            "pid": str(os.getpid()),
            "expires": f"{time.time() + LOCK_TTL_S:.0f}",
        }
        try:
            client.create_registered_model(
                lock, tags=tags, description=f"lock: alias moves of {name} (tasks.registry.aliases)"
            )
            return token
        except MlflowException as exc:  # taken (or freed between the insert and MLflow's own read)
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        holder = _holder(client, lock)
        if holder is not None and _stale(holder):
            log.warning(
                "%s: taking over the lock of a holder that is gone (host %s, pid %s)",
                name, holder.get("host"), holder.get("pid"),
            )  # fmt: skip
            _delete_lock(client, lock, holder.get("token", ""))
            continue
        if time.monotonic() > deadline:
            who = f"host {holder.get('host')}, pid {holder.get('pid')}" if holder else "unknown"
            raise ServiceError(
                f"{name}: another alias move ({who}) has held the lock {lock} for over {LOCK_WAIT_S} s; "
                "try again later"
            )
        time.sleep(random.uniform(0.05, 0.3))  # jitter: racing waiters do not retry in lockstep


def _holder(client: MlflowClient, lock: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(lock).tags)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _stale(holder: dict[str, str]) -> bool:
    """Whether the lock's holder is certainly gone, or its lease has run out."""
    if float(holder.get("expires") or 0) < time.time():
        return True
    local = holder.get("host") == socket.gethostname() and holder.get("pidns") == _pid_namespace() != ""
    if not local or not (holder.get("pid") or "").isdigit():
        return False
    pid = int(holder["pid"])
    if pid == os.getpid():  # ours, but no call of this process holds it: an earlier one lost the server
        return holder.get("token") not in _held.values()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _delete_lock(client: MlflowClient, lock: str, token: str) -> None:
    """Delete LOCK if it still carries TOKEN (another waiter may have replaced it already)."""
    from mlflow.exceptions import MlflowException

    holder = _holder(client, lock)
    if holder is None or holder.get("token") != token:
        return
    try:
        client.delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _release(client: MlflowClient, lock: str, token: str) -> None:
    try:
        _delete_lock(client, lock, token)
    except Exception as exc:  # the server went away: the next taker recognises the lock as stale
        log.warning("could not free %s (%s); it will be taken over", lock, str(exc).splitlines()[0][:200])


def last_recorded(moves: list[dict[str, Any]], alias: str) -> str | None:
    """Where the history says ALIAS points (None: never set, or deleted)."""
    for entry in reversed(moves):
        if entry.get("alias") == alias:
            return entry.get("to")
    return None


def move_alias(
    client: MlflowClient, name: str, alias: str, version: str | None, why: str, who: str
) -> dict[str, Any] | None:
    """Point `alias` at `version` (None deletes it) and record the move; None when nothing moved.

    Under `alias_lock`. A move cut in half earlier (alias set, history not written) is recorded now.
    Before moving, the move is announced (`PENDING_TAG`): the champion guard, woken by MLflow's webhook for
    this very move, then waits for its history entry instead of taking it for an outside move.
    """
    with alias_lock(client, name):
        rm = client.get_registered_model(name)
        current = rm.aliases.get(alias)
        current = str(current) if current is not None else None
        recorded = last_recorded(history_from_tags(rm.tags), alias)
        if current == version:
            if recorded == version:
                return None
            source = recorded  # the alias moved but the move was never recorded: record it now
        else:
            pending = {"alias": alias, "to": version, "who": who, "at": time.time()}
            client.set_registered_model_tag(name, PENDING_TAG, json.dumps(pending))
            if version is None:
                client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, version)
            source = current
        when = datetime.now(UTC).isoformat(timespec="seconds")
        entry = {"when": when, "who": who, "alias": alias, "from": source, "to": version, "why": why[:500]}
        record(client, name, entry)
        if PENDING_TAG in rm.tags or current != version:
            client.delete_registered_model_tag(name, PENDING_TAG)
        return entry


def has_held(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    """Whether `alias` was ever recorded as moving to `version`."""
    tags = client.get_registered_model(name).tags
    return any(e.get("alias") == alias and e.get("to") == version for e in history_from_tags(tags))
