"""Read views of the registry: versions, alias history, lineage, the champion and its metrics."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.errors import DataError, UsageError
from tasks.files import copy_atomically
from tasks.registry.aliases import CHAMPION, history_from_tags, is_lock
from tasks.registry.service import client, mlflow_call, registered_name


def list_versions(name: str | None = None) -> list[dict]:
    """Every version (of `name`, or of every registered model) with aliases, gate, metric, data version."""
    mlflow_client = client()
    rows: list[dict] = []
    with mlflow_call("list registered models"):
        names = (
            [registered_name(name)]
            if name
            else sorted(m.name for m in mlflow_client.search_registered_models() if not is_lock(m.name))
        )
        for n in names:
            rm = mlflow_client.get_registered_model(n)
            aliases = {a: str(v) for a, v in rm.aliases.items()}
            versions = mlflow_client.search_model_versions(f"name = '{n}'")
            rows += [_version_row(mv, aliases) for mv in sorted(versions, key=lambda v: int(v.version))]
    return rows


def history(name: str) -> list[dict]:
    """Every recorded alias move of `name`, oldest first."""
    name = registered_name(name)
    mlflow_client = client()
    with mlflow_call(f"read the registered model {name}"):
        return history_from_tags(mlflow_client.get_registered_model(name).tags)


def lineage(ref: str) -> dict:
    """The chain behind `NAME@ALIAS` (or `NAME/VERSION`): data -> git commit -> image -> run -> gate."""
    from mlflow.artifacts import load_dict

    name, alias, version = _parse_ref(ref)
    mlflow_client = client()
    with mlflow_call(f"resolve {ref}"):
        mv = (
            mlflow_client.get_model_version_by_alias(name, alias)
            if alias
            else mlflow_client.get_model_version(name, version)
        )
        t = mv.tags
        run = mlflow_client.get_run(mv.run_id) if mv.run_id else None
        decision = None
        if run is not None and any(
            a.path == "gate/decision.json" for a in mlflow_client.list_artifacts(mv.run_id, "gate")
        ):
            decision = load_dict(f"runs:/{mv.run_id}/gate/decision.json")
        moves = [
            e
            for e in history_from_tags(mlflow_client.get_registered_model(name).tags)
            if e.get("to") == str(mv.version)
        ]
    rtags = run.data.tags if run else {}
    out = {
        "ref": ref,
        "name": name,
        "version": str(mv.version),
        "aliases": list(mv.aliases),
        "data_version": t.get("data_version"),
        "git_commit": t.get("git_commit"),
        "image": t.get("image"),
        "config_fingerprint": t.get("config_fingerprint"),
        "run": {
            "run_id": mv.run_id,
            "experiment_id": run.info.experiment_id if run else None,
            "status": run.info.status if run else None,
            "started": _iso(run.info.start_time) if run and run.info.start_time else None,
            "profile": rtags.get("profile"),
            "dag_run_id": t.get("dag_run_id"),
            "metrics": dict(run.data.metrics) if run else {},
        },
        "model": {"source": mv.source, "nemo_sha256": t.get("nemo_sha256")},
        "gate": {
            "gate": t.get("gate"),
            "reason": t.get("gate_reason"),
            "metric": t.get("gate_metric"),
            "value": t.get("test_f1"),
            "checks": [
                {"name": c["name"], "passed": c["passed"], "detail": c.get("detail")}
                for c in (decision or {}).get("checks", [])
            ],
        },
        "alias_moves": moves,
    }
    out["chain"] = [
        f"data {out['data_version']}",
        f"git {out['git_commit']}",
        f"image {out['image']}",
        f"run {mv.run_id}",
        f"gate {out['gate']['gate']}: {out['gate']['reason']}",
        f"version {name}/{mv.version}",
    ]
    return out


def champion_version(model: str) -> dict | None:
    """The champion's {name, version, run_id, source, tags}, or None when there is none yet."""
    name = registered_name(model)
    mlflow_client = client()
    with mlflow_call(f"read the champion of {name}"):
        models = mlflow_client.search_registered_models(filter_string=f"name = '{name}'")
        if not models or CHAMPION not in mlflow_client.get_registered_model(name).aliases:
            return None
        mv = mlflow_client.get_model_version_by_alias(name, CHAMPION)
    return {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "tags": dict(mv.tags),
    }


def champion_metrics(model: str, dst: Path) -> Path | None:
    """Download the champion run's `metrics.json` to `dst` (a `.json` file path or a directory).

    Returns the file, or None when there is no champion yet.
    """
    champ = champion_version(model)
    if champ is None:
        return None
    dst = Path(dst)
    mlflow_client = client()
    run_id = champ["run_id"]
    with tempfile.TemporaryDirectory() as tmp, mlflow_call(f"download metrics.json of run {run_id}"):
        if not any(a.path == "metrics.json" for a in mlflow_client.list_artifacts(run_id)):
            raise DataError(
                f"champion version {champ['version']} of {champ['name']}: run {run_id} has no "
                "metrics.json artifact"
            )
        got = Path(mlflow_client.download_artifacts(run_id, "metrics.json", tmp))
        target = dst if dst.suffix == ".json" else dst / "metrics.json"
        copy_atomically(got, target)  # a reader of `dst` never sees half a file
    return target


def _version_row(mv: Any, aliases: dict[str, str]) -> dict[str, Any]:
    t = mv.tags
    return {
        "name": mv.name,
        "version": str(mv.version),
        "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version)),
        "gate": t.get("gate"),
        "gate_metric": t.get("gate_metric"),
        "test_f1": float(t["test_f1"]) if t.get("test_f1", "unknown") != "unknown" else None,
        "data_version": t.get("data_version"),
        "git_commit": t.get("git_commit"),
        "run_id": mv.run_id,
        "created": _iso(mv.creation_timestamp),
        "gate_reason": t.get("gate_reason"),
    }


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def _parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    if "@" in ref:
        n, alias = ref.rsplit("@", 1)
        return registered_name(n), alias, None
    if "/" in ref:
        n, version = ref.rsplit("/", 1)
        return registered_name(n), None, version
    raise UsageError(f"invalid model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")
