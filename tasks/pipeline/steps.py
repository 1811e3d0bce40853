"""The steps of `ncbi_retrain` that run in the orchestration env, one function per DAG task.

Each takes plain values and typed records (`tasks.vocab`) and returns a record; heavy imports (DVC, GX,
MLflow, numpy) happen inside the functions. The training and re-scoring jobs themselves run in the
training env through the launcher's operator: `plan_training` and `champion_metrics` build them
(`tasks.pipeline.jobs`), `train_result` and `gate` read their results.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tasks.errors import DataError
from tasks.files import atomic_write_json
from tasks.pipeline import jobs
from tasks.pipeline.datadrift import drift_for, run_drift
from tasks.pipeline.rundir import code_version, run_dir
from tasks.settings import get_settings
from tasks.vocab import (
    Approval,
    ApprovalOutcome,
    ChampionRef,
    DataRef,
    EvaluateResult,
    GateResult,
    Model,
    Plan,
    PromoteMode,
    Promotion,
    Registration,
    RunParams,
    TrainResult,
    ValidationResult,
)

log = logging.getLogger(__name__)

GATE_POLICY_ENV = "NCBI_RETRAIN_GATE_POLICY"  # an alternative gates.yaml (e.g. a stricter one per site)


def pull_data(revision: str | None, dag_run_id: str) -> DataRef:
    """Materialise the data version of `data.dvc` at git `revision` (None: HEAD) into the run's own
    read-only folder `<run dir>/data`; every later step reads only that folder. The checkout (`data/`,
    `data.dvc`) is never read or written, so runs of different revisions cannot corrupt each other; a
    retried task reuses a folder that already holds the version."""
    from tasks.versioning import materialize

    settings = get_settings()
    got = materialize(settings.project_dir, revision or None, run_dir(dag_run_id, settings) / "data")
    log.info(
        "data version %s of revision %s (commit %s) in %s: %d files, %d hard-linked from the DVC cache%s",
        got.data_version,
        got.rev,
        got.commit[:12],
        got.path,
        got.files,
        got.linked,
        " (reused)" if got.reused else "",
    )
    return DataRef(data_dir=got.path, data_version=got.data_version, revision=got.rev, commit=got.commit)


def validate_data(data: DataRef, dag_run_id: str) -> ValidationResult:
    """Validate the data with the GX suites; raises DataError (nothing downstream runs) when invalid."""
    from tasks.validation import validate_dir

    report = validate_dir(Path(data.data_dir))
    report_path = atomic_write_json(run_dir(dag_run_id) / "validation" / "report.json", report.to_dict())
    summary = report.summary()
    if not report.valid:
        first = report.failures[0].line_text() if report.failures else "see the report"
        raise DataError(
            f"validation failed ({len(report.failures)} failures, first: {first}); nothing is trained; "
            f"report: {report_path}"
        )
    log.info("validation passed: %s", summary)
    drift = run_drift(data, dag_run_id)  # against the champions' data, else the previous version
    return ValidationResult(
        valid=True, summary=summary, report=str(report_path), drift=None if drift is None else str(drift)
    )


def plan_training(model: Model | str, options: RunParams, data: DataRef, dag_run_id: str) -> Plan:
    """Decide whether `model` trains in this run (`reason` says why in one sentence); with the job.

    Training is skipped when the model is not selected, or when data version, code version and config
    fingerprint all equal the current champion's tags (unless `force`).
    """
    from tasks.registry import champion_version
    from tasks.training.config import config_fingerprint

    model = Model(model)
    fingerprint = config_fingerprint(model.value, options.profile.value, options.overrides())
    commit = code_version()

    def decided(train: bool, reason: str) -> Plan:
        job = None
        if train:
            settings = get_settings()
            if settings.launcher != "local":  # a bind-mount source must exist before the container
                jobs.ensure_mount_paths(settings)
            job = jobs.train_job(model, options, data, dag_run_id, commit, settings)
        log.info("%s", reason)
        return Plan(
            model=model,
            train=train,
            reason=reason,
            config_fingerprint=fingerprint,
            git_commit=commit,
            job=job,
        )

    if not options.selected(model):
        return decided(False, f"{model} not selected (models={options.models or 'both'})")
    champion = champion_version(model.value)
    if champion is None:
        return decided(True, f"{model} has no champion yet")
    tags = dict(champion.get("tags") or {})
    current = {"data_version": data.data_version, "git_commit": commit, "config_fingerprint": fingerprint}
    changed = [k for k, v in current.items() if tags.get(k) != v]
    version = champion.get("version")
    if changed:
        what = ", ".join(f"{k} {tags.get(k) or 'unset'} -> {current[k]}" for k in changed)
        return decided(True, f"{model} champion v{version} differs: {what}")
    if options.force:
        return decided(True, f"{model}: nothing changed since champion v{version}, but force is set")
    return decided(
        False,
        f"{model}: nothing changed since champion v{version} (data {data.data_version}, code {commit}, "
        f"config {fingerprint}); training skipped (set force to retrain)",
    )


def train_result(plan: Plan, output: Any) -> TrainResult:
    """The training operator's XCom (the job's `--json` result) as a typed record."""
    name = plan.job.name if plan.job else f"train-{plan.model}"
    try:
        result = TrainResult.model_validate(jobs.job_result(output, name))
    except ValueError as exc:  # pydantic's ValidationError: the contract changed under us
        raise DataError(
            f"{name}: the --json result does not match the train command's contract: {exc}"
        ) from None
    if "metrics" not in result.artifacts:
        raise DataError(f"{name}: the --json result names no metrics file (field artifacts.metrics)")
    log.info("trained %s: MLflow run %s, test metrics %s", plan.model, result.run_id, result.metrics)
    return result


def champion_metrics(model: Model | str, data: DataRef, dag_run_id: str) -> ChampionRef:
    """The champion's metrics on this run's test split: its recorded ones when they are on this data
    version, else a job that re-scores it (the candidate's own test metrics come from `train`)."""
    from tasks.registry import champion_metrics as download_metrics
    from tasks.registry import champion_version

    model = Model(model)
    settings = get_settings()
    out = run_dir(dag_run_id, settings) / model.value
    out.mkdir(parents=True, exist_ok=True)
    champion = champion_version(model.value)
    if champion is None:
        return ChampionRef(model=model, version=None, reason=f"{model} has no champion yet")
    version = str(champion.get("version"))
    try:
        recorded = download_metrics(model.value, out / "champion-recorded")
    except DataError as exc:  # the champion's run lost its metrics.json: score it again
        log.warning("%s", exc)
        recorded = None
    if recorded is not None:
        scored_on = json.loads(Path(recorded).read_text()).get("data_version")
        if scored_on == data.data_version:
            reason = f"{model} champion v{version}: recorded metrics are on data {data.data_version}"
            log.info("%s", reason)
            return ChampionRef(model=model, version=version, reason=reason, metrics=str(recorded))
        reason = (
            f"{model} champion v{version} was scored on data {scored_on}: re-scoring on {data.data_version}"
        )
    else:
        reason = f"{model} champion v{version} has no recorded metrics: re-scoring on {data.data_version}"
    log.info("%s", reason)
    if settings.launcher != "local":
        jobs.ensure_mount_paths(settings)
    job = jobs.rescore_job(model, data, dag_run_id, out / "champion-metrics.json", code_version(), settings)
    return ChampionRef(model=model, version=version, reason=reason, job=job)


def gate(
    model: Model | str,
    profile: str,
    trained: TrainResult,
    champion: ChampionRef,
    rescored: Any,
    dag_run_id: str,
) -> GateResult:
    """Decide with the gate policy; writes decision.json (+ report) under the run's model folder.

    `rescored` is the re-scoring operator's XCom (None when the recorded metrics were reused).
    """
    from tasks.gates import decide, load_metrics, load_policy, write_decision

    model = Model(model)
    champion_file = champion.metrics
    if champion.job is not None:
        if rescored is None:
            raise DataError(f"{champion.job.name} returned nothing: the champion has no metrics to gate on")
        champion_file = EvaluateResult.model_validate(
            jobs.job_result(rescored, champion.job.name)
        ).metrics_path
    policy_file = os.environ.get(GATE_POLICY_ENV)
    policy = load_policy(model.value, Path(policy_file)) if policy_file else None
    candidate = load_metrics(Path(trained.metrics_file))
    reference = load_metrics(Path(champion_file)) if champion_file else None
    decision = decide(model.value, candidate, reference, profile, policy=policy)
    decision = decision.model_copy(update={"drift": drift_for(model, dag_run_id)})  # the report's section
    path = write_decision(decision, run_dir(dag_run_id) / model.value / "decision.json")
    log.info("%s gate %s: %s", model, decision.gate, decision.reason)
    return GateResult(
        passed=decision.passed,
        gate=decision.gate,
        reason=decision.reason,
        decision=str(path),
        metric=decision.metric,
        value=decision.candidate_value,
        champion_value=decision.champion_value,
    )


def register(
    model: Model | str,
    trained: TrainResult,
    gated: GateResult,
    plan: Plan,
    data: DataRef,
    dag_run_id: str,
) -> Registration:
    """Register the trained run as a model version with lineage tags (idempotent: a retry finds it)."""
    from tasks.gates import load_decision
    from tasks.registry import register_run

    settings = get_settings()
    tags = {
        "data_version": data.data_version,
        "git_commit": plan.git_commit,
        "config_fingerprint": trained.config_fingerprint or plan.config_fingerprint,
        "image": "local" if settings.launcher == "local" else settings.trainer_image,
        "dag_run_id": dag_run_id,
    }
    decision = load_decision(Path(gated.decision))
    rv = register_run(Model(model).value, trained.run_id, decision, tags)
    log.info("registered %s version %s (gate %s)", rv.name, rv.version, gated.gate)
    return Registration(name=rv.name, version=str(rv.version), gate=gated.gate)


def promote(
    registered: Registration,
    gated: GateResult,
    options: RunParams,
    dag_id: str,
    dag_run_id: str,
    approval: Approval | None = None,
) -> Promotion:
    """Move `champion` to the new version when the gate passed and promote=auto, or promote=approve and a
    person approved (`approval`, the approval task's answer; recorded as their move). Otherwise say why
    not; a rejection or a timeout is recorded on the version (tags `approval*`)."""
    from tasks.registry import promote as move_champion
    from tasks.registry.champion import record_approval

    name, version = registered.name, registered.version
    if not gated.passed:
        reason = f"{name} v{version} not promoted: gate failed: {gated.reason}"
        return Promotion(promoted=False, name=name, version=version, reason=reason)
    if options.promote == PromoteMode.never:
        reason = f"{name} v{version} passed the gate but promote=never: champion unchanged"
        return Promotion(promoted=False, name=name, version=version, reason=reason)
    gate_note = f"gate passed in {dag_id} run {dag_run_id}: {gated.reason}"
    actor = f"airflow:{dag_id}"
    if options.promote == PromoteMode.approve:
        if approval is None:  # the approval task was skipped by hand: nobody approved
            reason = f"{name} v{version} passed the gate but nobody approved it: champion unchanged"
            return Promotion(promoted=False, name=name, version=version, reason=reason)
        record_approval(name, version, approval.outcome.value, approval.by, approval.reason, approval.at)
        if approval.outcome != ApprovalOutcome.approved:
            reason = f"{name} v{version} passed the gate, not promoted: {approval.describe()}"
            log.info("%s", reason)
            return Promotion(promoted=False, name=name, version=version, reason=reason, approval=approval)
        gate_note = f"{approval.describe()} in {dag_id} run {dag_run_id}; gate: {gated.reason}"
        actor = f"airflow:{dag_id}:{approval.by}"
    move_champion(name, version, gate_note, actor=actor)
    by = f", {approval.describe()}" if approval else ""
    reason = f"{name} v{version} is the new champion{by}; gate: {gated.reason}"
    return Promotion(promoted=True, name=name, version=version, reason=reason, approval=approval)
