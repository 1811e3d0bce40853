"""The registry loop on real components: MLflow (PostgreSQL, basic-auth, our webhook installed) and Airflow's
four components with the webhook receiver plugin. Moves of `champion` are made as people make them (an
`MlflowClient` signed in as a user allowed to promote) and answered by the `ncbi_champion` DAG.

Models: two tiny classifiers really trained in the training env (the smoke test predicts through
`models:/NAME@champion`), and one crafted version whose gate failed (tests/registry_helpers.py).
Every server is stopped by its own PID at the end; every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from dag_helpers import small_slice
from stack_helpers import http
from stack_helpers import stop as stop_processes

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
TRAIN_PY = ROOT / ".venv-train" / "bin" / "python"
NAME = "ncbi-disease-classifier"
# The acceptance criterion: a move is answered by a finished run within a minute (on a machine running
# only this test; a shared, loaded one can raise it).
MOVE_DEADLINE_S = float(os.environ.get("NCBI_RETRAIN_TEST_MOVE_DEADLINE_S", "60"))
SETUP_DEADLINE_S = 300  # a bound for a broken stack, not a performance assertion
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not TRAIN_PY.exists(), reason="needs .venv-train"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_health(url: str, proc: subprocess.Popen, log: Path, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, f"server exited with {proc.returncode}: {log.read_text()[-3000:]}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {deadline_s} s: {log.read_text()[-3000:]}")


def signed_in(user: str, password: str):
    """MLflow calls from this process as `user` (MLflow reads the credentials at each request)."""
    return mock.patch.dict(os.environ, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)


class Stack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.pw = {u: secrets.token_urlsafe(16) for u in ("admin", "ncbi-pipeline", "ncbi-reader", "alice")}
        self.secret = secrets.token_urlsafe(24)
        self.versions: dict[str, str] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.logs[name] = self.base / f"{name}.log"
        with self.logs[name].open("w") as out:
            self.procs[name] = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self.procs[name]

    def stop(self) -> None:
        stop_processes(self.procs)

    def tail(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")[-3000:]

    # Airflow REST
    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return http(method, f"{self.airflow}{path}", body, self.token)

    def champion_runs(self) -> dict[str, str]:
        _, doc = self.api("GET", "/api/v2/dags/ncbi_champion/dagRuns?limit=100")
        return {r["dag_run_id"]: r["state"] for r in doc.get("dag_runs", [])}

    def wait_runs(self, before: set[str], deadline_s: float, want=None) -> dict[str, str]:
        """New ncbi_champion runs, once all of them finished and `want(states)` holds."""
        end = time.monotonic() + deadline_s
        while True:
            new = {k: v for k, v in self.champion_runs().items() if k not in before}
            if new and all(s in ("success", "failed") for s in new.values()) and (want is None or want(new)):
                return new
            if time.monotonic() > end:
                pytest.fail(f"ncbi_champion runs after {deadline_s} s: {new}\n{self.tail('scheduler')}")
            time.sleep(1)

    def task_states(self, run_id: str) -> dict[str, str]:
        _, tis = self.api("GET", f"/api/v2/dags/ncbi_champion/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] for t in tis.get("task_instances", [])}

    def asset_events(self, asset: str) -> list[dict]:
        _, found = self.api("GET", f"/api/v2/assets?name_pattern={urllib.request.quote(asset)}")
        (aid,) = [a["id"] for a in found["assets"] if a["name"] == asset]
        _, doc = self.api("GET", f"/api/v2/assets/events?asset_id={aid}&limit=100")
        return doc["asset_events"]


def _train_tiny(stack: Stack, data: Path, n: int) -> dict:
    out = stack.base / f"train-{n}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": stack.mlflow,
        "MLFLOW_TRACKING_USERNAME": "ncbi-pipeline",
        "MLFLOW_TRACKING_PASSWORD": stack.pw["ncbi-pipeline"],
        "PYTHONPATH": str(ROOT),
        "NCBI_RETRAIN_PROJECT_DIR": str(stack.base),
    }
    cmd = [str(TRAIN_PY), "-m", "tasks.cli", "train", "classifier", "--data", str(data), "--out", str(out)]
    cmd += ["--profile", "tiny", "--data-version", "0123456789abcdef0123456789abcdef.dir", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(postgres, imported_data, tmp_path_factory) -> Iterator[Stack]:
    """MLflow + Airflow with the webhook loop, v1 (real, promoted by the pipeline), v2 (real, challenger),
    v3 (crafted, gate failed)."""
    from mlflow.server.auth.client import AuthServiceClient

    from tasks.gates import decide, load_metrics
    from tasks.registry import access, register_run, service, webhooks
    from tasks.registry.champion import promote
    from tasks.settings import Settings

    base = tmp_path_factory.mktemp("champion-loop")
    st = Stack(base)
    mp = pytest.MonkeyPatch()
    try:
        # ---- MLflow: PostgreSQL backend + auth DB, basic-auth, webhooks to the loopback receiver
        mport, aport = free_port(), free_port()
        st.mlflow, st.airflow = f"http://127.0.0.1:{mport}", f"http://127.0.0.1:{aport}"
        auth_uri = postgres.create_database("loop_mlflow_auth")
        ini = base / "basic_auth.ini"
        ini.write_text(
            (ROOT / "mlflow" / "basic_auth.ini").read_text().replace("${MLFLOW_AUTH_DATABASE_URI}", auth_uri)
        )
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "NCBI_RETRAIN"))
        }
        menv = clean | {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": st.pw["admin"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        }
        (base / "artifacts").mkdir()
        server = st.start(
            "mlflow",
            [
                sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                "--host", "127.0.0.1", "--port", str(mport),
                "--backend-store-uri", postgres.create_database("loop_mlflow"),
                "--artifacts-destination", str(base / "artifacts"), "--workers", "1",
            ],
            menv,
        )  # fmt: skip
        wait_health(f"{st.mlflow}/health", server, st.logs["mlflow"])

        settings = Settings(mlflow_tracking_uri=st.mlflow)
        mp.setattr(service, "get_settings", lambda: settings)
        mp.setattr(access, "get_settings", lambda: settings)
        mp.setenv("MLFLOW_TRACKING_URI", st.mlflow)
        mp.setenv(access.PIPELINE_PASSWORD_ENV, st.pw["ncbi-pipeline"])
        mp.setenv(access.READER_PASSWORD_ENV, st.pw["ncbi-reader"])
        with signed_in("admin", st.pw["admin"]):
            access.setup_access("ncbi-pipeline", "ncbi-reader")
            auth = AuthServiceClient(st.mlflow)
            auth.create_user("alice", st.pw["alice"])  # a person allowed to promote the classifier
            auth.grant_user_permission("alice", access.RESOURCE_TYPE, NAME, "EDIT")
            webhooks.install_webhook(f"{st.airflow}/ncbi-retrain/mlflow-webhook", st.secret)
            assert (
                webhooks.install_webhook(f"{st.airflow}/ncbi-retrain/mlflow-webhook", st.secret)["created"]
                is False
            )

        # ---- Airflow, with the receiver plugin, working as the pipeline's MLflow account
        home = base / "airflow"
        home.mkdir()
        (home / "passwords.json").write_text(json.dumps({"admin": st.pw["admin"]}))
        aenv = clean | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.create_database("loop_airflow").replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{st.airflow}/execution/",
            "AIRFLOW__API__BASE_URL": st.airflow,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(24),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "MLFLOW_TRACKING_URI": st.mlflow,
            "MLFLOW_TRACKING_USERNAME": "ncbi-pipeline",
            "MLFLOW_TRACKING_PASSWORD": st.pw["ncbi-pipeline"],
            "NCBI_RETRAIN_MLFLOW_WEBHOOK_SECRET": st.secret,
            "NCBI_RETRAIN_PROJECT_DIR": str(base),
            "NCBI_RETRAIN_TRAIN_VENV": str(ROOT / ".venv-train"),
            "NCBI_RETRAIN_SCHEDULE": "none",
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=aenv, check=True, capture_output=True, timeout=300
        )
        # The smoke test runs in the training env through the launcher's operator, in the `gpu` pool.
        subprocess.run(
            [str(BIN / "airflow"), "pools", "set", "gpu", "1", "training jobs"],
            env=aenv,
            check=True,
            capture_output=True,
            timeout=120,
        )
        st.start(
            "api-server", [str(BIN / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(aport)], aenv
        )
        st.start("scheduler", [str(BIN / "airflow"), "scheduler", "--skip-serve-logs"], aenv)
        st.start("dag-processor", [str(BIN / "airflow"), "dag-processor"], aenv)
        st.start("triggerer", [str(BIN / "airflow"), "triggerer", "--skip-serve-logs"], aenv)
        end = time.monotonic() + SETUP_DEADLINE_S
        while True:
            dead = {n: p.returncode for n, p in st.procs.items() if p.poll() is not None}
            assert not dead, f"exited {dead}: {[st.tail(n) for n in dead]}"
            with contextlib.suppress(OSError):
                status, tok = http(
                    "POST", f"{st.airflow}/auth/token", {"username": "admin", "password": st.pw["admin"]}
                )
                if status in (200, 201):
                    st.token = tok["access_token"]
                    if st.api("GET", "/api/v2/dags/ncbi_champion")[0] == 200:
                        break
            assert time.monotonic() < end, f"ncbi_champion never appeared: {st.tail('dag-processor')}"
            time.sleep(2)
        status, dag = st.api("PATCH", "/api/v2/dags/ncbi_champion", {"is_paused": False})
        assert status == 200 and dag["is_paused"] is False

        # ---- Versions: two real tiny classifiers, one crafted version with a failed gate
        data = small_slice(imported_data, base / "data")
        trained = [_train_tiny(st, data, n) for n in (1, 2)]
        mp.setenv("NCBI_RETRAIN_ACTOR", "airflow:ncbi_retrain")
        with signed_in("ncbi-pipeline", st.pw["ncbi-pipeline"]):
            for n, t in enumerate(trained, 1):
                decision = decide("classifier", load_metrics(Path(t["artifacts"]["metrics"])), None, "tiny")
                assert decision.passed, decision.reason
                st.versions[f"v{n}"] = register_run("classifier", t["run_id"], decision).version
            from registry_helpers import classifier_metrics, log_candidate, noisy_preds

            gold = [i % 3 for i in range(90)]
            worse = classifier_metrics(noisy_preds(gold, 0.4, 3), gold, model="worse")
            failed = decide("classifier", worse, classifier_metrics(gold, gold), "cpu")
            assert not failed.passed
            st.versions["v3"] = register_run("classifier", log_candidate(metrics=worse), failed).version
            before = set(st.champion_runs())
            promote(NAME, st.versions["v1"], "gate passed in ncbi_retrain", actor="airflow:ncbi_retrain")
        st.first_runs = st.wait_runs(before, SETUP_DEADLINE_S)
        yield st
    finally:
        mp.undo()
        st.stop()


def champion_moves(stack: Stack) -> list[dict]:
    from tasks.registry import history

    with signed_in("ncbi-reader", stack.pw["ncbi-reader"]):
        return [e for e in history(NAME) if e["alias"] == "champion"]


def test_the_pipelines_own_promotion_is_verified_without_a_second_history_entry(stack):
    assert set(stack.first_runs.values()) == {"success"}, stack.first_runs
    moves = champion_moves(stack)
    assert [(m["to"], m["who"]) for m in moves] == [(stack.versions["v1"], "airflow:ncbi_retrain")]
    from tasks.registry.service import client

    with signed_in("ncbi-reader", stack.pw["ncbi-reader"]):
        mv = client().get_model_version(NAME, stack.versions["v1"])
    assert json.loads(mv.tags["champion_check"])["result"] == "passed"
    assert mv.tags["model_card"].endswith("model_card.md") and "Model card" in mv.description


def test_a_read_only_user_gets_403_setting_an_alias(stack):
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    with signed_in("ncbi-reader", stack.pw["ncbi-reader"]), pytest.raises(MlflowException) as err:
        MlflowClient(stack.mlflow).set_registered_model_alias(NAME, "champion", stack.versions["v2"])
    assert err.value.get_http_status_code() == 403


def test_forged_and_replayed_deliveries_create_no_event(stack):
    from tasks.registry import webhooks

    url = f"{stack.airflow}/ncbi-retrain/mlflow-webhook"
    asset = "ncbi-disease-ner@champion"  # no ner champion: a recorded event only makes a skipping run
    before = len(stack.asset_events(asset))
    runs_before = set(stack.champion_runs())
    body = webhooks.alias_event_body("ncbi-disease-ner", "champion", "9")
    forged = webhooks.sign("not-the-secret", "forged-1", int(time.time()), body)
    assert http("POST", url, body, headers=forged)[0] == 401
    assert len(stack.asset_events(asset)) == before
    genuine = webhooks.sign(stack.secret, "replayed-1", int(time.time()), body)
    status, doc = http("POST", url, body, headers=genuine)
    assert (status, doc["status"]) == (200, "recorded"), doc
    # the same delivery again: MLflow's retry, or a replay
    status, doc = http("POST", url, body, headers=genuine)
    assert (status, doc["status"]) == (200, "duplicate")
    events = stack.asset_events(asset)
    assert len(events) == before + 1 and events[-1]["extra"]["delivery_id"] == "replayed-1"
    # The one recorded event gives one run, where the ner branch finds no champion and skips.
    runs = stack.wait_runs(runs_before, SETUP_DEADLINE_S)
    assert list(runs.values()) == ["success"], runs


def test_a_person_setting_champion_in_mlflow_gets_a_verified_run_and_an_outside_entry(stack):
    from mlflow import MlflowClient

    v1, v2 = stack.versions["v1"], stack.versions["v2"]
    before = set(stack.champion_runs())
    with signed_in("alice", stack.pw["alice"]):
        MlflowClient(stack.mlflow).set_registered_model_alias(NAME, "champion", v2)  # as in MLflow's UI
    runs = stack.wait_runs(before, MOVE_DEADLINE_S)
    states = {r: stack.task_states(r) for r in runs}
    assert set(runs.values()) == {"success"}, states
    (run_id,) = runs
    assert states[run_id]["classifier.smoke"] == states[run_id]["classifier.card"] == "success", states
    last = champion_moves(stack)[-1]
    assert (last["source"], last["from"], last["to"]) == ("outside", v1, v2)
    assert last["delivery_id"] and "MLflow" in last["why"]
    events = stack.asset_events("ncbi-disease-classifier@champion")
    assert any(e["extra"].get("version") == v2 and e["extra"].get("delivery_id") for e in events)


def test_champion_set_onto_a_failed_gate_version_is_moved_back(stack):
    from mlflow import MlflowClient
    from tasks.registry.guard import GUARD_ACTOR

    v2, v3 = stack.versions["v2"], stack.versions["v3"]
    before = set(stack.champion_runs())
    with signed_in("alice", stack.pw["alice"]):
        MlflowClient(stack.mlflow).set_registered_model_alias(NAME, "champion", v3)
    # The guard's run fails (with the reason) after moving champion back; the revert's own event then
    # gives a run that verifies v2 and succeeds, and nothing moves again.
    runs = stack.wait_runs(before, MOVE_DEADLINE_S * 2, want=lambda r: "success" in r.values())
    assert sorted(runs.values()) == ["failed", "success"], {r: stack.task_states(r) for r in runs}
    failed = next(r for r, s in runs.items() if s == "failed")
    assert stack.task_states(failed)["classifier.check"] == "failed"
    moves = champion_moves(stack)
    outside, back = moves[-2:]
    assert (outside["source"], outside["to"]) == ("outside", v3), moves
    assert (back["who"], back["from"], back["to"]) == (GUARD_ACTOR, v3, v2), moves
    assert "gate is failed" in back["why"]
    with signed_in("ncbi-reader", stack.pw["ncbi-reader"]):
        assert MlflowClient(stack.mlflow).get_registered_model(NAME).aliases["champion"] == v2
    found = list((stack.base / "runs").glob("*/failure.md"))
    assert found, f"no failure summary under {stack.base / 'runs'}"
    assert any("gate is failed" in p.read_text() for p in found)
