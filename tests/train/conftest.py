"""Training-env tests (run by `.venv-train/bin/pytest tests/train`): NeMo, torch, seqeval."""

from __future__ import annotations

import pytest

pytest.importorskip("nemo", reason="needs the training env (.venv-train)")

import json
import os
from pathlib import Path

from train_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
# Small slices of the real corpus: the tiny profile trains on them in seconds.
SLICE = {"tc3": {"train": 60, "dev": 20, "test": 20}, "ner3": {"train": 300, "dev": 60, "test": 60}}


@pytest.fixture(scope="session")
def data_slice(imported_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first lines of each split of the imported corpus (tc3 with its .ids, ner3 text + labels)."""
    out = tmp_path_factory.mktemp("slice") / "data"
    for sub, sizes in SLICE.items():
        (out / sub).mkdir(parents=True)
        for split, n in sizes.items():
            names = (
                [f"{split}.tsv", f"{split}.ids"]
                if sub == "tc3"
                else [f"text_{split}.txt", f"labels_{split}.txt"]
            )
            for name in names:
                src = imported_data / sub / name
                if src.exists():
                    lines = src.read_text(encoding="utf-8").splitlines()[:n]
                    (out / sub / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def mlflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocesses: a temp SQLite MLflow store with a local artifact root."""
    base = tmp_path_factory.mktemp("mlflow")
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{base}/mlflow.db",
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(base / "artifacts"),
        "NCBI_RETRAIN_PROJECT_DIR": str(ROOT),
    }


@pytest.fixture(scope="session")
def trained(
    train_python: Path, data_slice: Path, mlflow_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """Both models trained once per session with the tiny profile through the CLI (`--json`)."""
    runs = {}
    for task in ("classifier", "ner"):
        out = tmp_path_factory.mktemp(f"run-{task}") / "out"
        proc = run_cli(
            train_python,
            ["train", task, "--data", str(data_slice), "--out", str(out), "--profile", "tiny", "--json"],
            mlflow_env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        runs[task] = {"out": out, "result": result, "stderr": proc.stderr}
    return runs
