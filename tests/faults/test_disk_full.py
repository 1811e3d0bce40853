"""The disk filling up while `train` stores the model artifact (a small tmpfs as MLflow's artifact root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dag_helpers import small_slice
from fault_helpers import assert_history_replays, versions_of
from registry_helpers import (
    classifier_metrics,
    empty_sqlite_store_fixture,  # noqa: F401  (a fixture)
    log_candidate,
    noisy_preds,
    use_store,
)

from tasks import registry
from tasks.cli import run
from tasks.gates import decide

ROOT = Path(__file__).resolve().parents[2]
GOLD = [i % 3 for i in range(150)]
GOOD = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD)
ARTIFACT_ROOT_SIZE = "96k"  # holds metrics.json and the small files, not the tiny model's .nemo


@pytest.fixture
def small_artifact_root(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ARTIFACT_ROOT_SIZE mounted for this test (needs root; skipped where mounts are refused)."""
    mnt = tmp_path / "artifact-root"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={ARTIFACT_ROOT_SIZE}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({proc.stderr.strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_artifact_store_fails_train_and_nothing_partial_is_registered(
    small_artifact_root: Path,
    imported_data: Path,
    train_python: Path,
    empty_sqlite_store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_sqlite_store, db)
    uri = use_store(f"sqlite:///{db}", monkeypatch)
    name = "ncbi-disease-classifier"
    first = registry.register_run(
        name, log_candidate(metrics=GOOD, experiment="earlier"), decide("classifier", GOOD, None, "cpu")
    )
    registry.promote(name, first.version, "the champion before the fault", actor="alice")

    data = small_slice(imported_data, tmp_path / "data")
    out = tmp_path / "runs" / "classifier" / "try-1"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": uri,
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(small_artifact_root),
        "NCBI_RETRAIN_PROJECT_DIR": str(tmp_path),
    }
    argv = ["train", "classifier", "--data", str(data), "--out", str(out), "--profile", "tiny", "--json"]
    proc = subprocess.run(
        [str(train_python), "-m", "tasks.cli", *argv],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert last.startswith("error: MLflow artifact store ") and "No space left on device" in last, last
    assert "model.nemo" in last and "Traceback" not in proc.stderr
    assert not out.exists() and not list(out.parent.glob(".try-1.partial-*"))  # no half-written OUT

    from mlflow import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name(name).experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    failed = runs[0].info.run_id
    assert failed in last

    capsys.readouterr()
    assert run(["register", "classifier", "--run-id", failed]) == 2  # a retry, or a person, cannot
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run {failed} is FAILED, not FINISHED" in err
    assert versions_of(name) == {"1": first.run_id}
    assert registry.champion_version("classifier")["version"] == "1"
    moves = assert_history_replays(name)
    assert json.dumps(moves).count('"champion"') == 1
