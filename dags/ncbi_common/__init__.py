"""What the two DAG files share. Not a DAG: `dags/.airflowignore` lists this package, and Airflow puts the
DAG folder on `sys.path`, so the DAG files `import ncbi_common`.

The champion Assets (one per model, named in `tasks.vocab`), the default task arguments, the deployment
knobs read at parse time, and the failure callbacks. Cheap to import: `airflow.sdk`, `tasks.vocab` and
`tasks.settings` (pydantic) only; operators are imported by `ncbi_common.jobs` for the launcher in use.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

from tasks import vocab
from tasks.vocab import champion_asset_name, champion_asset_uri

MODELS: tuple[str, ...] = tuple(m.value for m in vocab.MODELS)  # classifier, ner: task groups, forms
# An Asset is identified by its name and URI: both DAGs update the same two.
CHAMPION_ASSETS: dict[str, Asset] = {
    m: Asset(name=champion_asset_name(m), uri=champion_asset_uri(m)) for m in MODELS
}
OWNER = "ml-platform"

# Deployment knobs from the environment (read at parse time: cheap, no DB, no network).
_schedule = os.environ.get("NCBI_RETRAIN_SCHEDULE", "0 2 * * *")
SCHEDULE = None if _schedule.lower() in ("", "none", "manual") else _schedule
# The profile of scheduled runs and the form's default (the stack chooses it: scripts/stack.sh).
DEFAULT_PROFILE = vocab.Profile.parse(os.environ.get("NCBI_RETRAIN_PROFILE", vocab.Profile.cpu)).value
RETRY_DELAY = timedelta(seconds=float(os.environ.get("NCBI_RETRAIN_RETRY_DELAY_S", "60")))
TRAIN_RETRIES = int(os.environ.get("NCBI_RETRAIN_TRAIN_RETRIES", "2"))
TRAIN_TIMEOUT = timedelta(hours=float(os.environ.get("NCBI_RETRAIN_TRAIN_TIMEOUT_H", "7")))
RESCORE_TIMEOUT = timedelta(hours=2)
# `DagRun.triggering_user_name` of a run made by dag.test() / `airflow dags test` (airflow.sdk's Dag.test).
DAG_TEST_USER = "dag_test"


def _at_least_one(name: str, default: str) -> int:
    raw = os.environ.get(name, default)
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


# ncbi_retrain runs at once: each run reads its own materialised data folder, and the gpu pool still
# bounds the training jobs, so raising it overlaps data steps, gates and registration, not training.
MAX_ACTIVE_RUNS = _at_least_one("NCBI_RETRAIN_MAX_ACTIVE_RUNS", "1")


def default_args(**overrides: Any) -> dict[str, Any]:
    """Owner, retries with exponential backoff and a one-hour timeout; `overrides` win."""
    return {
        "owner": OWNER,
        "retries": 1,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=60),
        **overrides,
    }


def task_failed(context: dict[str, Any]) -> None:
    """Note the failed task and its error in the run's work dir (the run's failure summary collects them)."""
    from tasks.pipeline.failures import record_task_failure

    ti = context["ti"]
    exc = context.get("exception")
    record_task_failure(
        dag_id=ti.dag_id,
        dag_run_id=context["run_id"],
        task_id=ti.task_id,
        try_number=ti.try_number,
        error=f"{type(exc).__name__}: {exc}" if exc else "unknown error",
        log_url=getattr(ti, "log_url", None),
    )


def run_failed(context: dict[str, Any]) -> None:
    """Write failure.md / failure.json and post to the webhook when one is configured."""
    from tasks.pipeline.failures import report_run_failure

    ti = context.get("ti")
    report_run_failure(
        dag_id=context["dag"].dag_id,
        dag_run_id=context["run_id"],
        reason=str(context.get("reason") or "task_failure"),
        failed_task=getattr(ti, "task_id", None),
    )
