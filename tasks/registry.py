"""The MLflow model registry: register, promote, rollback, list, history and lineage.

Conventions (docs/architecture.md): registered models `ncbi-disease-classifier` / `ncbi-disease-ner`;
version tags `data_version`, `git_commit`, `image`, `dag_run_id`, `config_fingerprint`, `gate`,
`gate_reason`, `test_f1`; aliases are the only promotion mechanism and every move is recorded on the
registered model as the tag `alias_history` (JSON list of {when, who, alias, from, to, why}; older
entries spill into `alias_history.0000`, `alias_history.0001`, ... because a registered-model tag holds
at most 5000 characters on SQL stores).

Alias rules:
- `challenger` marks the latest registered candidate, whatever its gate said (so a failed candidate
  is visible and comparable); it is set after the version exists with all its tags.
- `champion` moves only through `promote` / `rollback`: never onto a version whose gate failed unless
  forced by hand (`force=True`, recorded), and never onto a version whose `.nemo` is missing or corrupt.
- Assigning `champion` drops `challenger` from that version.

Registration is idempotent: a run has at most one version. Two processes that race both create a
version, then each keeps the lowest version of the run and deletes its own if it is not that one, so
both return the same version and the duplicate never gets an alias.
"""

from __future__ import annotations

import getpass
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.errors import DataError, GateFailed, ServiceError, UsageError
from tasks.files import copy_atomically
from tasks.settings import get_settings
from tasks.vocab import MODELS, Alias, Model

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from tasks.vocab import GateDecision as Decision

CHAMPION, CHALLENGER = Alias.champion.value, Alias.challenger.value
HISTORY_TAG = "alias_history"
HISTORY_PAGE_CHARS = 4500  # registered-model tag values are VARCHAR(5000) on SQL stores
LINEAGE_RUN_TAGS = (
    "data_version",
    "git_commit",
    "image",
    "dag_run_id",
    "config_fingerprint",
    "profile",
    "task",
)
# Bounded retries: an unreachable server must fail in seconds, not after MLflow's ~4 minutes of retries.
# The user's own settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


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


# ------------------------------------------------------------------------------------------- plumbing
def registered_name(model: str) -> str:
    """`classifier` / `ner` -> the registered model name; any other string is taken as a full name."""
    if model in MODELS:
        return Model(model).registered_name
    if not model or "'" in model or "@" in model:
        raise UsageError(f"invalid registered model name {model!r}")
    return model


def tracking_uri() -> str:
    """The configured store; a relative SQLite path is taken relative to the project directory."""
    uri = get_settings().tracking_uri()
    if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _client() -> MlflowClient:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    # models:/ artifact URIs resolve through the global registry URI, so set both globally.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    markers = (
        "Max retries exceeded",
        "ConnectionError",
        "Connection refused",
        "timed out",
        "Connection aborted",
    )
    return any(m in text for m in markers) or type(exc).__name__ in ("OperationalError", "ConnectionError")


@contextmanager
def _service(action: str) -> Iterator[None]:
    """Turn MLflow / HTTP / DB exceptions into one-sentence ServiceError / UsageError."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (DataError, UsageError, GateFailed, ServiceError):
        raise
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise UsageError(f"{action}: {_first_line(exc.message)}") from exc
        if exc.error_code == "INVALID_PARAMETER_VALUE" and not _unreachable(exc):
            raise UsageError(f"{action}: {_first_line(exc.message)}") from exc
        if _unreachable(exc):
            raise ServiceError(
                f"MLflow at {tracking_uri()} is unreachable while trying to {action}: start the server "
                "or point MLFLOW_TRACKING_URI at it"
            ) from exc
        raise ServiceError(f"MLflow refused to {action}: {_first_line(exc.message)}") from exc
    except Exception as exc:
        if _unreachable(exc):
            raise ServiceError(
                f"MLflow at {tracking_uri()} is unreachable while trying to {action}: start the server "
                "or point MLFLOW_TRACKING_URI at it"
            ) from exc
        raise


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else "unknown error"


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    if env := os.environ.get("NCBI_RETRAIN_ACTOR"):
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------- alias history
def _history_from_tags(tags: dict[str, str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for key in sorted(k for k in tags if k.startswith(HISTORY_TAG + ".")):
        entries += json.loads(tags[key])
    return entries + json.loads(tags.get(HISTORY_TAG) or "[]")


def _record(client: MlflowClient, name: str, entry: dict[str, Any]) -> None:
    """Append one alias move to the registered model's history (spilling full pages to numbered tags)."""
    tags = client.get_registered_model(name).tags
    page = json.loads(tags.get(HISTORY_TAG) or "[]")
    if page and all(page[-1].get(k) == entry.get(k) for k in ("alias", "from", "to", "why")):
        return  # the same move recorded by a concurrent or retried call
    page.append(entry)
    if len(json.dumps(page)) > HISTORY_PAGE_CHARS and len(page) > 1:
        n = sum(1 for k in tags if k.startswith(HISTORY_TAG + "."))
        # Archive first: a crash in between duplicates entries, never loses them.
        client.set_registered_model_tag(name, f"{HISTORY_TAG}.{n:04d}", json.dumps(page[:-1]))
        page = page[-1:]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(page))


def _move_alias(
    client: MlflowClient, name: str, alias: str, version: str | None, why: str, who: str
) -> dict[str, Any] | None:
    """Point `alias` at `version` (None deletes it) and record the move; None when nothing moved."""
    current = client.get_registered_model(name).aliases.get(alias)
    current = str(current) if current is not None else None
    if current == version:
        return None
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)
    entry = {"when": _now(), "who": who, "alias": alias, "from": current, "to": version, "why": why[:500]}
    _record(client, name, entry)
    return entry


# ------------------------------------------------------------------------------------------- register
def _decision_dict(decision: Decision | dict | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return decision if isinstance(decision, dict) else decision.to_dict()


def _logged_model_source(client: MlflowClient, run: Any) -> tuple[str, str | None]:
    """(source URI, model_id) of the run's pyfunc: the logged model `model`, else runs:/ID/model."""
    run_id = run.info.run_id
    found = [
        m
        for m in client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string="name = 'model'"
        )
        if m.source_run_id == run_id
    ]
    if not found:
        found = [
            m
            for m in client.search_logged_models(experiment_ids=[run.info.experiment_id])
            if m.source_run_id == run_id
        ]
    if len(found) >= 1:
        latest = max(found, key=lambda m: m.creation_timestamp or 0)
        return f"models:/{latest.model_id}", latest.model_id
    if any(a.path == "model" for a in client.list_artifacts(run_id)):
        return f"{run.info.artifact_uri}/model", None
    raise UsageError(f"run {run_id} has no logged model named 'model': log the pyfunc with name='model'")


def _versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[Any]:
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return sorted(versions, key=lambda v: int(v.version))


def _delete_quietly(client: MlflowClient, name: str, version: str) -> None:
    """Delete a duplicate version; another racing call may have deleted it already."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def _has_held(client: MlflowClient, name: str, alias: str, version: str) -> bool:
    tags = client.get_registered_model(name).tags
    return any(e.get("alias") == alias and e.get("to") == version for e in _history_from_tags(tags))


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
    client = _client()
    who = _actor(None)
    with _service(f"find run {run_id}"):
        run = client.get_run(run_id)
    with _service(f"register run {run_id} as {name}"):
        version_tags = _version_tags(run, dec, tags)
        if dec is not None:
            # Keep the full decision beside the run so `lineage` can show every check later.
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "decision.json").write_text(json.dumps(dec, indent=2))
                client.log_artifact(run_id, str(Path(tmp) / "decision.json"), artifact_path="gate")
        existing = _versions_of_run(client, name, run_id)
        created = False
        if existing:
            mine = existing[0]
            held = {str(v) for v in client.get_registered_model(name).aliases.values()}
            for dup in existing[1:]:  # left by a racing call that died before cleaning up
                if str(dup.version) not in held:
                    _delete_quietly(client, name, str(dup.version))
        else:
            source, model_id = _logged_model_source(client, run)
            try:
                client.create_registered_model(
                    name,
                    tags={HISTORY_TAG: "[]"},
                    description="NCBI disease model; aliases champion / challenger (see alias_history).",
                )
            except Exception as exc:  # an existing model is the normal case
                if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            mv = client.create_model_version(
                name, source, run_id=run_id, tags=version_tags, model_id=model_id, await_creation_for=60
            )
            # A concurrent call may have created one too: the lowest version of the run wins.
            everyone = _versions_of_run(client, name, run_id)
            mine = everyone[0]
            if str(mine.version) != str(mv.version):
                _delete_quietly(client, name, str(mv.version))
            else:
                created = True
        version = str(mine.version)
        if created or not _has_held(client, name, CHALLENGER, version):
            why = f"registered run {run_id}; gate {version_tags['gate']}: {version_tags['gate_reason']}"
            _move_alias(client, name, CHALLENGER, version, why, who)
        mv = client.get_model_version(name, version)
        return RegisteredVersion(
            name=name,
            version=version,
            run_id=run_id,
            source=mv.source,
            created=created,
            aliases=list(mv.aliases),
            tags=dict(mv.tags),
        )


# ----------------------------------------------------------------------------------- artifact checks
def _find_nemo(uri: str, depth: int = 3) -> str | None:
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


def verify_nemo(name_or_model: str, version: str | int) -> dict[str, Any]:
    """Check that the version's `.nemo` exists, is a readable tar, and matches `nemo_sha256` when recorded.

    Raises DataError otherwise; returns {path, sha256, expected_sha256, members}.
    """
    from mlflow.artifacts import download_artifacts

    from tasks.provenance import sha256_file

    name, version = registered_name(name_or_model), str(version)
    client = _client()
    with _service(f"read version {version} of {name}"):
        mv = client.get_model_version(name, version)
        uri = f"models:/{name}/{version}"
        rel = _find_nemo(uri)
        if rel is None:
            raise DataError(
                f"version {version} of {name} has no .nemo artifact in {mv.source}: it cannot be promoted"
            )
        expected = mv.tags.get("nemo_sha256")
        if not expected and mv.run_id:
            run = client.get_run(mv.run_id)
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


# ---------------------------------------------------------------------------------- promote/rollback
def _set_champion(
    client: MlflowClient, name: str, version: str, why: str, who: str, force: bool, action: str
) -> dict[str, Any]:
    if not why or not why.strip():
        raise UsageError(f"{action} needs a reason (--reason TEXT): every alias move is recorded with one")
    with _service(f"read version {version} of {name}"):
        mv = client.get_model_version(name, version)
    gate = mv.tags.get("gate", "none")
    if gate == "failed" and not force:
        raise GateFailed(
            f"version {version} of {name} failed its gate "
            f"({mv.tags.get('gate_reason', 'no reason recorded').rstrip('.')}): "
            "champion never moves onto a failed gate unless forced by hand (--force)"
        )
    nemo = verify_nemo(name, version)
    with _service(f"move {CHAMPION} of {name} to version {version}"):
        note = f"{action}: {why.strip()}" + (" (forced over a failed gate)" if gate == "failed" else "")
        previous = client.get_registered_model(name).aliases.get(CHAMPION)
        entry = _move_alias(client, name, CHAMPION, version, note, who)
        aliases = client.get_registered_model(name).aliases
        if str(aliases.get(CHALLENGER, "")) == version:
            _move_alias(client, name, CHALLENGER, None, f"version {version} became {CHAMPION}", who)
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


def promote(
    name_or_model: str, version: str | int, reason: str, actor: str | None = None, *, force: bool = False
) -> dict:
    """Move `champion` to `version` (by hand or after a passed gate); the move is recorded.

    Refuses a version whose gate failed (unless `force`) and one whose `.nemo` is missing or corrupt.
    """
    name = registered_name(name_or_model)
    return _set_champion(_client(), name, str(version), reason, _actor(actor), force, "promote")


def rollback(
    name: str, to: str | int | None, reason: str, actor: str | None = None, *, force: bool = False
) -> dict:
    """Move `champion` back to `to`, by default to the champion before the current one."""
    name = registered_name(name)
    client = _client()
    with _service(f"read the registered model {name}"):
        rm = client.get_registered_model(name)
    current = rm.aliases.get(CHAMPION)
    if to is None:
        if current is None:
            raise UsageError(f"{name} has no champion to roll back from")
        moves = [e for e in _history_from_tags(rm.tags) if e.get("alias") == CHAMPION]
        last = next((e for e in reversed(moves) if e.get("to") == str(current)), None)
        if last is None or last.get("from") is None:
            raise UsageError(
                f"{name} has no champion before version {current} to roll back to (pass --to VERSION)"
            )
        to = last["from"]
    return _set_champion(client, name, str(to), reason, _actor(actor), force, "rollback")


# ---------------------------------------------------------------------------------------- read views
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
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        "gate_reason": t.get("gate_reason"),
    }


def list_versions(name: str | None = None) -> list[dict]:
    """Every version (of `name`, or of every registered model) with aliases, gate, metric, data version."""
    client = _client()
    rows: list[dict] = []
    with _service("list registered models"):
        names = [registered_name(name)] if name else sorted(m.name for m in client.search_registered_models())
        for n in names:
            rm = client.get_registered_model(n)
            aliases = {a: str(v) for a, v in rm.aliases.items()}
            versions = client.search_model_versions(f"name = '{n}'")
            rows += [_version_row(mv, aliases) for mv in sorted(versions, key=lambda v: int(v.version))]
    return rows


def history(name: str) -> list[dict]:
    """Every recorded alias move of `name`, oldest first."""
    name = registered_name(name)
    client = _client()
    with _service(f"read the registered model {name}"):
        return _history_from_tags(client.get_registered_model(name).tags)


def _parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    if "@" in ref:
        n, alias = ref.rsplit("@", 1)
        return registered_name(n), alias, None
    if "/" in ref:
        n, version = ref.rsplit("/", 1)
        return registered_name(n), None, version
    raise UsageError(f"invalid model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION")


def lineage(ref: str) -> dict:
    """The chain behind `NAME@ALIAS` (or `NAME/VERSION`): data -> git commit -> image -> run -> gate."""
    name, alias, version = _parse_ref(ref)
    client = _client()
    with _service(f"resolve {ref}"):
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
        t = mv.tags
        run = client.get_run(mv.run_id) if mv.run_id else None
        decision = None
        if run is not None and any(
            a.path == "gate/decision.json" for a in client.list_artifacts(mv.run_id, "gate")
        ):
            with tempfile.TemporaryDirectory() as tmp:
                path = client.download_artifacts(mv.run_id, "gate/decision.json", tmp)
                decision = json.loads(Path(path).read_text())
        moves = [
            e
            for e in _history_from_tags(client.get_registered_model(name).tags)
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
            "started": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
            if run and run.info.start_time
            else None,
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
    client = _client()
    with _service(f"read the champion of {name}"):
        models = client.search_registered_models(filter_string=f"name = '{name}'")
        if not models or CHAMPION not in client.get_registered_model(name).aliases:
            return None
        mv = client.get_model_version_by_alias(name, CHAMPION)
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
    client = _client()
    with tempfile.TemporaryDirectory() as tmp, _service(f"download metrics.json of run {champ['run_id']}"):
        if not any(a.path == "metrics.json" for a in client.list_artifacts(champ["run_id"])):
            raise DataError(
                f"champion version {champ['version']} of {champ['name']}: run {champ['run_id']} has no "
                "metrics.json artifact"
            )
        got = Path(client.download_artifacts(champ["run_id"], "metrics.json", tmp))
        target = dst if dst.suffix == ".json" else dst / "metrics.json"
        copy_atomically(got, target)
    return target
