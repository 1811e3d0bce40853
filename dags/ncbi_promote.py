"""
# ncbi_promote

Manual champion moves in the MLflow registry, with a reason that is recorded on the registered
model (who, when, why, from, to) and visible with `ncbi-retrain models history NAME`.

- **promote**: make *version* the `champion` of *model* (its `.nemo` artifact is checked first).
- **rollback**: move `champion` back to *version*, or to the previous champion when *version*
  is `previous`.

Each move updates the model's champion Asset, like an automatic promotion by `ncbi_retrain`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task
from ncbi_common import CHAMPION_ASSETS, MODELS, default_args

from tasks.vocab import Model


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ncbi-disease", "registry", "mlops"],
    default_args=default_args(retries=0, execution_timeout=timedelta(minutes=10)),
    params={
        "model": Param(
            Model.classifier.value,
            type="string",
            enum=[m.value for m in Model],
            title="Model",
            section="Champion",
        ),
        "action": Param(
            "promote", type="string", enum=["promote", "rollback"], title="Action", section="Champion"
        ),
        "version": Param(
            "previous",
            type="string",
            pattern=r"^([0-9]+|previous)$",
            title="Version",
            description_md="A version number, or `previous`: the champion before the current one.",
            section="Champion",
        ),
        # Required, so no default: the trigger form marks it and will not submit without it, and a REST
        # trigger without it is refused (400) before any task runs.
        "reason": Param(
            type="string",
            minLength=3,
            title="Reason",
            description_md="Why the champion moves (at least 3 characters; recorded with your name).",
            section="Champion",
        ),
    },
)
def ncbi_promote() -> None:
    def make(model: str):
        @task(task_id=f"move_{model}_champion", outlets=[CHAMPION_ASSETS[model]])
        def move() -> dict:
            """Promote or roll back this model's champion when the form names this model."""
            from airflow.sdk.exceptions import AirflowSkipException

            from tasks.pipeline.manual import manual_promotion

            ctx = get_current_context()
            params = ctx["params"]
            if params["model"] != model:
                raise AirflowSkipException(f"the form names {params['model']}, not {model}")
            actor = f"airflow:{ctx['dag'].dag_id}:{ctx['dag_run'].triggering_user_name or 'unknown'}"
            return manual_promotion(
                model, params["action"], params["version"], params["reason"], actor
            ).dump()

        return move()

    for model in MODELS:
        make(model)


ncbi_promote()
