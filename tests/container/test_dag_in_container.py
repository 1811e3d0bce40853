"""A whole `ncbi_retrain` DAG run (tiny profile) whose training and evaluation run in the trainer image.

`airflow dags test` in a subprocess with its own AIRFLOW_HOME (SQLite), so this tier's Airflow config
never mixes with tests/dags' in-process one; the project is the same throwaway git + DVC repository
the DAG tests use. The registry is read from the host afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dag_helpers import commit_data, make_project

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_dag_run_trains_in_the_trainer_image(settings_env, imported_data: Path, tmp_path: Path, client):
    import mlflow
    from tasks.versioning import publish

    repo = tmp_path / "repo"
    make_project(imported_data, repo)
    store = tmp_path / "mlflow"
    env = {
        "NCBI_RETRAIN_PROJECT_DIR": str(repo),
        "NCBI_RETRAIN_DVC_REMOTE_URL": str(tmp_path / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "NCBI_RETRAIN_RETRY_DELAY_S": "1",
    }
    settings_env(**env)
    data_version = publish(repo)
    commit_data(repo, "data v1")

    home = tmp_path / "airflow"
    airflow_env = {
        **os.environ,
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def airflow(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "airflow"), *args], env=airflow_env, capture_output=True, text=True,
                              timeout=timeout, cwd=repo)  # fmt: skip

    assert airflow("db", "migrate", timeout=300).returncode == 0
    assert airflow("pools", "set", "gpu", "1", "training jobs", timeout=120).returncode == 0
    conf = json.dumps({"profile": "tiny", "models": "both"})
    proc = airflow("dags", "test", "ncbi_retrain", "-c", conf, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    image_id = client.images.get(os.environ["NCBI_RETRAIN_TRAINER_IMAGE"]).id
    registry = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    for name in ("ncbi-disease-classifier", "ncbi-disease-ner"):
        (version,) = registry.search_model_versions(f"name = '{name}'")
        run = registry.get_run(version.run_id)
        assert run.data.tags["image"] == image_id  # trained in the container, not the local venv
        assert version.tags["data_version"] == run.data.tags["data_version"] == data_version
        assert registry.get_registered_model(name).aliases.get("champion") == version.version
    assert client.containers.list(all=True, filters={"label": "ncbi-retrain.job"}) == []
