"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME on SQLite, set before anything imports airflow.

`airflow_db` resets the metadata DB once per session and creates the `gpu` pool. `project` is a
throwaway project: a git + DVC repository whose `data/` is a small valid slice of the real corpus,
published to a local DVC remote, with its own MLflow SQLite store; the DAGs reach it through
`NCBI_RETRAIN_*` settings exactly as a deployment would.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from dag_helpers import commit_data, make_project

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

if "airflow" in sys.modules:  # pragma: no cover (config is read once, at airflow's import)
    raise RuntimeError("airflow was imported before tests/dags/conftest.py could point it at a test home")
_HOME = Path(tempfile.mkdtemp(prefix="ncbi-airflow-test-"))
atexit.register(shutil.rmtree, _HOME, True)  # ignore_errors
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "NCBI_RETRAIN_RETRY_DELAY_S": "1",  # dag.test waits out retry delays for real
    }
)
logging.getLogger("great_expectations").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Fresh metadata DB (once per session) with the `gpu` pool the training tasks use."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.resetdb()
    Pool.create_or_update_pool(
        "gpu", slots=1, description="training jobs (one GPU here)", include_deferred=False
    )
    return _HOME


@pytest.fixture(scope="session")
def project(imported_data: Path, tmp_path_factory: pytest.TempPathFactory, airflow_db: Path):
    """A git + DVC project with a published small data slice, wired through NCBI_RETRAIN_* settings."""
    from tasks.settings import get_settings
    from tasks.versioning import publish

    base = tmp_path_factory.mktemp("project")
    repo = base / "repo"
    make_project(imported_data, repo)
    env = {
        "NCBI_RETRAIN_PROJECT_DIR": str(repo),
        "NCBI_RETRAIN_DVC_REMOTE_URL": str(base / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(base / "mlartifacts"),
        "NCBI_RETRAIN_TRAIN_VENV": str(ROOT / ".venv-train"),
        "NCBI_RETRAIN_LAUNCHER": "local",
        # A fixed code version: the shared tree changes under the tests (other commits, +dirty).
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    }
    with mock.patch.dict(os.environ, env):
        get_settings.cache_clear()
        version = publish(repo)
        commit_data(repo, "data v1")
        yield {"repo": repo, "base": base, "data_version": version}
    get_settings.cache_clear()
    shutil.rmtree(base / "mlartifacts", ignore_errors=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db: Path):
    """The DAG folder parsed as Airflow's dag-processor and task runner do: with the folder (the bundle)
    on sys.path, so the DAG files import their shared `ncbi_common` package."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
