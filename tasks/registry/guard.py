"""The champion guard behind the `ncbi_champion` DAG: nobody moves `champion` unchecked.

For the version that now holds `champion` of a model (after any move: the pipeline's, `ncbi-retrain
promote`, or a person in MLflow's UI, reported by the webhook):

1. `inspect` verifies it (gate tag `passed`, lineage tags present, `.nemo` sha256 as recorded) and records
   a move this project did not make in the alias history as an outside move (`source: outside`, what
   MLflow reported: version, time, delivery; MLflow 3.17's webhook does not name the user who set the
   alias, so `who` says so). The project's own moves are recorded by `aliases.move_alias` already and
   are recognised by the last history entry pointing at the current version: no second entry.
2. It decides: `accept` (smoke-predict and model card follow), `skip` (this move was checked already),
   `revert` (policy `revert`: back to the newest earlier champion that still verifies) or `alert`
   (policy `alert`, nothing to revert to, or the unverified version was put there by the guard's own
   revert: a revert is never reverted, so the guard cannot loop).
3. `revert` moves the alias as `airflow:ncbi_champion` with the reason; `record_check` marks the move as
   checked on the version (tag `champion_check`), so a second Asset event for the same move does nothing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from tasks.errors import DataError
from tasks.registry.aliases import CHAMPION, PENDING_TAG, alias_lock, history_from_tags, last_recorded, record
from tasks.registry.champion import _set_champion, verify_nemo
from tasks.registry.service import client, mlflow_call, registered_name
from tasks.settings import get_settings

GUARD_ACTOR = "airflow:ncbi_champion"
REVERT = "revert"
CHECK_TAG = "champion_check"
LINEAGE_TAGS = ("data_version", "git_commit", "image", "config_fingerprint", "run_id")
MISSING = ("", "unknown", "none", None)
OUTSIDE_WHO = "mlflow user (not reported by MLflow)"
GRACE_S = 30.0  # how long a move this project announced (aliases.PENDING_TAG) may take to be recorded


def verify_version(name: str, version: str) -> list[str]:
    """Why `version` may not be champion: gate not passed, lineage missing, `.nemo` missing or corrupt
    (empty: verified). One sentence per failure."""
    mlflow_client = client()
    with mlflow_call(f"read version {version} of {name}"):
        mv = mlflow_client.get_model_version(name, version)
    tags = mv.tags
    failures = []
    if tags.get("gate") != "passed":
        reason = tags.get("gate_reason", "no gate decision recorded")
        failures.append(f"gate is {tags.get('gate', 'unset')} ({str(reason).rstrip('.')})")
    missing = [k for k in LINEAGE_TAGS if tags.get(k) in MISSING]
    if missing:
        failures.append(f"lineage tags missing: {', '.join(missing)}")
    try:
        verify_nemo(name, version)
    except DataError as exc:
        failures.append(str(exc))
    return failures


def _champion_state(name: str) -> tuple[str | None, list[dict[str, Any]], dict[str, str]]:
    mlflow_client = client()
    with mlflow_call(f"read the registered model {name}"):
        rm = mlflow_client.get_registered_model(name)
    current = rm.aliases.get(CHAMPION)
    moves = [e for e in history_from_tags(rm.tags) if e.get("alias") == CHAMPION]
    return (None if current is None else str(current)), moves, dict(rm.tags)


def _announced(tags: dict[str, str], current: str | None) -> bool:
    """Whether this project announced moving `champion` to `current` (within the last minutes)."""
    try:
        pending = json.loads(tags.get(PENDING_TAG) or "{}")
    except json.JSONDecodeError:
        return False
    fresh = time.time() - float(pending.get("at") or 0) < 300
    return fresh and pending.get("alias") == CHAMPION and pending.get("to") == current


def _move_key(entry: dict[str, Any] | None) -> str:
    return "" if entry is None else f"{entry.get('when')}|{entry.get('from')}|{entry.get('to')}"


def inspect(
    model: str, reported: list[dict[str, Any]] | None = None, grace_s: float = GRACE_S
) -> dict[str, Any]:
    """Verify the current champion of `model`, record an outside move, and decide what to do.

    `reported`: the extras of the Asset events that triggered the run (the webhook's {version, action,
    delivery_id, timestamp}, or a DAG's own event), newest last; only used to describe an outside move.
    Returns a JSON-able plan: {model, name, version, previous, outside, failures, action, reason, target}.
    """
    name = registered_name(model)
    current, moves, tags = _champion_state(name)
    deadline = time.monotonic() + grace_s
    while (moves[-1]["to"] if moves else None) != current and _announced(tags, current):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)  # this project's own move, announced but not recorded yet
        current, moves, tags = _champion_state(name)
    last = moves[-1] if moves else None
    plan: dict[str, Any] = {
        "model": model,
        "name": name,
        "version": current,
        "previous": None,
        "outside": False,
        "failures": [],
        "target": None,
    }
    if (last["to"] if last else None) != current:
        last = _record_outside(name, last, current, reported or [])
        plan["outside"] = True
    plan["previous"] = last.get("from") if last else None
    plan["move"] = _move_key(last)
    if current is None:
        if not plan["outside"]:
            return plan | {"action": "skip", "reason": f"{name} has no champion"}
        return _decide(plan, last, [f"champion of {name} was deleted outside the project"])
    plan["failures"] = verify_version(name, current)
    if not plan["failures"]:
        mv = client().get_model_version(name, current)
        done = json.loads(mv.tags.get(CHECK_TAG) or "{}")
        if done.get("move") == plan["move"] and done.get("result") == "passed":
            return plan | {"action": "skip", "reason": f"{name} v{current}: this move was checked already"}
        how = "an outside move" if plan["outside"] else f"a move by {last['who'] if last else 'unknown'}"
        return plan | {"action": "accept", "reason": f"{name} v{current} verified after {how}"}
    if last and last.get("who") != GUARD_ACTOR and "forced over a failed gate" in str(last.get("why")):
        others = [f for f in plan["failures"] if not f.startswith("gate is")]
        if not others:  # forced by hand through `promote --force`: deliberate and recorded
            return plan | {"action": "accept", "reason": f"{name} v{current} forced over its gate by hand"}
    return _decide(plan, last, plan["failures"])


def _record_outside(
    name: str, last: dict[str, Any] | None, current: str | None, reported: list[dict[str, Any]]
) -> dict[str, Any]:
    """Record a move this project did not make, with what MLflow reported about it."""
    report = next((r for r in reversed(reported) if r.get("delivery_id")), {})
    when = datetime.now(UTC).isoformat(timespec="seconds")
    seen = f"reported by MLflow at {report['timestamp']}" if report.get("timestamp") else "found"
    why = (
        f"outside move: champion {'set to v' + current if current else 'deleted'} in MLflow "
        f"(UI or API), not through ncbi-retrain; {seen}"
    )
    entry = {
        "when": when,
        "who": OUTSIDE_WHO,
        "alias": CHAMPION,
        "from": last.get("to") if last else None,
        "to": current,
        "why": why,
        "source": "outside",
        "reported_at": report.get("timestamp"),
        "delivery_id": report.get("delivery_id"),
    }
    with mlflow_call(f"record an outside move of {name}"):
        mlflow_client = client()
        with alias_lock(mlflow_client, name):  # serialized with the project's own moves
            rm = mlflow_client.get_registered_model(name)
            if last_recorded(history_from_tags(rm.tags), CHAMPION) == current:
                return entry  # recorded meanwhile (a repaired half move): nothing to add
            record(mlflow_client, name, entry)
    return entry


def _decide(plan: dict[str, Any], last: dict[str, Any] | None, failures: list[str]) -> dict[str, Any]:
    name, current = plan["name"], plan["version"]
    what = f"{name} v{current}" if current else f"{name} (no champion)"
    summary = f"{what} is not a verified champion: {'; '.join(failures)}"
    if last and last.get("who") == GUARD_ACTOR and str(last.get("why", "")).startswith(REVERT):
        why = f"{summary}; it was put there by a revert: not reverted again"
        return plan | {"action": "alert", "reason": why}
    if get_settings().champion_guard == "alert":
        why = f"{summary}; NCBI_RETRAIN_CHAMPION_GUARD=alert: left as is"
        return plan | {"action": "alert", "reason": why}
    target = previous_verified(name, exclude=current)
    if target is None:
        return plan | {"action": "alert", "reason": f"{summary}; no earlier verified champion to revert to"}
    return plan | {"action": REVERT, "target": target, "reason": f"{summary}; reverting to v{target}"}


def previous_verified(name: str, exclude: str | None) -> str | None:
    """The newest version that held `champion` before (per the history) and still verifies."""
    _, moves, _ = _champion_state(name)
    tried: set[str] = {exclude} if exclude else set()
    for e in reversed(moves):
        for v in (e.get("to"), e.get("from")):
            if v is None or v in tried:
                continue
            tried.add(v)
            if not verify_version(name, v):
                return v
    return None


def revert(plan: dict[str, Any]) -> dict[str, Any]:
    """Move `champion` back to `plan["target"]` as the guard, recording the reason."""
    name = plan["name"]
    why = f"unverified champion v{plan['version']}: {'; '.join(plan['failures']) or plan['reason']}"
    return _set_champion(client(), name, str(plan["target"]), why, GUARD_ACTOR, False, REVERT)


def record_check(plan: dict[str, Any], result: str, detail: dict[str, Any] | None = None) -> None:
    """Mark the move as checked on the version (a second event for the same move is then skipped)."""
    doc = {"move": plan.get("move"), "result": result, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    doc |= detail or {}
    with mlflow_call(f"tag version {plan['version']} of {plan['name']}"):
        client().set_model_version_tag(plan["name"], plan["version"], CHECK_TAG, json.dumps(doc)[:4900])
