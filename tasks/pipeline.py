"""The retraining pipeline's steps, one function per DAG task (no Airflow import: testable on its own).

Each step takes plain values and returns a small JSON-able dict (paths, run ids, versions, decisions):
that is what travels in XCom. Files (trained models, metrics, decisions, reports) live under the run's
work directory, `Settings.work_dir/<dag run id>/`, and in MLflow.

    pull_data -> validate_data -> plan_training -> train -> evaluate -> gate -> register -> promote
                                   (per model: classifier, ner)                     -> summarize

Training and re-scoring run in the training env through a launcher (`Settings.launcher`), as the same
`ncbi-retrain train|evaluate ...` command a trainer container would run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.errors import DataError, UsageError
from tasks.settings import Settings, get_settings
from tasks.vocab import MODELS, Model, RunParams

log = logging.getLogger(__name__)

# A training job's own deadline; the Airflow task's execution_timeout sits above the largest one.
TRAIN_TIMEOUT_S = {"tiny": 15 * 60, "cpu": 60 * 60, "gpu": 6 * 60 * 60}
EVALUATE_TIMEOUT_S = {"tiny": 10 * 60, "cpu": 30 * 60, "gpu": 60 * 60}
GATE_POLICY_ENV = "NCBI_RETRAIN_GATE_POLICY"  # an alternative gates.yaml (e.g. a stricter one per site)


# ------------------------------------------------------------------------------------------- helpers
def run_dir(dag_run_id: str, settings: Settings | None = None) -> Path:
    """The run's work directory (`work_dir/<dag run id>` with the id made filesystem-safe)."""
    settings = settings or get_settings()
    return settings.path(settings.work_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", dag_run_id)


def code_version() -> str:
    """The git commit of the code that trains (the checkout this package is imported from)."""
    from tasks.provenance import git_commit

    return git_commit(Path(__file__).resolve().parents[1])


def _job_env(settings: Settings, dag_run_id: str, data_version: str | None) -> dict[str, str]:
    env = {
        "MLFLOW_TRACKING_URI": settings.tracking_uri(),
        "NCBI_RETRAIN_DAG_RUN_ID": dag_run_id,
        "NCBI_RETRAIN_GIT_COMMIT": code_version(),  # containers have no .git
        "NCBI_RETRAIN_PROJECT_DIR": str(settings.project_dir),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
    }
    if data_version:
        env["NCBI_RETRAIN_DATA_VERSION"] = data_version
    return env


def _image(settings: Settings) -> str:
    return "local" if settings.launcher == "local" else settings.trainer_image


def _champion_tags(champion: Mapping[str, Any] | None) -> dict[str, str]:
    return dict((champion or {}).get("tags") or {})


# ------------------------------------------------------------------------------------------- steps
def pull_data(revision: str | None = None) -> dict[str, str]:
    """Restore `data/` at `revision` (a git revision of data.dvc; None: the checked-out one)."""
    from tasks.versioning import pull

    settings = get_settings()
    version = pull(settings.project_dir, revision or None)
    data_dir = settings.path(settings.data_dir)
    log.info("data version %s at %s (revision %s)", version, data_dir, revision or "checked out")
    return {"data_dir": str(data_dir), "data_version": version}


def validate_data(data_dir: str, dag_run_id: str) -> dict[str, Any]:
    """Validate the data with the GX suites; raises DataError (nothing downstream runs) when invalid."""
    from tasks.validation import validate_dir

    out = run_dir(dag_run_id) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    report = validate_dir(Path(data_dir))
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    summary = report.summary()
    if not report.valid:
        first = report.failures[0].line_text() if report.failures else "see the report"
        raise DataError(
            f"validation failed ({len(report.failures)} failures, first: {first}); nothing is trained; "
            f"report: {report_path}"
        )
    log.info("validation passed: %s", summary)
    return {"valid": True, "summary": summary, "report": str(report_path)}


def plan_training(model: str, options: RunParams, data_version: str) -> dict[str, Any]:
    """Decide whether `model` trains in this run; `reason` says why in one sentence.

    Training is skipped when the model is not selected, or when data version, code version and config
    fingerprint all equal the current champion's tags (unless `force`).
    """
    from tasks.registry import champion_version
    from tasks.training.fingerprint import config_fingerprint

    fingerprint = config_fingerprint(model, options.profile, options.overrides())
    commit = code_version()
    plan = {"model": model, "train": True, "config_fingerprint": fingerprint, "git_commit": commit}
    if not options.selected(model):
        return plan | {"train": False, "reason": f"{model} not selected (models={options.models or 'both'})"}
    champion = champion_version(model)
    if champion is None:
        return plan | {"reason": f"{model} has no champion yet"}
    tags = _champion_tags(champion)
    current = {"data_version": data_version, "git_commit": commit, "config_fingerprint": fingerprint}
    changed = [k for k, v in current.items() if tags.get(k) != v]
    version = champion.get("version")
    if changed:
        what = ", ".join(f"{k} {tags.get(k) or 'unset'} -> {current[k]}" for k in changed)
        return plan | {"reason": f"{model} champion v{version} differs: {what}"}
    if options.force:
        return plan | {"reason": f"{model}: nothing changed since champion v{version}, but force is set"}
    return plan | {
        "train": False,
        "reason": (
            f"{model}: nothing changed since champion v{version} (data {data_version}, code {commit}, "
            f"config {fingerprint}); training skipped (set force to retrain)"
        ),
    }


def train(
    model: str, options: RunParams, data_dir: str, data_version: str, dag_run_id: str, try_number: int = 1
) -> dict[str, Any]:
    """Train `model` in the training env (through the launcher); returns the run id and file paths."""
    from tasks.launch import Job, get_launcher

    settings = get_settings()
    # One folder per attempt: a failed try's logs stay for diagnosis, a retry never reuses them.
    out = run_dir(dag_run_id, settings) / model / f"try-{try_number}"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["train", model, "--data", data_dir, "--out", str(out), "--profile", options.profile]
    argv += ["--data-version", data_version, "--json"]
    job = Job(
        argv=[*argv, *options.overrides()],
        env=_job_env(settings, dag_run_id, data_version),
        mounts=[settings.project_dir],
        timeout_s=TRAIN_TIMEOUT_S[options.profile],
        gpus=1 if options.profile == "gpu" else 0,
        name=f"train-{model}",
    )
    result = get_launcher().run(job).json_line()
    metrics_path = (result.get("artifacts") or {}).get("metrics") or str(out / "metrics.json")
    log.info("trained %s: MLflow run %s, test metrics %s", model, result.get("run_id"), result.get("metrics"))
    return {
        "model": model,
        "run_id": result["run_id"],
        "model_uri": result.get("model_uri"),
        "out": str(out),
        "metrics": metrics_path,
        "test_metrics": {
            k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)
        },
        "config_fingerprint": result.get("config_fingerprint"),
    }


def evaluate(model: str, profile: str, data_dir: str, data_version: str, dag_run_id: str) -> dict[str, Any]:
    """The champion's metrics on the current test split: its recorded ones, or re-scored when they
    belong to another data version. The candidate's test metrics come from `train` itself."""
    from tasks.launch import Job, get_launcher
    from tasks.registry import champion_metrics, champion_version

    settings = get_settings()
    out = run_dir(dag_run_id, settings) / model
    out.mkdir(parents=True, exist_ok=True)
    champion = champion_version(model)
    if champion is None:
        return {"champion": None, "champion_version": None, "rescored": False}
    version = str(champion.get("version"))
    try:
        recorded = champion_metrics(model, out / "champion-recorded")
    except DataError as exc:  # the champion's run lost its metrics.json: score it again
        log.warning("%s", exc)
        recorded = None
    if recorded is not None:
        doc = json.loads(Path(recorded).read_text())
        if doc.get("data_version") == data_version:
            log.info("%s champion v%s: recorded metrics are on data %s", model, version, data_version)
            return {"champion": str(recorded), "champion_version": version, "rescored": False}
        log.info(
            "%s champion v%s was scored on data %s: re-scoring on %s",
            model,
            version,
            doc.get("data_version"),
            data_version,
        )
    target = out / "champion-metrics.json"
    job = Job(
        argv=[
            "evaluate",
            model,
            "--model",
            f"models:/{Model(model).registered_name}@champion",
            "--data",
            data_dir,
            "--out",
            str(target),
            "--data-version",
            data_version,
        ],
        env=_job_env(settings, dag_run_id, data_version),
        mounts=[settings.project_dir],
        timeout_s=EVALUATE_TIMEOUT_S[profile],
        gpus=1 if profile == "gpu" else 0,
        name=f"evaluate-{model}-champion",
    )
    get_launcher().run(job)
    return {"champion": str(target), "champion_version": version, "rescored": True}


def gate(
    model: str, profile: str, candidate_metrics: str, champion_metrics: str | None, dag_run_id: str
) -> dict[str, Any]:
    """Decide with the gate policy; writes decision.json (+ report) under the run's model folder."""
    from tasks.gates import decide, load_metrics, load_policy, write_decision

    policy_file = os.environ.get(GATE_POLICY_ENV)
    policy = load_policy(model, Path(policy_file)) if policy_file else None
    candidate = load_metrics(Path(candidate_metrics))
    champion = load_metrics(Path(champion_metrics)) if champion_metrics else None
    decision = decide(model, candidate, champion, profile, policy=policy)
    path = write_decision(decision, run_dir(dag_run_id) / model / "decision.json")
    log.info("%s gate %s: %s", model, decision.gate, decision.reason)
    return {
        "passed": decision.passed,
        "gate": decision.gate,
        "reason": decision.reason,
        "decision": str(path),
        "metric": decision.metric,
        "value": decision.candidate_value,
        "champion_value": decision.champion_value,
    }


def register(
    model: str,
    trained: Mapping[str, Any],
    gated: Mapping[str, Any],
    plan: Mapping[str, Any],
    data_version: str,
    dag_run_id: str,
) -> dict[str, Any]:
    """Register the trained run as a model version with lineage tags (idempotent: a retry finds it)."""
    from tasks.gates import load_decision
    from tasks.registry import register_run

    settings = get_settings()
    tags = {
        "data_version": data_version,
        "git_commit": plan["git_commit"],
        "config_fingerprint": trained.get("config_fingerprint") or plan["config_fingerprint"],
        "image": _image(settings),
        "dag_run_id": dag_run_id,
    }
    decision = load_decision(Path(gated["decision"]))
    rv = register_run(model, trained["run_id"], decision, tags)
    got = rv if isinstance(rv, Mapping) else asdict(rv) if hasattr(rv, "__dataclass_fields__") else vars(rv)
    log.info("registered %s version %s (gate %s)", got["name"], got["version"], gated["gate"])
    return {"name": got["name"], "version": str(got["version"]), "gate": gated["gate"]}


def promote(
    model: str,
    registered: Mapping[str, Any],
    gated: Mapping[str, Any],
    options: RunParams,
    dag_id: str,
    dag_run_id: str,
) -> dict[str, Any]:
    """Move `champion` to the new version when the gate passed and promote=auto; else say why not."""
    from tasks.registry import promote as move_champion

    name, version = registered["name"], registered["version"]
    if not gated["passed"]:
        return {
            "promoted": False,
            "name": name,
            "version": version,
            "reason": f"{name} v{version} not promoted: gate failed: {gated['reason']}",
        }
    if options.promote == "never":
        return {
            "promoted": False,
            "name": name,
            "version": version,
            "reason": f"{name} v{version} passed the gate but promote=never: champion unchanged",
        }
    move_champion(
        name,
        version,
        f"gate passed in {dag_id} run {dag_run_id}: {gated['reason']}",
        actor=f"airflow:{dag_id}",
    )
    return {
        "promoted": True,
        "name": name,
        "version": version,
        "reason": f"{name} v{version} is the new champion; gate: {gated['reason']}",
    }


def summarize(
    dag_run_id: str, data: Mapping[str, Any] | None, results: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The run's outcome per model (trained? gate, version, promoted, why); written to summary.json."""
    models = {}
    for model, r in results.items():
        plan, trained, gated, reg, prom = (r.get(k) for k in ("plan", "train", "gate", "register", "promote"))
        reason = (prom or {}).get("reason")
        if reason is None and gated:  # promote skipped itself: say why from the gate
            version = (reg or {}).get("version")
            reason = (
                f"v{version} registered as challenger, not promoted: gate failed: {gated['reason']}"
                if not gated["passed"]
                else f"v{version} passed the gate, not promoted (promote=never)"
            )
        models[model] = {
            "trained": bool(trained),
            "reason": reason or (plan or {}).get("reason"),
            "plan": (plan or {}).get("reason"),
            "run_id": (trained or {}).get("run_id"),
            "metric": (gated or {}).get("metric"),
            "value": (gated or {}).get("value"),
            "champion_value": (gated or {}).get("champion_value"),
            "gate": (gated or {}).get("gate"),
            "gate_reason": (gated or {}).get("reason"),
            "version": (reg or {}).get("version"),
            "promoted": bool((prom or {}).get("promoted")),
        }
    summary = {
        "dag_run_id": dag_run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_version": (data or {}).get("data_version"),
        "models": models,
    }
    path = run_dir(dag_run_id) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    for model, m in models.items():
        log.info("%s: %s", model, m["reason"])
    return summary | {"path": str(path)}


# ------------------------------------------------------------------------------------------- failures
def record_task_failure(
    dag_id: str, dag_run_id: str, task_id: str, try_number: int, error: str, log_url: str | None = None
) -> Path:
    """Note one failed task (called by the task's failure callback); the run summary collects them."""
    folder = run_dir(dag_run_id) / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', task_id)}.json"
    path.write_text(
        json.dumps(
            {
                "dag_id": dag_id,
                "dag_run_id": dag_run_id,
                "task_id": task_id,
                "try_number": try_number,
                "error": error,
                "log_url": log_url,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
        + "\n"
    )
    return path


def report_run_failure(dag_id: str, dag_run_id: str, reason: str, failed_task: str | None = None) -> Path:
    """Write `failure.md` + `failure.json` in the run's work dir and post the JSON to the webhook."""
    folder = run_dir(dag_run_id)
    folder.mkdir(parents=True, exist_ok=True)
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
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
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
    (folder / "failure.json").write_text(json.dumps(doc, indent=2) + "\n")
    path = folder / "failure.md"
    path.write_text("\n".join(lines) + "\n")
    log.error(
        "%s run %s failed at %s: %s (summary: %s)", dag_id, dag_run_id, doc["failed_task"], doc["error"], path
    )
    url = get_settings().webhook_url
    if url:
        post_json(url, doc)
    return path


def post_json(url: str, doc: Mapping[str, Any], timeout_s: float = 10.0) -> bool:
    """POST `doc` as JSON; a webhook that is down is logged, never raised (the run already failed)."""
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError) as exc:
        log.warning("webhook %s: post failed (%s)", url, exc)
        return False


# ------------------------------------------------------------------------------------------- manual
def manual_promotion(model: str, action: str, version: str | None, reason: str, actor: str) -> dict[str, Any]:
    """`promote` a version (or `previous`) to champion, or `rollback` to a version / the previous champion."""
    from tasks.registry import champion_version, promote, rollback

    if not reason.strip():
        raise UsageError("param reason is empty: say why the champion moves")
    if model not in MODELS:
        raise UsageError(f"param model is {model!r}: expected classifier or ner")
    name = Model(model).registered_name
    before = (champion_version(model) or {}).get("version")
    target = None if version in (None, "", "previous") else str(version)
    if action == "rollback" or target is None:
        rollback(name, target, reason, actor=actor)  # the Airflow user, never the worker's OS account
    elif action == "promote":
        promote(name, target, reason, actor=actor)
    else:
        raise UsageError(f"param action is {action!r}: expected promote or rollback")
    after = (champion_version(model) or {}).get("version")
    log.info("%s champion: v%s -> v%s (%s)", name, before, after, reason)
    return {
        "name": name,
        "from": None if before is None else str(before),
        "to": None if after is None else str(after),
        "reason": reason,
    }


# ------------------------------------------------------------------------------------------- demo
def result_table(summary_path: Path) -> str:
    """The demo's result table: F1 per model, gate decision, versions and aliases from the registry."""
    from tasks.registry import list_versions

    summary = json.loads(Path(summary_path).read_text())
    rows = [("model", "trained", "metric", "F1", "champion F1", "gate", "version", "aliases")]
    for model, m in summary["models"].items():
        name = Model(model).registered_name
        aliases = ""
        versions = list_versions(name) or []
        for v in versions:
            if str(v.get("version")) == str(m.get("version")):
                aliases = ",".join(v.get("aliases") or [])
        champ = next((v for v in versions if "champion" in (v.get("aliases") or [])), None)
        rows.append(
            (
                name,
                "yes" if m["trained"] else "skipped",
                m.get("metric") or "-",
                "-" if m.get("value") is None else f"{m['value']:.4f}",
                "-" if m.get("champion_value") is None else f"{m['champion_value']:.4f}",
                m.get("gate") or "-",
                str(m.get("version") or "-"),
                aliases or ("-" if champ is None else f"(champion is v{champ.get('version')})"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for model, m in summary["models"].items():
        reason = m["reason"] or ""
        named = reason.startswith((model, Model(model).registered_name))
        lines.append(reason if named else f"{model}: {reason}")
    return "\n".join(lines)
