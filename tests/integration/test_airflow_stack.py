"""The real stack: Airflow's four components on PostgreSQL (LocalExecutor), a run triggered through the
REST API with conf, awaited to success, and its models visible in an MLflow server.

Reuses the `postgres` and `mlflow_server` fixtures of tests/integration/conftest.py. Training is real
(tiny profile, one epoch, on a small slice of the corpus, in the training env via the local launcher).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dag_helpers import commit_data, make_project

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (ROOT / ".venv-train" / "bin" / "ncbi-retrain").exists(), reason="needs .venv-train"
    ),
]
RUN_DEADLINE_S = 1200  # a bound for a broken stack, not a performance assertion


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"detail": exc.read().decode(errors="replace")}


@pytest.fixture
def project(imported_data, tmp_path, monkeypatch):
    """A git + DVC project with a published data slice (the stack's NCBI_RETRAIN_PROJECT_DIR)."""
    from tasks.settings import get_settings
    from tasks.versioning import publish

    repo = tmp_path / "repo"
    make_project(imported_data, repo)
    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(repo))
    monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(tmp_path / "dvc-remote"))
    get_settings.cache_clear()
    version = publish(repo)
    commit_data(repo, "data v1")
    yield {"repo": repo, "remote": tmp_path / "dvc-remote", "data_version": version}
    get_settings.cache_clear()


@pytest.fixture
def airflow_stack(postgres, mlflow_server, project, tmp_path):
    """api-server + scheduler + dag-processor + triggerer on a fresh `airflow` database; yields the URL."""
    home = tmp_path / "airflow"
    home.mkdir()
    port = _port()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "NCBI_RETRAIN"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.create_database("airflow").replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(24),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            "NCBI_RETRAIN_PROJECT_DIR": str(project["repo"]),
            "NCBI_RETRAIN_DVC_REMOTE_URL": str(project["remote"]),
            "NCBI_RETRAIN_TRAIN_VENV": str(ROOT / ".venv-train"),
            "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
            "NCBI_RETRAIN_SCHEDULE": "none",  # only the REST-triggered run
            "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    subprocess.run(
        [str(BIN / "airflow"), "pools", "set", "gpu", "1", "training"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    commands = {
        "api-server": ["api-server", "-H", "127.0.0.1", "-p", str(port)],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for name, args in commands.items():
            logs[name] = tmp_path / f"{name}.log"
            with logs[name].open("w") as out:
                procs[name] = subprocess.Popen(
                    [str(BIN / "airflow"), *args],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 180
        while True:
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            assert not dead, f"components exited {dead}: {[logs[n].read_text()[-2000:] for n in dead]}"
            with contextlib.suppress(OSError):
                status, health = _http("GET", f"{url}/api/v2/monitor/health")
                if status == 200 and health.get("metadatabase", {}).get("status") == "healthy":
                    break
            assert time.monotonic() < end, f"api-server not healthy: {logs['api-server'].read_text()[-3000:]}"
            time.sleep(1)
        yield {"url": url, "password": password, "logs": logs, "home": home}
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def test_rest_triggered_run_registers_both_models(airflow_stack, mlflow_server, project):
    url = airflow_stack["url"]
    status, tok = _http(
        "POST", f"{url}/auth/token", {"username": "admin", "password": airflow_stack["password"]}
    )
    assert status in (200, 201), tok
    token = tok["access_token"]

    end = time.monotonic() + 180  # the dag-processor's first parse
    while (got := _http("GET", f"{url}/api/v2/dags/ncbi_retrain", token=token))[0] != 200:
        assert time.monotonic() < end, f"DAG never appeared: {got}"
        time.sleep(2)
    status, dag = _http("PATCH", f"{url}/api/v2/dags/ncbi_retrain", {"is_paused": False}, token=token)
    assert status == 200 and dag["is_paused"] is False

    conf = {"profile": "tiny", "epochs": 1, "models": "both", "promote": "auto"}
    status, run = _http(
        "POST", f"{url}/api/v2/dags/ncbi_retrain/dagRuns", {"logical_date": None, "conf": conf}, token=token
    )
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert run["conf"] == conf

    end = time.monotonic() + RUN_DEADLINE_S
    while True:
        status, run = _http("GET", f"{url}/api/v2/dags/ncbi_retrain/dagRuns/{run_id}", token=token)
        if run.get("state") in ("success", "failed"):
            break
        assert time.monotonic() < end, f"run {run_id} still {run.get('state')} after {RUN_DEADLINE_S} s"
        time.sleep(5)
    _, tis = _http("GET", f"{url}/api/v2/dags/ncbi_retrain/dagRuns/{run_id}/taskInstances", token=token)
    states = {t["task_id"]: t["state"] for t in tis.get("task_instances", [])}
    failure = project["repo"] / "runs"
    detail = [p.read_text() for p in failure.glob("*/failure.md")]
    assert run["state"] == "success", (states, detail)
    assert states["classifier.promote"] == states["ner.promote"] == "success"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    for name in ("ncbi-disease-classifier", "ncbi-disease-ner"):
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == "1"
        assert champion.tags["dag_run_id"] == run_id
        assert champion.tags["data_version"] == project["data_version"]
        assert champion.tags["gate"] == "passed"
