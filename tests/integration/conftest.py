"""Integration tier: real servers on 127.0.0.1. The `postgres` and `mlflow_server` fixtures (and the
helpers below) live in tests/servers.py, shared with the fault tier; tests/conftest.py registers them.

- `project`: a git + DVC project with a published slice of the corpus; `retrain_env`: the variables that
  point Airflow's components at it and at `mlflow_server` (the DAG runs' tests). The components
  themselves are started by tests/stack_helpers.py (shared with the fault tier).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import (  # noqa: F401  (helpers the integration tests import from here)
    MlflowProcess,
    MlflowServer,
    PostgresCluster,
    free_port,
    stop_process_group,
    wait_http,
)


@pytest.fixture
def project(imported_data, tmp_path, monkeypatch):
    """A git + DVC project with a published data slice (the stack's NCBI_RETRAIN_PROJECT_DIR)."""
    from dag_helpers import commit_data, make_project

    from tasks.settings import get_settings
    from tasks.versioning import publish

    repo = tmp_path / "repo"
    make_project(imported_data, repo)
    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(repo))
    monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(tmp_path / "dvc-remote"))
    get_settings.cache_clear()
    version = publish(repo)
    commit_data(repo, "data v1")
    yield {"repo": repo, "remote": tmp_path / "dvc-remote", "data_version": version}
    get_settings.cache_clear()


@pytest.fixture
def retrain_env(mlflow_server: MlflowServer, project: dict) -> dict[str, str]:
    """What the Airflow components need to run `ncbi_retrain` on `project` against `mlflow_server`."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".venv-train" / "bin" / "ncbi-retrain").exists():
        pytest.skip("needs .venv-train (run `make setup`)")
    return {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "NCBI_RETRAIN_PROJECT_DIR": str(project["repo"]),
        "NCBI_RETRAIN_DVC_REMOTE_URL": str(project["remote"]),
        "NCBI_RETRAIN_TRAIN_VENV": str(root / ".venv-train"),
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "NCBI_RETRAIN_SCHEDULE": "none",  # only the REST-triggered run
    }
