"""Helpers shared by the training-env tests (imported as a plain module: tests/ is not a package)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    train_python: Path, args: list[str], env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess:
    """`ncbi-retrain ARGS` in the training env, in a fresh process."""
    return subprocess.run(
        [str(train_python), "-m", "tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
