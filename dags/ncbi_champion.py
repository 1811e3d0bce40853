"""
# ncbi_champion

Nobody moves `champion` unchecked. Runs on every Asset event of **ncbi-disease-classifier@champion** or
**ncbi-disease-ner@champion**: the pipeline's own promotions (`ncbi_retrain`, `ncbi_promote`) and every
move reported by MLflow's webhook (a person setting the alias in MLflow's UI or API), received by the
`ncbi_retrain_webhooks` plugin in the api-server.

```
per model whose champion moved:  check -> smoke (training env) -> card
```

- **check**: verify the version now holding `champion` (gate tag `passed`, lineage tags present,
  `.nemo` sha256 as recorded); a move this project did not make is recorded in the alias history as an
  *outside move* (`ncbi-retrain models history NAME`, and the table in the registered model's
  description). An unverified champion is moved back to the newest earlier champion that still
  verifies (`NCBI_RETRAIN_CHAMPION_GUARD=revert`, the default) or only reported (`alert`); either way the
  run fails with the reason (`runs/<run id>/failure.md`, posted to `NCBI_RETRAIN_WEBHOOK_URL`). A revert
  is never reverted again, so the guard cannot loop.
- **smoke**: `ncbi-retrain predict` through `models:/NAME@champion` in the training env, on the NeMo
  tutorial's three sentences and `tasks/behaviour.yaml`.
- **card**: the model card (lineage, gate decision with numbers and plots, smoke results) is logged to
  the version's run and shown as the version's description.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import TaskGroup, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from ncbi_common import CHAMPION_ASSETS, MODELS, default_args, run_failed, task_failed
from ncbi_common.jobs import MACROS, job_operator

from tasks.settings import get_settings

SETTINGS = get_settings()  # the launcher, the GPU pool and queue: read once, when the DAG is parsed


@dag(
    dag_id=Path(__file__).stem,
    schedule=CHAMPION_ASSETS["classifier"] | CHAMPION_ASSETS["ner"],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ncbi-disease", "registry", "mlops"],
    default_args=default_args(
        retries=0, execution_timeout=timedelta(minutes=15), on_failure_callback=task_failed
    ),
    on_failure_callback=run_failed,
    user_defined_macros=MACROS,  # the smoke job's templates (as ncbi_retrain's training jobs)
    is_paused_upon_creation=False,  # the guard must watch from the start: it only reacts to champion moves
)
def ncbi_champion() -> None:
    for model in MODELS:
        with TaskGroup(group_id=model):
            champion_flow(model)


def champion_flow(model: str) -> None:
    """check -> smoke -> card for one model (one task for the checks: each task start costs seconds)."""

    @task
    def check() -> dict:
        """Verify the champion and record an outside move; revert (policy revert) or report an unverified
        one, failing the run with the reason."""
        from tasks.pipeline.jobs import smoke_job
        from tasks.registry import guard

        ctx = get_current_context()
        events = ctx["triggering_asset_events"]
        mine = list(events.get(CHAMPION_ASSETS[model], []))
        print(f"triggering events: { {a.name: [e.extra for e in events[a]] for a in events} }")
        if len(events) and not mine:
            raise AirflowSkipException(f"no move of the {model} champion in this run")
        reported = [dict(e.extra or {}) | {"source_dag_id": e.source_dag_id} for e in mine]
        plan = guard.inspect(model, reported)
        if plan["action"] == "skip":
            raise AirflowSkipException(plan["reason"])
        if plan["action"] == "revert":
            moved = guard.revert(plan)
            raise AirflowFailException(f"{plan['reason']} (champion now v{moved['version']})")
        if plan["action"] == "alert":
            raise AirflowFailException(plan["reason"])
        return plan | {"job": smoke_job(model, ctx["run_id"]).dump()}

    @task
    def card(plan: dict, smoke_line: str | None) -> dict:
        """Judge the smoke test; attach the model card to the version."""
        from tasks.registry import card as cards
        from tasks.registry import guard
        from tasks.registry.service import client

        profile = client().get_model_version(plan["name"], plan["version"]).tags.get("gate_profile")
        smoke = cards.judge_smoke(model, smoke_line, profile)
        written = cards.write_model_card(model, plan["version"], smoke)
        guard.record_check(plan, "passed" if smoke["passed"] else "failed", {"smoke": smoke["reason"]})
        if not smoke["passed"]:
            what = f"{plan['name']} v{plan['version']}"
            raise AirflowFailException(f"{what} smoke test failed: {smoke['reason']}")
        return {"version": plan["version"], "smoke": smoke["reason"], "card": written["uri"]}

    planned = check()
    smoke = job_operator(
        "smoke",
        planned,
        name=f"smoke-{model}",
        pool=SETTINGS.gpu_pool,
        queue=SETTINGS.gpu_queue,
        doc_md="`ncbi-retrain predict` via `models:/NAME@champion` in the training env (launcher: "
        "`NCBI_RETRAIN_LAUNCHER`; last line: JSON).",
    )
    card(planned, smoke.output)


ncbi_champion()
