"""The trainer stopped with SIGTERM in the middle of an epoch: what Airflow's `on_kill` sends the job's
process group when its try is reset (a scheduler restart), times out or is marked failed, and what
`docker stop` or a deleted pod send. The job must unwind, not vanish: exit 143 with one sentence, its
MLflow run FAILED (not RUNNING forever), no output folder and no partial one, nothing registrable."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dag_helpers import small_slice
from registry_helpers import empty_sqlite_store_fixture, use_store  # noqa: F401  (a fixture)

from tasks.cli import run

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"epoch 1/3 step \d+/")  # the first epoch of three is under way
DEADLINE_S = 600  # bounds a hung job; no performance assertion


def test_sigterm_mid_epoch_ends_the_run_failed_and_leaves_nothing(
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
    data = small_slice(imported_data, tmp_path / "data")
    out = tmp_path / "runs" / "classifier" / "try-1"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": uri,
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "NCBI_RETRAIN_PROJECT_DIR": str(tmp_path),
    }
    argv = ["train", "classifier", "--data", str(data), "--out", str(out), "--profile", "tiny", "--json"]
    argv += ["trainer.max_epochs=3", "trainer.log_every_n_steps=1"]
    # Its own session, as the BashOperator starts a job: the signal goes to the job's whole group.
    proc = subprocess.Popen(
        [str(train_python), "-m", "tasks.cli", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    end = time.monotonic() + DEADLINE_S
    try:
        while not any(PROGRESS.search(line) for line in seen[-1:]):
            line = lines.get(timeout=max(1.0, end - time.monotonic()))
            assert line is not None, f"train ended before its first epoch: {''.join(seen)[-3000:]}"
            seen.append(line)
        os.killpg(proc.pid, signal.SIGTERM)
        # Not communicate(): it would read stderr too, racing the pump for the last lines. Stdout holds at
        # most one JSON line, far below a pipe's buffer, so waiting before reading it cannot block.
        proc.wait(timeout=DEADLINE_S)
        stdout = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    while (line := lines.get(timeout=30)) is not None:
        seen.append(line)
    stderr = "".join(seen)

    # A clear end: exit 143 (128 + SIGTERM), one closing sentence, no --json result on stdout.
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "error: stopped by SIGTERM before it finished", stderr[-3000:]
    assert stdout.strip() == ""
    # Nothing half-written: no OUT, no staging folder.
    assert not out.exists() and not list(out.parent.glob(".try-1.partial-*"))

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = "ncbi-disease-classifier"
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]  # not RUNNING forever

    capsys.readouterr()
    assert run(["register", "classifier", "--run-id", runs[0].info.run_id]) == 2  # nothing registrable
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is FAILED, not FINISHED" in err, err
    assert client.search_model_versions(f"name='{name}'") == []
