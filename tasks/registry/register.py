"""Registering a run's model as a version: idempotent and safe when two processes race.

A run has at most one version. Two processes that race both create a version, then each keeps the
lowest version of the run and deletes its own if it is not that one, so both return the same version
and the duplicate never gets an alias. The version is created with every tag in one call, so it never
exists without them; only then does it get `challenger` (never `champion`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.errors import UsageError
from tasks.registry.aliases import CHALLENGER, HISTORY_TAG, actor_name, has_held, move_alias
from tasks.registry.service import client, mlflow_call, registered_name
from tasks.vocab import MODELS, Model

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from tasks.vocab import GateDecision as Decision

LINEAGE_RUN_TAGS = (
    "data_version",
    "git_commit",
    "image",
    "dag_run_id",
    "config_fingerprint",
    "profile",
    "task",
)


@dataclass
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    source: str
    created: bool
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def register_run(
    model: str,
    run_id: str,
    decision: Decision | dict | None,
    tags: dict[str, str] | None = None,
) -> RegisteredVersion:
    """Register `run_id`'s pyfunc as a version of `model` with its lineage and gate tags.

    Idempotent: the same run always yields the same version (also under concurrent calls). The version
    is created with every tag in one call, then gets the `challenger` alias (never `champion`).
    """
    name = registered_name(model)
    dec = _decision_dict(decision)
    if dec is not None and {"passed", "reason", "metric", "candidate_value"} - set(dec):
        raise UsageError("decision: fields passed, reason, metric and candidate_value are required")
    if dec is not None and model in MODELS and dec.get("model") not in (None, model):
        raise UsageError(f"decision: field model is {dec.get('model')!r}, but the version is for {model}")
    mlflow_client = client()
    who = actor_name(None)
    with mlflow_call(f"find run {run_id}"):
        run = mlflow_client.get_run(run_id)
    if run.info.status != "FINISHED":  # failed or killed mid-way (e.g. a full disk): artifacts may be partial
        raise UsageError(
            f"run {run_id} is {run.info.status}, not FINISHED: its model may be partial, so it is not "
            "registered"
        )
    with mlflow_call(f"register run {run_id} as {name}"):
        version_tags = _version_tags(run, dec, tags)
        if dec is not None:  # the full decision beside the run, so `lineage` can show every check later
            mlflow_client.log_dict(run_id, dec, "gate/decision.json")
        existing = _versions_of_run(mlflow_client, name, run_id)
        created = False
        if existing:
            mine = existing[0]
            held = {str(v) for v in mlflow_client.get_registered_model(name).aliases.values()}
            for dup in existing[1:]:  # left by a racing call that died before cleaning up
                if str(dup.version) not in held:
                    _delete_quietly(mlflow_client, name, str(dup.version))
        else:
            source, model_id = _logged_model_source(mlflow_client, run)
            try:
                mlflow_client.create_registered_model(
                    name,
                    tags={HISTORY_TAG: "[]"},
                    description="NCBI disease model; aliases champion / challenger (see alias_history).",
                )
            except Exception as exc:  # an existing model is the normal case
                if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            mv = mlflow_client.create_model_version(
                name, source, run_id=run_id, tags=version_tags, model_id=model_id, await_creation_for=60
            )
            # A concurrent call may have created one too: the lowest version of the run wins.
            everyone = _versions_of_run(mlflow_client, name, run_id)
            mine = everyone[0]
            if str(mine.version) != str(mv.version):
                _delete_quietly(mlflow_client, name, str(mv.version))
            else:
                created = True
        version = str(mine.version)
        if created or not has_held(mlflow_client, name, CHALLENGER, version):
            why = f"registered run {run_id}; gate {version_tags['gate']}: {version_tags['gate_reason']}"
            move_alias(mlflow_client, name, CHALLENGER, version, why, who)
        mv = mlflow_client.get_model_version(name, version)
        return RegisteredVersion(
            name=name,
            version=version,
            run_id=run_id,
            source=mv.source,
            created=created,
            aliases=list(mv.aliases),
            tags=dict(mv.tags),
        )


def _decision_dict(decision: Decision | dict | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return decision if isinstance(decision, dict) else decision.to_dict()


def _logged_model_source(mlflow_client: MlflowClient, run: Any) -> tuple[str, str | None]:
    """(source URI, model_id) of the run's pyfunc: the logged model `model`, else runs:/ID/model."""
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    found = [
        m
        for m in mlflow_client.search_logged_models(
            experiment_ids=[experiment_id], filter_string="name = 'model'"
        )
        if m.source_run_id == run_id
    ]
    if not found:
        found = [
            m
            for m in mlflow_client.search_logged_models(experiment_ids=[experiment_id])
            if m.source_run_id == run_id
        ]
    if found:
        latest = max(found, key=lambda m: m.creation_timestamp or 0)
        return f"models:/{latest.model_id}", latest.model_id
    if any(a.path == "model" for a in mlflow_client.list_artifacts(run_id)):
        return f"{run.info.artifact_uri}/model", None
    raise UsageError(f"run {run_id} has no logged model named 'model': log the pyfunc with name='model'")


def _versions_of_run(mlflow_client: MlflowClient, name: str, run_id: str) -> list[Any]:
    versions = mlflow_client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted(versions, key=lambda v: int(v.version))


def _delete_quietly(mlflow_client: MlflowClient, name: str, version: str) -> None:
    """Delete a duplicate version; another racing call may have deleted it already."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.delete_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _version_tags(run: Any, decision: dict[str, Any] | None, extra: dict[str, str] | None) -> dict[str, str]:
    rtags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    tags = {k: str(rtags[k]) for k in LINEAGE_RUN_TAGS if rtags.get(k)}
    tags.setdefault("data_version", "unknown")
    tags.setdefault("git_commit", "unknown")
    tags.setdefault("image", "local")
    tags.setdefault("dag_run_id", os.environ.get("NCBI_RETRAIN_DAG_RUN_ID", "none"))
    tags.setdefault("config_fingerprint", "unknown")
    if sha := rtags.get("nemo_sha256") or params.get("nemo_sha256"):
        tags["nemo_sha256"] = sha
    if decision is not None:
        tags["gate"] = "passed" if decision["passed"] else "failed"
        tags["gate_reason"] = str(decision["reason"])[:4000]
        tags["gate_metric"] = str(decision["metric"])
        tags["test_f1"] = f"{float(decision['candidate_value']):.6f}"
        tags["gate_profile"] = str(decision.get("profile", ""))
    else:
        tags["gate"] = "none"
        tags["gate_reason"] = "registered without a gate decision"
        task = rtags.get("task", "")
        metric = Model(task).gate_metric if task in MODELS else ""
        for key in ("test_f1", f"test_{metric}", metric):
            if key in metrics:
                tags["test_f1"] = f"{float(metrics[key]):.6f}"
                break
        else:
            tags["test_f1"] = "unknown"
    tags["run_id"] = run.info.run_id
    tags.update({str(k): str(v) for k, v in (extra or {}).items()})
    return tags
