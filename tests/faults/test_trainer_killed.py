"""The trainer SIGKILLed mid-epoch (OOM killer, lost node): the retry resumes, one version.

What the DAG's training operator runs, try by try: the job spec of `tasks.pipeline.jobs.train_job` as
the BashOperator's script (`bash_script(job, try_number, venv)`, which `exec`s the training env's CLI).
Try 1 is SIGKILLed a third into its second epoch; try 2 (Airflow's retry: same job, next try number)
must resume from try 1's last complete checkpoint and say so, keep the whole dev history, and produce
the one MLflow run that is registered; registering it twice (a retried `register` task) gives one
version, and try 1's killed run is never registered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from registry_helpers import empty_sqlite_store_fixture, use_store  # noqa: F401  (a fixture)

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("NCBI_RETRAIN_TRAIN_VENV", ROOT / ".venv-train"))
EPOCHS = 3
DAG_RUN = "manual__2026-12-02T00:00:00+00:00"


@pytest.fixture
def project(tmp_path: Path, empty_sqlite_store: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A work dir and an MLflow SQLite store of this test, wired as a deployment's settings."""
    import shutil

    from tasks.settings import get_settings

    if not (VENV / "bin" / "ncbi-retrain").exists():
        pytest.skip(f"needs the training env at {VENV}")
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_sqlite_store, db)
    uri = use_store(f"sqlite:///{db}", monkeypatch)
    for key, value in {
        "NCBI_RETRAIN_PROJECT_DIR": str(tmp_path),
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "NCBI_RETRAIN_LAUNCHER": "local",
        "NCBI_RETRAIN_TRAIN_VENV": str(VENV),
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "PYTHONPATH": str(ROOT),  # this checkout's `tasks` in the training env too
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield {"uri": uri, "base": tmp_path}
    get_settings.cache_clear()


def progress(folder: Path) -> dict:
    try:
        return json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def test_trainer_killed_mid_epoch_resumes_on_retry_and_registers_one_version(
    project: dict, imported_data: Path
) -> None:
    from mlflow import MlflowClient
    from tasks import registry
    from tasks.gates import decide, load_metrics
    from tasks.pipeline import steps
    from tasks.pipeline.jobs import bash_script, train_job
    from tasks.settings import get_settings
    from tasks.vocab import DataRef, Plan, RunParams

    settings = get_settings()
    data = DataRef(data_dir=str(imported_data), data_version="f" * 32 + ".dir")
    options = RunParams.from_params({"profile": "tiny", "epochs": EPOCHS, "models": "ner"})
    job = train_job("ner", options, data, DAG_RUN, "0123456789abcdef", settings)
    ckpt = Path(job.argv[job.argv.index("--checkpoints") + 1])
    env = {**os.environ, **job.env}

    # Try 1, killed a third into epoch 2 (after one complete checkpoint).
    log1 = project["base"] / "try-1.log"
    with open(log1, "w") as err:
        proc = subprocess.Popen(
            ["bash", "-c", bash_script(job, 1, VENV)], stdout=subprocess.PIPE, stderr=err, env=env
        )
        deadline, killed_at = time.monotonic() + 600, None
        while proc.poll() is None and time.monotonic() < deadline:
            p = progress(ckpt)
            if p.get("stage") == "train" and p.get("epoch", 0) >= 2 and p.get("steps"):
                per_epoch = p["steps"] // p["epochs"]
                if p["step"] - per_epoch * (p["epoch"] - 1) >= per_epoch // 3:
                    trainer = psutil.Process(proc.pid).children()  # bash's child: the trainer itself
                    assert len(trainer) == 1 and "train" in trainer[0].cmdline(), trainer
                    trainer[0].send_signal(signal.SIGKILL)  # as the OOM killer would
                    killed_at = p
                    break
            time.sleep(0.02)
        proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGKILL and killed_at, log1.read_text()[-3000:]
    assert (ckpt / "epoch-001.ckpt.json").is_file() and not Path(job.try_dir(1)).exists()
    killed_run = json.loads((ckpt / "epoch-001.ckpt.json").read_text())["run_id"]

    # Try 2: the same job, the next try number: it resumes and says from which epoch.
    proc = subprocess.run(
        ["bash", "-c", bash_script(job, 2, VENV)], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from epoch 1 of {EPOCHS} (checkpoint {ckpt / 'epoch-001.ckpt'})" in proc.stderr
    plan = Plan(model="ner", train=True, reason="test", config_fingerprint="x", git_commit="y", job=job)
    trained = steps.train_result(plan, proc.stdout)
    history = json.loads((Path(job.try_dir(2)) / "dev_history.json").read_text())
    assert [r["epoch"] for r in history["history"]] == list(range(1, EPOCHS + 1))
    assert history["resumed_from_epoch"] == 1

    # One MLflow run holds the model, linked to the killed one; registered once, however often asked.
    client = MlflowClient(project["uri"])
    tags = client.get_run(trained.run_id).data.tags
    assert tags["resumed_from_run_id"] == tags["first_run_id"] == killed_run != trained.run_id
    decision = decide("ner", load_metrics(Path(trained.metrics_file)), None, "tiny")
    first = registry.register_run("ner", trained.run_id, decision, {"dag_run_id": DAG_RUN})
    again = registry.register_run("ner", trained.run_id, decision, {"dag_run_id": DAG_RUN})
    versions = client.search_model_versions("name='ncbi-disease-ner'")
    assert [str(v.version) for v in versions] == [str(first.version)] == [str(again.version)]
    assert versions[0].run_id == trained.run_id
    assert not list(ckpt.glob("*.ckpt"))  # the finished run removed its checkpoints
