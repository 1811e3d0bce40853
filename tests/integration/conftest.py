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
    from stack_helpers import publish_project

    from tasks.settings import get_settings

    yield publish_project(imported_data, tmp_path, monkeypatch.setenv)
    get_settings.cache_clear()


@pytest.fixture
def retrain_env(mlflow_server: MlflowServer, project: dict) -> dict[str, str]:
    """What the Airflow components need to run `ncbi_retrain` on `project` against `mlflow_server`."""
    from stack_helpers import retrain_environment

    if not (Path(__file__).resolve().parents[2] / ".venv-train" / "bin" / "ncbi-retrain").exists():
        pytest.skip("needs .venv-train (run `make setup`)")
    return retrain_environment(mlflow_server.url, project)
