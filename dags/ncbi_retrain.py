"""
# ncbi_retrain

Keeps the NCBI-disease **classifier** (3 classes: cancer, neurological, other) and **NER tagger**
(IOB disease spans) fresh. Nightly, and on demand with the form below.

```
pull_data -> validate_data -> classifier: plan -> train -> train_result -> champion -> rescore_champion
                                          -> gate -> register -> approval_request -> approval -> promote
                           -> ner:        (the same)                                     -> summarize
```

- **pull_data**: the data version of the *data revision* (a git revision of `data.dvc`; empty = HEAD)
  materialised from the DVC cache / remote into this run's own read-only folder `runs/<run id>/data`
  (every file's md5 checked); the checkout's `data/` and `data.dvc` are never touched.
- **validate_data**: Great Expectations suites; invalid data stops the run here (nothing trains,
  nothing is registered) and the report names file and line.
- **plan**: training is skipped, with the reason in the log and in XCom, when the data version,
  the code version (git commit) and the config fingerprint all equal the current champion's tags
  (unless *force*); otherwise the training job (command and environment).
- **train** (pool and queue `gpu`): `ncbi-retrain train MODEL --profile P --json` in the training
  env, run by the operator `NCBI_RETRAIN_LAUNCHER` names: `BashOperator` (local venv),
  `DockerOperator` or `KubernetesPodOperator` (trainer image). The job's output is this task's log;
  each try writes to its own folder `<run>/<model>/try-N` and MLflow run; retried with backoff.
- **train_result**: the job's `--json` line (the operator's XCom) as a typed record.
- **champion**: the champion's recorded test metrics when they are on this data version; otherwise
  **rescore_champion** runs `ncbi-retrain evaluate --model models:/NAME@champion` the same way.
- **gate**: F1 floor, paired bootstrap against the champion, per-class and behavioural checks.
- **register**: a version with lineage tags and alias `challenger` (idempotent on retries).
- **approval_request** / **approval** (*promote* = `approve`, gate passed): the approval task shows the
  decision (the gate metric vs the champion with its CI, per-class changes, behavioural results, where
  the report and the MLflow run are) under the UI's **required actions** and waits: *Approve* moves
  `champion` (recorded as the approver's move), *Reject* keeps the version `challenger` (the reason is
  recorded); no answer within `NCBI_RETRAIN_APPROVAL_TIMEOUT` (default 24 h) counts as a reject. Answer
  here or with `ncbi-retrain approve MODEL --run RUN_ID [--reject] --reason TEXT`. Skipped, and nothing
  waits, with `auto` or `never`.
- **promote**: `champion` moves only when the gate passed and *promote* is `auto`, or `approve` and a
  person approved; the model's Asset records each new champion.

On failure a summary is written to `runs/<run id>/failure.md` (and posted to
`NCBI_RETRAIN_WEBHOOK_URL` when set). Schedule: `NCBI_RETRAIN_SCHEDULE` (cron, default 02:00 UTC;
`none` for manual only); scheduled runs promote as `NCBI_RETRAIN_PROMOTE` says (default `auto`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Param, TaskGroup, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from ncbi_common import (
    CHAMPION_ASSETS,
    DAG_TEST_USER,
    DEFAULT_PROFILE,
    MAX_ACTIVE_RUNS,
    MODELS,
    RESCORE_TIMEOUT,
    SCHEDULE,
    TRAIN_RETRIES,
    TRAIN_TIMEOUT,
    default_args,
    run_failed,
    task_failed,
)
from ncbi_common.approval import approval_operator
from ncbi_common.jobs import MACROS, job_operator

from tasks.pipeline.approval import APPROVAL_TASK, duration_text
from tasks.settings import get_settings
from tasks.vocab import Model, Profile, PromoteMode

# The launcher, the GPU pool and queue, the promote mode of scheduled runs and the approval timeout:
# read once, when the DAG is parsed.
SETTINGS = get_settings()


def _options() -> Any:
    from tasks.errors import UsageError
    from tasks.vocab import RunParams

    try:
        return RunParams.from_params(get_current_context()["params"])
    except UsageError as exc:
        raise AirflowFailException(str(exc)) from exc  # a bad form value: retrying cannot help


def _run_id() -> str:
    return get_current_context()["run_id"]


@dag(
    dag_id=Path(__file__).stem,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,  # NCBI_RETRAIN_MAX_ACTIVE_RUNS, default 1
    doc_md=__doc__,
    tags=["ncbi-disease", "training", "mlops"],
    default_args=default_args(on_failure_callback=task_failed),
    on_failure_callback=run_failed,
    user_defined_macros=MACROS,  # job_argv / job_env / job_script: the jobs' templates
    params={
        # Optional fields are `["null", ...]` with None as default: the UI's trigger form treats an empty
        # string as a missing required value and would not submit. RunParams reads None as "profile default".
        "data_revision": Param(
            None,
            type=["null", "string"],
            title="Data revision",
            description_md="Git revision of `data.dvc` (tag, branch, commit); empty: HEAD "
            "(the committed `data.dvc`).",
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
            SETTINGS.promote.value,
            type="string",
            enum=[m.value for m in PromoteMode],
            title="Promote",
            description_md="`auto`: `champion` moves when the gate passes; `approve`: a person approves "
            "first (required actions, or `ncbi-retrain approve`; no answer within "
            f"{duration_text(SETTINGS.approval_timeout)} counts as a reject); `never`: challenger "
            "only. Scheduled runs use `NCBI_RETRAIN_PROMOTE`.",
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
        """The revision's data version in this run's own read-only folder; returns its path and md5."""
        from tasks.pipeline import steps

        options = _options()
        if options.promote == PromoteMode.approve and (
            get_current_context()["dag_run"].triggering_user_name == DAG_TEST_USER
        ):  # dag.test() never times an approval out, and no api-server is there to answer it
            raise AirflowFailException(
                "promote=approve needs the Airflow stack (make up): under `airflow dags test` / dag.test() "
                "nobody can answer the approval and nothing times it out; use promote=auto or never here"
            )
        return steps.pull_data(options.data_revision, _run_id()).dump()

    @task
    def validate_data(data: dict) -> dict:
        """Great Expectations suites; invalid data fails the run without retries."""
        from tasks.errors import DataError
        from tasks.pipeline import steps
        from tasks.vocab import DataRef

        try:
            return steps.validate_data(DataRef.model_validate(data), _run_id()).dump()
        except DataError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def summarize(data: dict, results: dict) -> dict:
        """One line per model: trained or why not, F1, gate, version, promoted (also summary.json)."""
        from tasks.pipeline.summary import ModelOutcome, summarize
        from tasks.vocab import DataRef

        outcomes = {model: ModelOutcome.from_xcom(r) for model, r in results.items()}
        started = get_current_context()["dag_run"].start_date
        return summarize(_run_id(), DataRef.model_validate(data), outcomes, started).dump()

    data = pull_data()
    validated = validate_data(data)
    summarize(data, {model: model_flow(model, data, validated) for model in MODELS})


def model_flow(model: str, data: Any, validated: Any) -> dict[str, Any]:
    """plan -> train -> train_result -> champion -> rescore_champion -> gate -> register
    -> approval_request -> approval -> promote."""

    @task
    def plan(data: dict, validated: dict) -> dict:
        """Train or skip, with the reason; when training, the job (command and environment)."""
        from tasks.pipeline import steps
        from tasks.vocab import DataRef

        return steps.plan_training(model, _options(), DataRef.model_validate(data), _run_id()).dump()

    @task
    def train_result(plan: dict, output: Any) -> dict:
        """The training job's `--json` result (the operator's XCom), checked against its contract."""
        from tasks.pipeline import steps
        from tasks.vocab import Plan

        return steps.train_result(Plan.model_validate(plan), output).dump()

    @task
    def champion(data: dict) -> dict:
        """The champion's recorded metrics when they are on this data, else the job re-scoring it."""
        from tasks.pipeline import steps
        from tasks.vocab import DataRef

        return steps.champion_metrics(model, DataRef.model_validate(data), _run_id()).dump()

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)  # re-scoring may have been skipped
    def gate(trained: dict, champion: dict, rescored: Any) -> dict:
        """F1 floor, paired bootstrap vs champion, per-class and behavioural checks."""
        from tasks.pipeline import steps
        from tasks.vocab import ChampionRef, TrainResult

        return steps.gate(
            model,
            _options().profile.value,
            TrainResult.model_validate(trained),
            ChampionRef.model_validate(champion),
            rescored,
            _run_id(),
        ).dump()

    @task
    def register(trained: dict, gated: dict, plan: dict, data: dict) -> dict:
        """A model version with lineage tags and alias `challenger` (idempotent)."""
        from tasks.pipeline import steps
        from tasks.vocab import DataRef, GateResult, Plan, TrainResult

        return steps.register(
            model,
            TrainResult.model_validate(trained),
            GateResult.model_validate(gated),
            Plan.model_validate(plan),
            DataRef.model_validate(data),
            _run_id(),
        ).dump()

    @task
    def approval_request(registered: dict, gated: dict, trained: dict) -> dict:
        """promote=approve and a passed gate: what the approver sees; otherwise why nobody is asked."""
        from tasks.pipeline.approval import approval_request
        from tasks.vocab import GateResult, Registration, TrainResult

        return approval_request(
            model,
            Registration.model_validate(registered),
            GateResult.model_validate(gated),
            TrainResult.model_validate(trained),
            _options(),
            _run_id(),
            SETTINGS.approval_timeout,
        ).dump()

    # The approval may have been skipped (promote=auto / never, a failed gate): promote runs all the same.
    @task(outlets=[CHAMPION_ASSETS[model]], trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def promote(registered: dict, gated: dict, answer: Any) -> dict:
        """Move `champion` when the gate passed and promote=auto, or approve and a person approved;
        otherwise skip with the reason (a rejection or timeout is recorded on the version)."""
        from tasks.pipeline import steps
        from tasks.vocab import Approval, GateResult, Registration

        ctx = get_current_context()
        result = steps.promote(
            Registration.model_validate(registered),
            GateResult.model_validate(gated),
            _options(),
            ctx["dag"].dag_id,
            ctx["run_id"],
            Approval.from_response(answer),
        )
        if not result.promoted:
            raise AirflowSkipException(result.reason)  # no Asset event without a new champion
        return result.dump()

    gpu = {"pool": SETTINGS.gpu_pool, "queue": SETTINGS.gpu_queue}  # LocalExecutor ignores the queue
    with TaskGroup(group_id=model):
        planned = plan(data, validated)
        train = job_operator(
            "train",
            planned,
            name=f"train-{model}",
            retries=TRAIN_RETRIES,
            execution_timeout=TRAIN_TIMEOUT,
            doc_md="`ncbi-retrain train` in the training env (launcher: `NCBI_RETRAIN_LAUNCHER`).",
            **gpu,
        )
        trained = train_result(planned, train.output)
        reference = champion(data)
        trained >> reference  # nothing to compare when training failed or was skipped
        rescore = job_operator(
            "rescore_champion",
            reference,
            name=f"rescore-{model}-champion",
            execution_timeout=RESCORE_TIMEOUT,
            doc_md="`ncbi-retrain evaluate --model models:/NAME@champion` on this run's test split.",
            **gpu,
        )
        gated = gate(trained, reference, rescore.output)
        registered = register(trained, gated, planned, data)
        request = approval_request(registered, gated, trained)
        approval = approval_operator(
            APPROVAL_TASK,
            request,
            SETTINGS.approval_timeout,
            doc_md="Approve or reject the new champion (promote=approve): required actions, or "
            "`ncbi-retrain approve MODEL --run RUN_ID [--reject] --reason TEXT`.",
        )
        promoted = promote(registered, gated, approval.output)
    return {
        "plan": planned,
        "train": trained,
        "gate": gated,
        "register": registered,
        "approval_request": request,
        "approval": approval.output,
        "promote": promoted,
    }


ncbi_retrain()
