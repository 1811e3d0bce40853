"""Crafted metrics files and a tiny pyfunc run, shared by the gate and registry tests.

The training issue produces the real thing (NeMo pyfunc wrapping a `.nemo`); these stand-ins follow
the same contracts (docs/architecture.md): the run logs `metrics.json` at the top level, a pyfunc named
`model` with a `.nemo` (a tar archive) among its artifacts, and the run tags set by `train`,
including `nemo_sha256`.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

# The classifier's behavioural sentences from tasks/behaviour.yaml, all predicted right.
_CASES = yaml.safe_load((Path(__file__).parents[1] / "tasks" / "behaviour.yaml").read_text())["classifier"]
BEHAVIOUR_OK = [
    {"text": c["text"], "expected": c["expected"], "predicted": c["expected"], "passed": True} for c in _CASES
]


def classifier_metrics(
    preds: list[int], gold: list[int], data_version: str = "d1", model: str = "cand", behaviour=None
) -> dict[str, Any]:
    """A metrics.json for the classifier whose numbers are computed from the items themselves."""
    from tasks.metrics import classifier_metrics as score

    scores = score(gold, preds)
    return {
        "schema": 1,
        "task": "classifier",
        "split": "test",
        "data_version": data_version,
        "model": model,
        "gate_metric": "macro_f1",
        "metrics": {k: scores[k] for k in ("macro_f1", "accuracy", "labels")},
        "items": [
            {"id": f"pmid{i}", "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, preds, strict=True))
        ],
        "behaviour": BEHAVIOUR_OK if behaviour is None else behaviour,
    }


def noisy_preds(gold: list[int], accuracy: float, seed: int) -> list[int]:
    """Predictions right with probability `accuracy`, else a different class."""
    rng = random.Random(seed)
    return [g if rng.random() < accuracy else (g + rng.choice([1, 2])) % 3 for g in gold]


def ner_metrics(counts: list[tuple[int, int, int]], data_version: str = "d1", model: str = "cand") -> dict:
    tp = sum(c[0] for c in counts)
    fp = sum(c[1] for c in counts)
    fn = sum(c[2] for c in counts)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {
        "schema": 1,
        "task": "ner",
        "split": "test",
        "data_version": data_version,
        "model": model,
        "gate_metric": "entity_f1",
        "metrics": {
            "entity_f1": f1,
            "entity_precision": tp / max(tp + fp, 1),
            "entity_recall": tp / max(tp + fn, 1),
        },
        "items": [{"id": str(i), "tp": a, "fp": b, "fn": c} for i, (a, b, c) in enumerate(counts)],
        "behaviour": [],
    }


def make_nemo(path: Path, payload: bytes = b"tiny") -> str:
    """A small tar archive standing in for a .nemo file; returns its sha256."""
    with tarfile.open(path, "w") as tf:
        for member, data in (("model_config.yaml", b"target: tiny\n"), ("model_weights.ckpt", payload)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_candidate(
    task: str = "classifier",
    metrics: dict | None = None,
    data_version: str = "d1",
    nemo: str = "ok",  # ok | corrupt (not a tar) | missing (no .nemo) | tampered (sha mismatch)
    experiment: str = "ncbi-tests",
    payload: bytes = b"tiny",
) -> str:
    """Log a run like `train` does (tags, metrics.json, pyfunc `model` with a .nemo); return its id."""
    import mlflow

    class TinyModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [0] * len(model_input)

    exp = mlflow.get_experiment_by_name(experiment)
    if exp:
        exp_id = exp.experiment_id
    else:
        # A SQLite store's default artifact root is ./mlruns under the CWD (the repo): keep it beside the DB.
        uri = mlflow.get_tracking_uri()
        local = uri.startswith("sqlite:///")
        where = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri() if local else None
        exp_id = mlflow.create_experiment(experiment, artifact_location=where)
    metrics = metrics or classifier_metrics([0, 1, 2], [0, 1, 2], data_version)
    with tempfile.TemporaryDirectory() as tmp:
        nemo_path = Path(tmp) / "model.nemo"
        sha = make_nemo(nemo_path, payload)
        if nemo == "corrupt":
            nemo_path.write_bytes(b"this is not a tar archive at all" * 20)
            sha = hashlib.sha256(nemo_path.read_bytes()).hexdigest()
        if nemo == "tampered":
            sha = "0" * 64
        artifacts = {} if nemo == "missing" else {"nemo": str(nemo_path)}
        if nemo == "missing":
            (Path(tmp) / "notes.txt").write_text("no nemo here")
            artifacts = {"notes": str(Path(tmp) / "notes.txt")}
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.set_tags(
                {
                    "data_version": data_version,
                    "git_commit": "abc1234",
                    "profile": "tiny",
                    "task": task,
                    "config_fingerprint": "fp-" + task,
                    "image": "local",
                    "dag_run_id": "manual__test",
                    "nemo_sha256": sha,
                }
            )
            mlflow.log_metric("test_f1", metrics["metrics"][metrics["gate_metric"]])
            mlflow.log_dict(metrics, "metrics.json")
            mlflow.pyfunc.log_model(
                name="model", python_model=TinyModel(), artifacts=artifacts, pip_requirements=["mlflow"]
            )
    return run.info.run_id


def use_store(uri: str, monkeypatch) -> str:
    """Point the registry and the fluent MLflow API at `uri` for one test; all undone afterwards.

    The registry's settings are patched (not the process-wide `get_settings()` cache) and MLflow's
    global URIs are restored by monkeypatch, so nothing leaks into other engineers' tests.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    import mlflow
    from tasks.registry import service
    from tasks.settings import Settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)  # mlflow.set_registry_uri exports it: restore it too
    monkeypatch.setenv("NCBI_RETRAIN_MLFLOW_TRACKING_URI", uri)
    settings = Settings()
    monkeypatch.setattr(service, "get_settings", lambda: settings)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


@pytest.fixture(scope="session", name="empty_sqlite_store")
def empty_sqlite_store_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database file to copy per test."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db
