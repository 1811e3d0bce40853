"""Where a DAG run keeps its files, and which code version it runs."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.settings import Settings, get_settings


def safe_name(text: str) -> str:
    """`text` as one path component (DAG run and task ids carry `:` and `+`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def run_dir(dag_run_id: str, settings: Settings | None = None) -> Path:
    """The run's work directory: `work_dir/<dag run id>`, the id made filesystem-safe."""
    settings = settings or get_settings()
    return settings.path(settings.work_dir) / safe_name(dag_run_id)


def code_version() -> str:
    """The git commit of the code that trains (the checkout this package is imported from), or
    `NCBI_RETRAIN_GIT_COMMIT`."""
    from tasks.provenance import git_commit

    return git_commit(Path(__file__).resolve().parents[2])
