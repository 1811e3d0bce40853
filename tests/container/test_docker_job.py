"""The docker launcher: `ncbi_common.jobs.job_operator` (Airflow's DockerOperator) against podman's Docker
API, with the trainer image built from docker/.

One DAG of five independent job tasks runs under `airflow dags test` (the real task runner, so
`execution_timeout` and `on_kill` are Airflow's own): a tiny training in the image that lands in MLflow
and the files on the host, a non-zero exit, an OOM kill under a small `mem_limit`, a timeout, and a
missing image. Each failure must fail its task with a clear message (the failure callback's record),
and no container may be left behind.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dag_helpers import small_slice

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"

DAG_FILE = '''
"""Test DAG: one plan task and one docker job operator per case (cases from $NCBI_TEST_JOB_CASES)."""
import json, os
from datetime import datetime, timedelta
from airflow.sdk import DAG, task
from ncbi_common import task_failed
from ncbi_common.jobs import MACROS, job_operator

CASES = json.loads(open(os.environ["NCBI_TEST_JOB_CASES"]).read())
with DAG("docker_jobs", schedule=None, start_date=datetime(2026, 1, 1), user_defined_macros=MACROS,
         default_args={"retries": 0, "on_failure_callback": task_failed}):
    for name, case in CASES.items():
        plan = task(task_id=f"plan_{name}")(lambda record=case["record"]: record)()
        job_operator(name, plan, name=name, execution_timeout=timedelta(seconds=case["timeout_s"]),
                     **case.get("operator", {}))
'''


def test_docker_jobs_succeed_and_fail_clearly(settings_env, imported_data: Path, tmp_path: Path, client):
    import mlflow
    from tasks.pipeline.jobs import train_job
    from tasks.pipeline.rundir import run_dir
    from tasks.vocab import DataRef, Plan, RunParams

    project = tmp_path / "project"
    small_slice(imported_data, project / "data")
    store = tmp_path / "mlflow"  # outside the project dir: the operator must mount it too
    env = {
        "NCBI_RETRAIN_PROJECT_DIR": str(project),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
        "NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT": str(store / "artifacts"),
        "NCBI_RETRAIN_GIT_COMMIT": COMMIT,
    }
    settings = settings_env(**env)
    (store / "artifacts").mkdir(parents=True)

    def plan(argv_data: Path) -> dict:
        data = DataRef(data_dir=str(argv_data), data_version="v-test")
        job = train_job(
            "classifier", RunParams(profile="tiny", epochs=1), data, "docker-run-1", COMMIT, settings
        )
        return Plan(
            model="classifier", train=True, reason="test", config_fingerprint="f", git_commit=COMMIT, job=job
        ).dump()

    good, bad = plan(project / "data"), plan(project / "missing")
    cases = {
        "succeeds": {"record": good, "timeout_s": 1500},
        "exits_2": {"record": bad, "timeout_s": 600},
        # Interpreter + torch import alone exceed 64 MiB: the kernel kills the job long before it trains.
        "oom": {"record": good, "timeout_s": 600, "operator": {"mem_limit": "64m"}},
        # Never finishes in time: NeMo's import alone takes several seconds.
        "times_out": {"record": good, "timeout_s": 3},
        "no_image": {"record": good, "timeout_s": 600, "operator": {"image": "localhost/no-such-trainer:0"}},
    }
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "docker_jobs.py").write_text(DAG_FILE)
    home = tmp_path / "airflow"
    airflow_env = {
        **os.environ,
        **env,
        "NCBI_TEST_JOB_CASES": str(cases_file),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        # The project's DAG folder, for `ncbi_common` (Airflow puts only this test's DAG folder on sys.path).
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]),
    }

    def airflow(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "airflow"), *args], env=airflow_env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)  # fmt: skip

    assert airflow("db", "migrate", timeout=300).returncode == 0
    proc = airflow("dags", "test", "docker_jobs", timeout=2400)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0  # four of the five jobs fail, on purpose

    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("select task_id, state from task_instance"))
        (run_id,) = {r for (r,) in db.execute("select run_id from dag_run")}
        (xcom,) = [v for (v,) in db.execute("select value from xcom where task_id = 'succeeds'")]
    assert states == {**{f"plan_{c}": "success" for c in cases}, "succeeds": "success"} | {
        c: "failed" for c in ("exits_2", "oom", "times_out", "no_image")
    }, log[-3000:]

    errors = {
        json.loads(p.read_text())["task_id"]: json.loads(p.read_text())["error"]
        for p in (run_dir(run_id, settings) / "failures").glob("*.json")
    }
    assert "exits_2 exited with code 2" in errors["exits_2"]
    assert "missing" in errors["exits_2"] and "does not exist" in errors["exits_2"]  # the CLI's own line
    assert "under its memory limit 64m: out of memory" in errors["oom"] or "OOM" in errors["oom"]
    assert "AirflowTaskTimeout" in errors["times_out"]
    assert "trainer image 'localhost/no-such-trainer:0' is not on the container engine" in errors["no_image"]
    assert "scripts/podman.sh build" in errors["no_image"]

    # The success: its --json line is the XCom, the MLflow run and files are on the host's disk.
    from tasks.pipeline import steps

    result = steps.train_result(Plan.model_validate(good), json.loads(xcom))
    assert Path(result.artifacts["metrics"]).is_relative_to(project)
    assert Path(result.artifacts["metrics"]).parent.name == "try-1"
    assert json.loads(Path(result.metrics_file).read_text())["task"] == "classifier"
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["image"] == client.images.get(os.environ["NCBI_RETRAIN_TRAINER_IMAGE"]).id
    assert run.data.tags["dag_run_id"] == "docker-run-1" and run.data.tags["git_commit"] == COMMIT
    assert run.data.tags["data_version"] == "v-test"
    assert str(store / "artifacts") in run.info.artifact_uri
    assert "epoch" in log.lower()  # the job's own output streamed into the task log

    assert client.containers.list(all=True, filters={"label": "ncbi-retrain.job"}) == []


def test_image_is_the_cli_as_a_non_root_user_offline(settings_env, client):
    image = client.images.get(os.environ["NCBI_RETRAIN_TRAINER_IMAGE"])
    config = image.attrs["Config"]
    assert config["User"] == "trainer"
    assert config["Entrypoint"] == ["ncbi-retrain"]
    assert "HF_HUB_OFFLINE=1" in config["Env"]
    out = client.containers.run(image.id, ["--help"], remove=True).decode()
    assert "train" in out and "evaluate" in out
    uid = client.containers.run(image.id, entrypoint=["id", "-u"], remove=True).decode().strip()
    assert uid != "0"
