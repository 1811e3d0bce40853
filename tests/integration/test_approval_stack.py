"""promote=approve on the real components: Airflow's api-server, scheduler and dag-processor on PostgreSQL
(LocalExecutor; on Airflow 3.3 the approval task parks in `awaiting_input`: no worker slot, no triggerer),
the session's MLflow server, real tiny training, and the answers given as a person gives them from a
shell: `ncbi-retrain approve` (a subprocess) through the REST API, signed in as an Airflow user.

One stack for the three answers, in file order, each a forced classifier run that waits in its approval:
approve (alice; champion moves, recorded as her move) -> reject (bob; champion stays, reason on the
version) -> timeout (nobody answers within the stack's short NCBI_RETRAIN_APPROVAL_TIMEOUT: counts as a
reject; while it waits, the command's refusals: wrong password, a viewer, a skipped model, no such run).
The gate policy is lenient (any tiny model passes), so every run reaches its approval. Every wait is
bounded; the components are stopped by their own PIDs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from stack_helpers import (
    ROOT,
    Rest,
    airflow_env,
    core_components,
    publish_project,
    retrain_environment,
    running,
)

pytestmark = pytest.mark.integration
RUN_DEADLINE_S = 1200  # a bound for a broken stack, not a performance assertion
# Long enough for the tests to answer well before it (they answer as soon as the approval waits, or run
# four refused commands first), short enough to wait out once.
TIMEOUT_S = int(os.environ.get("NCBI_RETRAIN_TEST_APPROVAL_TIMEOUT_S", "60"))
NAME = "ncbi-disease-classifier"
USERS = {"alice": "user", "bob": "user", "vera": "viewer"}  # simple auth manager roles


class Stack:
    def __init__(self, env, rest: Rest, mlflow_url: str, repo: Path) -> None:
        self.env, self.rest, self.mlflow_url, self.repo = env, rest, mlflow_url, repo
        self.passwords = json.loads((env.home / "passwords.json").read_text())

    def trigger(self) -> str:
        conf = {"profile": "tiny", "epochs": 1, "models": "classifier", "promote": "approve", "force": True}
        status, run = self.rest("POST", "dags/ncbi_retrain/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 200, run
        return run["dag_run_id"]

    def hitl(self, run_id: str, model: str = "classifier") -> tuple[int, dict]:
        run = urllib.parse.quote(run_id, safe="")
        return self.rest(
            "GET", f"dags/ncbi_retrain/dagRuns/{run}/taskInstances/{model}.approval/-1/hitlDetails"
        )

    def wait_for_approval(self, run_id: str) -> dict:
        """Until the classifier's approval waits for an answer (the run must not end before)."""
        end = time.monotonic() + RUN_DEADLINE_S
        while True:
            status, detail = self.hitl(run_id)
            if status == 200 and detail["task_instance"]["state"] == "awaiting_input":
                return detail
            _, run = self.rest("GET", f"dags/ncbi_retrain/dagRuns/{urllib.parse.quote(run_id, safe='')}")
            assert run.get("state") in ("queued", "running"), (
                run.get("state"),
                self.states(run_id),
                self.failure(),
            )
            assert time.monotonic() < end, (
                f"no approval asked after {RUN_DEADLINE_S} s: {self.states(run_id)}"
            )
            time.sleep(2)

    def states(self, run_id: str) -> dict[str, str]:
        return {k: t["state"] for k, t in self.rest.task_instances("ncbi_retrain", run_id).items()}

    def failure(self) -> list[str]:
        return [p.read_text() for p in (self.repo / "runs").glob("*/failure.md")]

    def approve(self, user: str, run_id: str, *args: str, model: str = "classifier", password=None):
        """`ncbi-retrain approve MODEL --run RUN ARGS...` as `user`, from a shell."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("NCBI_RETRAIN_", "AIRFLOW", "MLFLOW_"))
        } | {
            "NCBI_RETRAIN_AIRFLOW_URL": self.env.url,
            "NCBI_RETRAIN_AIRFLOW_USER": user,
            "NCBI_RETRAIN_AIRFLOW_PASSWORD": password or self.passwords[user],
            "PYTHONPATH": str(ROOT),
        }
        cmd = [sys.executable, "-m", "tasks.cli", "approve", model, "--run", run_id, *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    def summary(self, run_id: str) -> dict:
        from tasks.pipeline.rundir import safe_name

        return json.loads((self.repo / "runs" / safe_name(run_id) / "summary.json").read_text())

    def version_of(self, run_id: str):
        """The one version this run registered (the session's MLflow server holds other tests' too)."""
        (mv,) = [
            v
            for v in self.client().search_model_versions(f"name='{NAME}'")
            if v.tags.get("dag_run_id") == run_id
        ]
        return self.client().get_model_version(NAME, mv.version)

    def champion(self) -> str | None:
        if not self.client().search_registered_models(f"name='{NAME}'"):
            return None  # the first run of the session's MLflow server
        aliases = self.client().get_registered_model(NAME).aliases
        return str(aliases["champion"]) if "champion" in aliases else None

    def history(self) -> list[dict]:
        from tasks.registry.aliases import history_from_tags

        return history_from_tags(self.client().get_registered_model(NAME).tags)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)

    def champion_events(self, run_id: str) -> list[dict]:
        run = urllib.parse.quote(run_id, safe="")
        _, doc = self.rest("GET", f"assets/events?source_dag_id=ncbi_retrain&source_run_id={run}&limit=50")
        return [e for e in doc.get("asset_events", []) if e["name"] == f"{NAME}@champion"]


@pytest.fixture(scope="module")
def stack(postgres, mlflow_server, imported_data, tmp_path_factory):
    """api-server + scheduler + dag-processor on a fresh database, users alice / bob (role User) and
    vera (Viewer), a short approval timeout and a lenient gate; ncbi_champion paused (not tested here)."""
    from tasks.gates import POLICY_FILE
    from tasks.settings import get_settings

    base = tmp_path_factory.mktemp("approval")
    mp = pytest.MonkeyPatch()
    try:
        project = publish_project(imported_data, base, mp.setenv)
        policy = yaml.safe_load(POLICY_FILE.read_text())
        policy["classifier"].update(margin=1.0, max_class_f1_drop=1.0)  # any tiny model passes
        (base / "gates.yaml").write_text(yaml.safe_dump(policy))
        env = airflow_env(
            postgres,
            base,
            "LocalExecutor",
            **retrain_environment(mlflow_server.url, project),
            NCBI_RETRAIN_APPROVAL_TIMEOUT=str(TIMEOUT_S),
            NCBI_RETRAIN_GATE_POLICY=str(base / "gates.yaml"),
            # the scheduler's sweep of timed-out approvals runs this often (default 15 s)
            AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="2",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(
                ["admin:admin", *(f"{u}:{r}" for u, r in USERS.items())]
            ),
        )
        passwords = json.loads((env.home / "passwords.json").read_text())
        (env.home / "passwords.json").write_text(
            json.dumps(passwords | {u: f"pw-{u}-{os.getpid()}" for u in USERS})
        )
        only = ("api-server", "scheduler", "dag-processor")  # no triggerer: 3.3's approvals do not need one
        with running(env, core_components(env, only), base):
            rest = Rest(env.url, env.password)
            rest.wait_dag("ncbi_retrain")
            assert rest("PATCH", "dags/ncbi_retrain", {"is_paused": False})[0] == 200
            rest.wait_dag("ncbi_champion")
            assert rest("PATCH", "dags/ncbi_champion", {"is_paused": True})[0] == 200
            yield Stack(env, rest, mlflow_server.url, project["repo"])
    finally:
        mp.undo()
        get_settings.cache_clear()


def test_approved_the_champion_moves_and_the_approver_is_recorded(stack):
    before = stack.champion()
    run_id = stack.trigger()
    detail = stack.wait_for_approval(run_id)
    version = stack.version_of(run_id).version
    # What the approver sees in required actions: the decision and where the report is.
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert detail["subject"].startswith(f"Make {NAME} v{version} the champion?")
    body = detail["body"]
    assert "| challenger v" in body and "macro_f1" in body and "decision.md" in body and "MLflow" in body
    assert f"ncbi-retrain approve classifier --run '{run_id}'" in body
    assert stack.states(run_id)["classifier.promote"] in (None, "none", "scheduled")  # waiting, not run
    assert stack.champion() == before

    done = stack.approve("alice", run_id, "--reason", "F1 as expected, per class fine")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"approved: classifier in run {run_id} as alice")

    run = stack.rest.wait_run("ncbi_retrain", run_id, RUN_DEADLINE_S)
    states = stack.states(run_id)
    assert run["state"] == "success", (states, stack.failure())
    assert states["classifier.approval"] == states["classifier.promote"] == "success"
    # answered once, on the first try (the command waits out Airflow 3.3.2's race: tasks/airflow_api.py)
    assert stack.rest.task_instances("ncbi_retrain", run_id)["classifier.approval"]["try_number"] == 1
    assert stack.champion() == version
    move = next(e for e in reversed(stack.history()) if e["alias"] == "champion")
    assert (move["to"], move["who"]) == (version, "airflow:ncbi_retrain:alice")
    assert "approved by alice: F1 as expected, per class fine" in move["why"]
    tags = stack.version_of(run_id).tags
    assert (tags["approval"], tags["approval_by"]) == ("approved", "alice")
    line = stack.summary(run_id)["models"]["classifier"]
    assert (
        line["promoted"] and line["approval"]["outcome"] == "approved" and line["approval"]["by"] == "alice"
    )
    assert len(stack.champion_events(run_id)) == 1  # the new champion's Asset event

    again = stack.approve("bob", run_id, "--reject", "--reason", "too late")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"error: no pending approval for classifier in run {run_id}: it was already approved by alice: "
        "F1 as expected, per class fine"
    )


def test_rejected_the_champion_stays_and_the_reason_is_recorded(stack):
    before = stack.champion()
    run_id = stack.trigger()
    stack.wait_for_approval(run_id)
    done = stack.approve("bob", run_id, "--reject", "--reason", "wait for the new annotations")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"rejected: classifier in run {run_id} as bob")

    run = stack.rest.wait_run("ncbi_retrain", run_id, RUN_DEADLINE_S)
    states = stack.states(run_id)
    assert run["state"] == "success", (states, stack.failure())
    assert states["classifier.approval"] == "success" and states["classifier.promote"] == "skipped"
    assert stack.champion() == before
    mv = stack.version_of(run_id)
    assert list(mv.aliases) == ["challenger"]
    assert (mv.tags["approval"], mv.tags["approval_by"], mv.tags["approval_reason"]) == (
        "rejected",
        "bob",
        "wait for the new annotations",
    )
    line = stack.summary(run_id)["models"]["classifier"]
    assert not line["promoted"] and "rejected by bob: wait for the new annotations" in line["reason"]
    assert stack.champion_events(run_id) == []  # no new champion, no Asset event


def test_no_answer_in_time_counts_as_a_reject(stack):
    before = stack.champion()
    run_id = stack.trigger()
    stack.wait_for_approval(run_id)
    # While it waits: what the command refuses, each in one sentence with a non-zero exit.
    wrong = stack.approve("alice", run_id, "--reason", "x", password="not-her-password")
    assert wrong.returncode == 2 and "refused user alice: wrong user name or password" in wrong.stderr
    viewer = stack.approve("vera", run_id, "--reason", "looks fine to me")
    assert viewer.returncode == 2 and "Airflow user vera may not answer the approval" in viewer.stderr
    skipped = stack.approve("alice", run_id, "--reason", "x", model="ner")  # models=classifier only
    assert skipped.returncode == 2 and f"no pending approval for ner in run {run_id}: its approval was" in (
        skipped.stderr
    )
    missing = stack.approve("alice", "manual__no-such-run", "--reason", "x")
    assert missing.returncode == 2 and "ncbi_retrain has no run 'manual__no-such-run'" in missing.stderr
    for refused in (wrong, viewer, skipped, missing):
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    run = stack.rest.wait_run("ncbi_retrain", run_id, RUN_DEADLINE_S)  # nobody answers
    states = stack.states(run_id)
    assert run["state"] == "success", (states, stack.failure())
    assert states["classifier.approval"] == "success" and states["classifier.promote"] == "skipped"
    assert stack.champion() == before
    mv = stack.version_of(run_id)
    assert (mv.tags["approval"], mv.tags["approval_by"]) == ("timed_out", "")
    line = stack.summary(run_id)["models"]["classifier"]
    assert line["approval"]["outcome"] == "timed_out" and "counts as rejected" in line["reason"]
    late = stack.approve("alice", run_id, "--reason", "sorry, was away")
    assert late.returncode == 2 and "it was already closed: not approved in time" in late.stderr
