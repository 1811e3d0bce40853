"""Data version for a data directory: data.dvc's md5 when DATA is the project's data/ dir, else None."""

from __future__ import annotations

from pathlib import Path


def resolve_data_version(data: Path) -> str | None:
    from tasks.settings import get_settings

    settings = get_settings()
    if Path(data).resolve() != settings.path(settings.data_dir).resolve():
        return None
    try:
        from tasks.versioning import data_version
    except ImportError:  # versioning lands in another issue; no version is better than a wrong one
        return None
    try:
        return data_version(settings.project_dir)
    except Exception:  # no data.dvc yet, or unreadable: unknown version
        return None
