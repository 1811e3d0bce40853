"""Moving `champion`: `promote`, `rollback`, and the `.nemo` check a version must pass first.

`champion` never moves onto a version whose gate failed unless forced by hand (`force=True`, recorded),
and never onto a version whose `.nemo` is missing, not a readable tar, or differs from `nemo_sha256`.
Assigning `champion` drops `challenger` from that version.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import DataError, GateFailed, UsageError
from tasks.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    actor_name,
    alias_lock,
    history_from_tags,
    move_alias,
)
from tasks.registry.service import client, mlflow_call, registered_name

if TYPE_CHECKING:
    from mlflow import MlflowClient


def verify_nemo(name_or_model: str, version: str | int) -> dict[str, Any]:
    """Check that the version's `.nemo` exists, is a readable tar, and matches `nemo_sha256` when recorded.

    Raises DataError otherwise; returns {path, sha256, expected_sha256, members}.
    """
    from mlflow.artifacts import download_artifacts

    from tasks.provenance import sha256_file

    name, version = registered_name(name_or_model), str(version)
    mlflow_client = client()
    with mlflow_call(f"read version {version} of {name}"):
        mv = mlflow_client.get_model_version(name, version)
        uri = f"models:/{name}/{version}"
        rel = _find_nemo(uri)
        if rel is None:
            raise DataError(
                f"version {version} of {name} has no .nemo artifact in {mv.source}: it cannot be promoted"
            )
        expected = mv.tags.get("nemo_sha256")
        if not expected and mv.run_id:
            run = mlflow_client.get_run(mv.run_id)
            expected = run.data.tags.get("nemo_sha256") or run.data.params.get("nemo_sha256")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(download_artifacts(artifact_uri=f"{uri}/{rel}", dst_path=tmp))
            try:
                with tarfile.open(local) as tf:
                    members = len(tf.getmembers())
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(
                    f"version {version} of {name}: {rel} is corrupt (not a readable tar archive: {exc}): "
                    "it cannot be promoted"
                ) from exc
            digest = sha256_file(local)
        if expected and digest != expected:
            raise DataError(
                f"version {version} of {name}: {rel} is corrupt (sha256 {digest[:12]}... differs from the "
                f"recorded nemo_sha256 {expected[:12]}...): it cannot be promoted"
            )
    return {"path": rel, "sha256": digest, "expected_sha256": expected, "members": members}


def promote(
    name_or_model: str, version: str | int, reason: str, actor: str | None = None, *, force: bool = False
) -> dict:
    """Move `champion` to `version` (by hand or after a passed gate); the move is recorded.

    Refuses a version whose gate failed (unless `force`) and one whose `.nemo` is missing or corrupt.
    """
    name = registered_name(name_or_model)
    return _set_champion(client(), name, str(version), reason, actor_name(actor), force, "promote")


def rollback(
    name: str, to: str | int | None, reason: str, actor: str | None = None, *, force: bool = False
) -> dict:
    """Move `champion` back to `to`, by default to the champion before the current one."""
    name = registered_name(name)
    mlflow_client = client()
    with mlflow_call(f"read the registered model {name}"):
        rm = mlflow_client.get_registered_model(name)
    current = rm.aliases.get(CHAMPION)
    if to is None:
        if current is None:
            raise UsageError(f"{name} has no champion to roll back from")
        moves = [e for e in history_from_tags(rm.tags) if e.get("alias") == CHAMPION]
        last = next((e for e in reversed(moves) if e.get("to") == str(current)), None)
        if last is None or last.get("from") is None:
            raise UsageError(
                f"{name} has no champion before version {current} to roll back to (pass --to VERSION)"
            )
        to = last["from"]
    return _set_champion(mlflow_client, name, str(to), reason, actor_name(actor), force, "rollback")


APPROVAL_TAGS = ("approval", "approval_by", "approval_reason", "approval_at")


def record_approval(
    name_or_model: str, version: str | int, outcome: str, by: str | None, reason: str | None, at: str | None
) -> dict[str, str]:
    """Tag the version with a person's answer to its approval request (promote=approve): `approval`
    (approved / rejected / timed_out), `approval_by`, `approval_reason`, `approval_at`."""
    name, version = registered_name(name_or_model), str(version)
    values = [outcome, by or "", (reason or "")[:1000], at or ""]
    tags = dict(zip(APPROVAL_TAGS, values, strict=True))
    mlflow_client = client()
    with mlflow_call(f"tag version {version} of {name} with its approval"):
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
    return tags


def _find_nemo(uri: str, depth: int = 3) -> str | None:
    """The path of the first `.nemo` file within `depth` folder levels of the artifact `uri`."""
    from mlflow.artifacts import list_artifacts

    stack = [("", 0)]
    while stack:
        sub, level = stack.pop()
        for art in list_artifacts(artifact_uri=f"{uri}/{sub}" if sub else uri):
            rel = art.path.rsplit("/", 1)[-1]
            path = f"{sub}/{rel}" if sub else rel
            if not art.is_dir and rel.endswith(".nemo"):
                return path
            if art.is_dir and level < depth:
                stack.append((path, level + 1))
    return None


def _set_champion(
    mlflow_client: MlflowClient, name: str, version: str, why: str, who: str, force: bool, action: str
) -> dict[str, Any]:
    if not why or not why.strip():
        raise UsageError(f"{action} needs a reason (--reason TEXT): every alias move is recorded with one")
    with mlflow_call(f"read version {version} of {name}"):
        mv = mlflow_client.get_model_version(name, version)
    gate = mv.tags.get("gate", "none")
    if gate == "failed" and not force:
        raise GateFailed(
            f"version {version} of {name} failed its gate "
            f"({mv.tags.get('gate_reason', 'no reason recorded').rstrip('.')}): "
            "champion never moves onto a failed gate unless forced by hand (--force)"
        )
    nemo = verify_nemo(name, version)
    with (
        mlflow_call(f"move {CHAMPION} of {name} to version {version}"),
        alias_lock(mlflow_client, name),  # a racing promote / rollback waits: `from` is what this one moved
    ):
        note = f"{action}: {why.strip()}" + (" (forced over a failed gate)" if gate == "failed" else "")
        previous = mlflow_client.get_registered_model(name).aliases.get(CHAMPION)
        entry = move_alias(mlflow_client, name, CHAMPION, version, note, who)
        aliases = mlflow_client.get_registered_model(name).aliases
        if str(aliases.get(CHALLENGER, "")) == version:
            move_alias(mlflow_client, name, CHALLENGER, None, f"version {version} became {CHAMPION}", who)
    return {
        "name": name,
        "version": version,
        "alias": CHAMPION,
        "from": str(previous) if previous is not None else None,
        "moved": entry is not None,
        "gate": gate,
        "forced": gate == "failed",
        "who": who,
        "why": why.strip(),
        "nemo": nemo,
    }
