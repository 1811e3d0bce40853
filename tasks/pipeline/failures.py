"""When a DAG run fails: one record per failed task, then the run's `failure.md` / `failure.json`, posted
to `Settings.webhook_url` when one is set (the task and DAG failure callbacks call these)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.files import atomic_write_json, atomic_write_text
from tasks.pipeline.rundir import run_dir, safe_name
from tasks.settings import get_settings

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_task_failure(
    dag_id: str, dag_run_id: str, task_id: str, try_number: int, error: str, log_url: str | None = None
) -> Path:
    """Note one failed try of a task (its failure callback calls this); the run summary collects them."""
    doc = {
        "dag_id": dag_id,
        "dag_run_id": dag_run_id,
        "task_id": task_id,
        "try_number": try_number,
        "error": error,
        "log_url": log_url,
        "at": _now(),
    }
    return atomic_write_json(run_dir(dag_run_id) / "failures" / f"{safe_name(task_id)}.json", doc)


def report_run_failure(dag_id: str, dag_run_id: str, reason: str, failed_task: str | None = None) -> Path:
    """Write `failure.md` + `failure.json` in the run's work dir and post the JSON to the webhook."""
    folder = run_dir(dag_run_id)
    tasks = []
    for p in sorted((folder / "failures").glob("*.json")):
        try:
            tasks.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    first = tasks[0] if tasks else {"task_id": failed_task, "error": reason}
    doc = {
        "event": "dag_run_failed",
        "dag_id": dag_id,
        "dag_run_id": dag_run_id,
        "failed_task": failed_task or first.get("task_id"),
        "reason": reason,
        "error": first.get("error"),
        "failed_tasks": tasks,
        "work_dir": str(folder),
        "at": _now(),
    }
    lines = [
        f"# {dag_id} run {dag_run_id} failed",
        "",
        f"- failed task: `{doc['failed_task']}`",
        f"- error: {doc['error']}",
        f"- reason: {reason}",
        f"- work dir: {folder}",
        "",
    ]
    for t in tasks:
        lines.append(
            f"- `{t['task_id']}` (try {t['try_number']}): {t['error']}"
            + (f" ([log]({t['log_url']}))" if t.get("log_url") else "")
        )
    atomic_write_json(folder / "failure.json", doc)
    path = atomic_write_text(folder / "failure.md", "\n".join(lines) + "\n")
    log.error(
        "%s run %s failed at %s: %s (summary: %s)", dag_id, dag_run_id, doc["failed_task"], doc["error"], path
    )
    url = get_settings().webhook_url
    if url:
        post_json(url, doc)
    return path


def post_json(url: str, doc: Mapping[str, Any], timeout_s: float = 10.0) -> bool:
    """POST `doc` as JSON; a webhook that is down is logged, never raised (the run already failed).

    By hand (urllib): one POST needs no HTTP client dependency in both environments."""
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError) as exc:
        log.warning("webhook %s: post failed (%s)", url, exc)
        return False
