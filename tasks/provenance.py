"""Code version and small provenance helpers shared by both environments (no heavy imports)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def git_commit(repo: Path | None = None) -> str:
    """The checked-out commit (`+dirty` when the tree has changes), or `NCBI_RETRAIN_GIT_COMMIT`.

    Containers have no `.git`; the launcher passes the commit in the environment instead.
    """
    if env := os.environ.get("NCBI_RETRAIN_GIT_COMMIT"):
        return env
    try:
        cwd = repo or Path.cwd()
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sha256_file(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
