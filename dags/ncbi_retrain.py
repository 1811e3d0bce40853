"""
# ncbi_retrain

Keeps the NCBI-disease **classifier** (3 classes: cancer, neurological, other) and **NER tagger**
(IOB disease spans) fresh. Nightly, and on demand with the form below.

```
pull_data -> validate_data -> classifier: plan -> train -> evaluate -> gate -> register -> promote
                           -> ner:        plan -> train -> evaluate -> gate -> register -> promote
                                                                                   -> summarize
```

- **pull_data**: `data/` as of the *data revision* (a git revision of `data.dvc`; empty = checked out),
  checksums verified against the DVC remote.
- **validate_data**: Great Expectations suites; invalid data stops the run here (nothing trains,
  nothing is registered) and the report names file and line.
- **plan**: training is skipped, with the reason in the log and in XCom, when the data version,
  the code version (git commit) and the config fingerprint all equal the current champion's tags
  (unless *force*).
- **train** (pool `gpu`): `ncbi-retrain train MODEL --profile P --json` in the training env or
  container (launcher from `NCBI_RETRAIN_LAUNCHER`); retried with exponential backoff.
- **evaluate**: the champion's test metrics, re-scored when they belong to another data version.
- **gate**: F1 floor, paired bootstrap against the champion, per-class and behavioural checks.
- **register**: a version with lineage tags and alias `challenger` (idempotent on retries).
- **promote**: `champion` moves only when the gate passed and *promote* is `auto`; the model's
  Asset records each new champion.

On failure a summary is written to `runs/<run id>/failure.md` (and posted to
`NCBI_RETRAIN_WEBHOOK_URL` when set). Schedule: `NCBI_RETRAIN_SCHEDULE` (cron, default 02:00 UTC;
`none` for manual only).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Param, TaskGroup, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tasks.settings import get_settings
from tasks.vocab import Model, Profile, PromoteMode

MODELS = ("classifier", "ner")
CLASSIFIER_CHAMPION = Asset(
    name="ncbi-disease-classifier@champion", uri="mlflow://models/ncbi-disease-classifier/champion"
)
NER_CHAMPION = Asset(name="ncbi-disease-ner@champion", uri="mlflow://models/ncbi-disease-ner/champion")
CHAMPION_ASSETS = {"classifier": CLASSIFIER_CHAMPION, "ner": NER_CHAMPION}

# Deployment knobs from the environment (read at parse time: cheap, no DB, no network).
_schedule = os.environ.get("NCBI_RETRAIN_SCHEDULE", "0 2 * * *")
SCHEDULE = None if _schedule.lower() in ("", "none", "manual") else _schedule
# The profile of scheduled runs and the form's default (the stack chooses it: scripts/stack.sh).
DEFAULT_PROFILE = Profile.parse(os.environ.get("NCBI_RETRAIN_PROFILE", Profile.cpu)).value
GPU_POOL = os.environ.get("NCBI_RETRAIN_GPU_POOL", "gpu")
GPU_QUEUE = get_settings().gpu_queue  # the executor queue the GPU workers consume (CeleryExecutor)
RETRY_DELAY = timedelta(seconds=float(os.environ.get("NCBI_RETRAIN_RETRY_DELAY_S", "60")))
TRAIN_RETRIES = int(os.environ.get("NCBI_RETRAIN_TRAIN_RETRIES", "2"))
TRAIN_TIMEOUT = timedelta(hours=7)  # above the launcher's own per-profile job deadline (gpu: 6 h)


def _task_failed(context: dict[str, Any]) -> None:
    """Note the failed task and its error in the run's work dir (the run summary collects them)."""
    from tasks import pipeline

    ti = context["ti"]
    exc = context.get("exception")
    pipeline.record_task_failure(
        dag_id=ti.dag_id,
        dag_run_id=context["run_id"],
        task_id=ti.task_id,
        try_number=ti.try_number,
        error=f"{type(exc).__name__}: {exc}" if exc else "unknown error",
        log_url=getattr(ti, "log_url", None),
    )


def _run_failed(context: dict[str, Any]) -> None:
    """Write failure.md / failure.json and post to the webhook when one is configured."""
    from tasks import pipeline

    ti = context.get("ti")
    pipeline.report_run_failure(
        dag_id=context["dag"].dag_id,
        dag_run_id=context["run_id"],
        reason=str(context.get("reason") or "task_failure"),
        failed_task=getattr(ti, "task_id", None),
    )


def _options() -> Any:
    from tasks.errors import UsageError
    from tasks.vocab import RunParams

    try:
        return RunParams.from_params(get_current_context()["params"])
    except UsageError as exc:
        raise AirflowFailException(str(exc)) from exc  # a bad form value: retrying cannot help


@dag(
    dag_id=Path(__file__).stem,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["ncbi-disease", "training", "mlops"],
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": timedelta(minutes=60),
        "on_failure_callback": _task_failed,
    },
    on_failure_callback=_run_failed,
    params={
        # Optional fields are `["null", ...]` with None as default: the UI's trigger form treats an empty
        # string as a missing required value and would not submit. RunParams reads None as "profile default".
        "data_revision": Param(
            None,
            type=["null", "string"],
            title="Data revision",
            description_md="Git revision of `data.dvc` (tag, branch, commit); empty: the checked-out one.",
            section="Data",
        ),
        "models": Param(
            "both",
            type="string",
            enum=["both", *(m.value for m in Model)],
            title="Models",
            description_md="What to retrain.",
            section="Training",
        ),
        "profile": Param(
            DEFAULT_PROFILE,
            type="string",
            enum=[p.value for p in Profile],
            title="Profile",
            description_md="`gpu` (production, bf16), `cpu` (MiniLM-L6), `tiny` (random BERT, tests). "
            "Scheduled runs use the deployment's `NCBI_RETRAIN_PROFILE`.",
            section="Training",
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100,
            title="Epochs",
            description_md="`trainer.max_epochs`; empty: the profile's default.",
            section="Training",
        ),
        "learning_rate": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Learning rate",
            description_md="`model.optim.lr`; empty: the profile's default.",
            section="Training",
        ),
        "encoder": Param(
            None,
            type=["null", "string"],
            title="Encoder",
            description_md="`model.language_model.pretrained_model_name`: `tiny`, `minilm`, a Hugging Face "
            "name or a local directory; empty: the profile's default.",
            section="Training",
        ),
        "max_seq_length": Param(
            None,
            type=["null", "integer"],
            minimum=8,
            maximum=512,
            title="Max sequence length",
            description_md="`model.dataset.max_seq_length` (subword tokens); empty: the profile's default.",
            section="Training",
        ),
        "promote": Param(
            PromoteMode.auto.value,
            type="string",
            enum=[m.value for m in PromoteMode],
            title="Promote",
            description_md="`auto`: `champion` moves when the gate passes; `never`: challenger only.",
            section="Registry",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description_md="Train even when data, code and config equal the champion's.",
            section="Registry",
        ),
    },
)
def ncbi_retrain() -> None:
    @task
    def pull_data() -> dict:
        """Restore `data/` at the requested revision; returns its path and data version (md5)."""
        from tasks import pipeline

        return pipeline.pull_data(_options().data_revision)

    @task
    def validate_data(data: dict) -> dict:
        """Great Expectations suites; invalid data fails the run without retries."""
        from tasks import pipeline
        from tasks.errors import DataError

        try:
            return pipeline.validate_data(data["data_dir"], get_current_context()["run_id"])
        except DataError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def summarize(data: dict, results: dict) -> dict:
        """One line per model: trained or why not, F1, gate, version, promoted (also summary.json)."""
        from tasks import pipeline

        return pipeline.summarize(get_current_context()["run_id"], data, results)

    data = pull_data()
    validated = validate_data(data)
    summarize(data, {model: model_flow(model, data, validated) for model in MODELS})


def model_flow(model: str, data: Any, validated: Any) -> dict[str, Any]:
    """plan -> train -> evaluate -> gate -> register -> promote for one model, in a task group."""

    @task
    def plan(data: dict, validated: dict) -> dict:
        """Train or skip, with the reason (nothing changed since the champion, or not selected)."""
        from tasks import pipeline

        return pipeline.plan_training(model, _options(), data["data_version"])

    @task(pool=GPU_POOL, queue=GPU_QUEUE, retries=TRAIN_RETRIES, execution_timeout=TRAIN_TIMEOUT)
    def train(plan: dict, data: dict) -> dict:
        """`ncbi-retrain train` in the training env / container; logs the run to MLflow."""
        from tasks import pipeline

        if not plan["train"]:
            raise AirflowSkipException(plan["reason"])
        ctx = get_current_context()
        return pipeline.train(
            model, _options(), data["data_dir"], data["data_version"], ctx["run_id"], ctx["ti"].try_number
        )

    @task(pool=GPU_POOL, queue=GPU_QUEUE)
    def evaluate(trained: dict, data: dict) -> dict:
        """The champion's metrics on the current test split (re-scored if from other data)."""
        from tasks import pipeline

        ctx = get_current_context()
        champion = pipeline.evaluate(
            model, _options().profile, data["data_dir"], data["data_version"], ctx["run_id"]
        )
        return champion | {"candidate": trained["metrics"]}

    @task
    def gate(evaluated: dict) -> dict:
        """F1 floor, paired bootstrap vs champion, per-class and behavioural checks."""
        from tasks import pipeline

        run_id = get_current_context()["run_id"]
        return pipeline.gate(model, _options().profile, evaluated["candidate"], evaluated["champion"], run_id)

    @task
    def register(trained: dict, gated: dict, plan: dict, data: dict) -> dict:
        """A model version with lineage tags and alias `challenger` (idempotent)."""
        from tasks import pipeline

        run_id = get_current_context()["run_id"]
        return pipeline.register(model, trained, gated, plan, data["data_version"], run_id)

    @task(outlets=[CHAMPION_ASSETS[model]])
    def promote(registered: dict, gated: dict) -> dict:
        """Move `champion` when the gate passed and promote=auto; otherwise skip with the reason."""
        from tasks import pipeline

        ctx = get_current_context()
        result = pipeline.promote(model, registered, gated, _options(), ctx["dag"].dag_id, ctx["run_id"])
        if not result["promoted"]:
            raise AirflowSkipException(result["reason"])  # no Asset event without a new champion
        return result

    with TaskGroup(group_id=model):
        planned = plan(data, validated)
        trained = train(planned, data)
        gated = gate(evaluate(trained, data))
        registered = register(trained, gated, planned, data)
        promoted = promote(registered, gated)
    return {"plan": planned, "train": trained, "gate": gated, "register": registered, "promote": promoted}


ncbi_retrain()
