"""Shared fixtures. Loaded by both environments' pytest runs: no heavy import at module level."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from servers import mlflow_server, postgres  # noqa: F401  (fixtures: PostgreSQL, MLflow on 127.0.0.1)

ROOT = Path(__file__).resolve().parents[1]

# Offline, quiet, bounded: set before any test imports transformers, DVC or MLflow.
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "TOKENIZERS_PARALLELISM": "false",
    "GIT_PYTHON_REFRESH": "quiet",
}.items():
    os.environ.setdefault(key, value)


def shared_data_dir() -> Path:
    """The staged NCBI release + MeSH (`NCBI_SHARED_DATA`, default ../shared/data beside the repo)."""
    return Path(os.environ.get("NCBI_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "ncbi_disease" / "original" / "NCBItrainset_corpus.txt").is_file():
        pytest.skip(f"staged corpus not found at {path} (set NCBI_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def imported_data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared release imported once per session (read-only for tests: copy before changing)."""
    from tasks.datasets import import_corpus

    out = tmp_path_factory.mktemp("imported") / "data"
    import_corpus(
        pubtator=str(shared_data / "ncbi_disease" / "original"),
        iob=str(shared_data / "ncbi_disease" / "iob"),
        mesh=str(shared_data / "mesh" / "2017MeshTree.txt"),
        out=out,
    )
    return out


@pytest.fixture
def data_copy(imported_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the imported corpus."""
    dst = tmp_path / "data"
    shutil.copytree(imported_data, dst)
    return dst


@pytest.fixture(scope="session")
def train_python() -> Path:
    """The training env's interpreter (the CLI there runs NeMo)."""
    path = Path(os.environ.get("NCBI_RETRAIN_TRAIN_VENV", ROOT / ".venv-train")) / "bin" / "python"
    if not path.exists():
        pytest.skip(f"training env not found at {path} (run `make setup`)")
    return path


@pytest.fixture(scope="session")
def cli_orch() -> list[str]:
    """Command prefix for the CLI in the running (usually orchestration) interpreter."""
    return [sys.executable, "-m", "tasks.cli"]
