"""Data version of a data directory: data.dvc's md5 when DATA is the project's data/ dir (read with PyYAML
by `tasks.versioning.data_version`), else `NCBI_RETRAIN_DATA_VERSION` (set by the launchers), else None."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_version(data: Path) -> str | None:
    from tasks.settings import get_settings

    settings = get_settings()
    if Path(data).resolve() != settings.path(settings.data_dir).resolve():
        return os.environ.get("NCBI_RETRAIN_DATA_VERSION") or None
    try:
        from tasks.versioning import data_version
    except ImportError:  # a trainer image without the versioning module: unknown, never a wrong version
        return os.environ.get("NCBI_RETRAIN_DATA_VERSION") or None
    return data_version(settings.project_dir)
