"""`ncbi_retrain` end to end with `dag.test()` on SQLite: real DVC pull, GX validation, NeMo training
(tiny profile, in the training env through the local launcher's BashOperator), gates and the MLflow
registry.

The tests share one project (a small valid slice of the real corpus) and run in file order, each
building on the registry state the previous one left, so that the costly trainings happen once:
bad data (no training) -> promote=approve refused (dag.test cannot wait for a person) -> success (both
models trained, champion set; promote=auto skips the approval, nothing waits) -> nothing changed
(skipped) -> failed gate (classifier retrained, champion kept) -> crash (fails cleanly) -> crash then retry.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every run names its promote mode: dag.test() runs tasks in this process, where a run's conf values
# stay in the DAG's Param objects for the next run (Airflow's process_params updates them in place).
TINY = {"profile": "tiny", "data_revision": "v1", "promote": "auto"}

pytestmark = pytest.mark.skipif(
    not (ROOT / ".venv-train" / "bin" / "ncbi-retrain").exists(), reason="needs the training env"
)


@pytest.fixture(scope="module")
def repo(project):
    """Add a second, invalid data version `bad` (a label 7) to the project, then go back to v1."""
    import subprocess

    from tasks.versioning import publish, pull

    repo = project["repo"]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "tag", "v1"], cwd=repo, check=True)
    tsv = repo / "data" / "tc3" / "train.tsv"
    lines = tsv.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t7"
    tsv.write_text("\n".join(lines) + "\n")
    publish(repo)
    subprocess.run([*git, "commit", "-q", "-am", "data: bad label"], cwd=repo, check=True)
    subprocess.run([*git, "tag", "bad"], cwd=repo, check=True)
    pull(repo, "v1")
    return project


@pytest.fixture
def settings_env(monkeypatch):
    """Set NCBI_RETRAIN_* variables for one test, with the settings cache cleared around it."""
    from tasks.settings import get_settings

    def setenv(**kw: str) -> None:
        for k, v in kw.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    yield setenv
    get_settings.cache_clear()
    monkeypatch.undo()
    get_settings.cache_clear()


def checkout_state(repo: Path) -> tuple[str, bytes, dict[str, bytes]]:
    """What a DAG run must never change: `git status`, `data.dvc` and every file under `data/`."""
    import subprocess

    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    data = {
        str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data").rglob("*")) if p.is_file()
    }
    return status, (repo / "data.dvc").read_bytes(), data


def run_dag(dagbag, conf: dict):
    """One dag.test() run; returns (dag run, {task_id: state}, summary dict or None).

    Every run, whatever its data revision or outcome, leaves the checkout exactly as it found it."""
    from tasks.pipeline.rundir import run_dir
    from tasks.settings import get_settings

    repo = get_settings().project_dir
    before = checkout_state(repo)
    dr = dagbag.get_dag("ncbi_retrain").test(run_conf=conf)
    assert checkout_state(repo) == before, "the DAG run changed the checkout (git status, data.dvc or data/)"
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    path = run_dir(dr.run_id) / "summary.json"
    return dr, states, json.loads(path.read_text()) if path.exists() else None


def versions(model: str) -> list[dict]:
    from tasks.registry import list_versions, registered_name
    from tasks.registry.service import client  # noqa: F401  (same store as the DAG)

    try:
        return list_versions(registered_name(model))
    except Exception:  # no registered model yet
        return []


def champion(model: str) -> str | None:
    from tasks.registry import champion_version

    return (champion_version(model) or {}).get("version")


def wrapper_venv(tmp_path: Path, body: str) -> Path:
    """A stand-in training env whose `bin/ncbi-retrain` runs `body` (bash) before anything else."""
    venv = tmp_path / "train-venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "ncbi-retrain"
    script.write_text(
        f'#!/usr/bin/env bash\n{body}\nexec {ROOT / ".venv-train" / "bin" / "ncbi-retrain"} "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return venv


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------------------- paths
def test_bad_data_fails_validation_and_nothing_trains(repo, dagbag, settings_env):
    settings_env()
    dr, states, summary = run_dag(dagbag, {**TINY, "data_revision": "bad"})
    assert str(dr.state) == "failed"
    assert states["pull_data"] == "success" and states["validate_data"] == "failed"
    from tasks.pipeline.rundir import run_dir

    label = (run_dir(dr.run_id) / "data" / "tc3" / "train.tsv").read_text().splitlines()[2]
    assert label.endswith("\t7")  # validated the revision's own data, in the run's folder
    for model in ("classifier", "ner"):
        assert {states[f"{model}.{t}"] for t in ("plan", "train", "register", "promote")} == {
            "upstream_failed"
        }
        assert versions(model) == []
    assert summary is None
    from tasks.pipeline.rundir import run_dir

    failure = json.loads((run_dir(dr.run_id) / "failure.json").read_text())
    assert failure["failed_task"] == "validate_data"
    assert "tc3/train.tsv:3" in failure["error"] and "nothing is trained" in failure["error"]
    assert len(failure["failed_tasks"]) == 1  # AirflowFailException: bad data is not retried


def test_promote_approve_under_dag_test_fails_at_once_instead_of_waiting(repo, dagbag, settings_env):
    """dag.test() has no scheduler to time an approval out and no api-server to answer it: a run that
    would wait for a person forever is refused by its first task, before anything trains."""
    settings_env()
    dr, states, summary = run_dag(dagbag, {**TINY, "promote": "approve"})
    assert str(dr.state) == "failed" and states["pull_data"] == "failed"
    assert {states[f"{m}.{t}"] for m in ("classifier", "ner") for t in ("train", "approval")} == {
        "upstream_failed"
    }
    from tasks.pipeline.rundir import run_dir

    failure = json.loads((run_dir(dr.run_id) / "failure.json").read_text())
    assert "promote=approve needs the Airflow stack" in failure["error"]
    assert versions("classifier") == [] and summary is None


def test_success_trains_registers_and_promotes_both(repo, dagbag, settings_env):
    """promote=auto (the nightly default): the approval task is skipped and nothing waits (dag.test()
    would wait forever for a task in awaiting_input)."""
    settings_env()
    dr, states, summary = run_dag(dagbag, TINY)
    assert str(dr.state) == "success", states
    # the run's own start by Airflow's clock, so the demo can say how long the DAG took
    assert summary["started_at"] == dr.start_date.isoformat(timespec="seconds")
    assert summary["started_at"] <= summary["finished_at"]
    for model in ("classifier", "ner"):
        assert states[f"{model}.train"] == "success" and states[f"{model}.promote"] == "success"
        assert states[f"{model}.approval_request"] == "success" and states[f"{model}.approval"] == "skipped"
        assert summary["models"][model]["approval"] is None
        assert states[f"{model}.rescore_champion"] == "skipped"  # no champion yet: nothing to re-score
        (v,) = versions(model)
        assert v["aliases"] == ["champion"] and v["gate"] == "passed"
        assert v["data_version"] == repo["data_version"]
        m = summary["models"][model]
        assert m["trained"] and m["promoted"] and m["version"] == v["version"] == champion(model)
        assert m["run_id"] == v["run_id"]
        assert "new champion" in m["reason"]
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == dr.run_id).all()
        assert sorted(e.asset.name for e in events) == [
            "ncbi-disease-classifier@champion",
            "ncbi-disease-ner@champion",
        ]


def test_nothing_changed_skips_training_and_says_why(repo, dagbag, settings_env):
    settings_env()
    before = {m: versions(m) for m in ("classifier", "ner")}
    dr, states, summary = run_dag(dagbag, TINY)
    assert str(dr.state) == "success", states
    for model in ("classifier", "ner"):
        assert states[f"{model}.plan"] == "success"
        after_plan = ("train", "train_result", "champion", "rescore_champion", "gate", "register", "promote")
        assert {states[f"{model}.{t}"] for t in after_plan} == {"skipped"}
        reason = summary["models"][model]["reason"]
        assert "nothing changed since champion v1" in reason and "training skipped" in reason
        assert versions(model) == before[model]


def test_failed_gate_registers_a_challenger_and_keeps_the_champion(repo, dagbag, settings_env, tmp_path):
    import yaml

    from tasks.gates import POLICY_FILE

    policy = yaml.safe_load(POLICY_FILE.read_text())
    policy["classifier"]["floor"]["tiny"] = 1.0  # a random-init tiny model never reaches F1 1.0
    strict = tmp_path / "strict-gates.yaml"
    strict.write_text(yaml.safe_dump(policy))
    settings_env(NCBI_RETRAIN_GATE_POLICY=str(strict))
    dr, states, summary = run_dag(dagbag, {**TINY, "models": "classifier", "force": True})
    assert str(dr.state) == "success", states
    assert states["classifier.gate"] == "success" and states["classifier.promote"] == "skipped"
    assert states["classifier.approval"] == "skipped"
    assert states["ner.train"] == "skipped"
    v1, v2 = versions("classifier")
    assert champion("classifier") == v1["version"] == "1"
    assert v2["gate"] == "failed" and v2["aliases"] == ["challenger"]
    m = summary["models"]["classifier"]
    assert m["gate"] == "failed" and not m["promoted"]
    assert "not promoted: gate failed" in m["reason"] and "floor 1.0000" in m["reason"]
    assert "not selected" in summary["models"]["ner"]["reason"]


def test_training_crash_fails_the_run_cleanly(repo, dagbag, settings_env, tmp_path, webhook, capfd):
    url, received = webhook
    venv = wrapper_venv(
        tmp_path, 'echo "loading model" >&2; echo "CUDA out of memory (simulated)" >&2; exit 137'
    )
    settings_env(NCBI_RETRAIN_TRAIN_VENV=str(venv), NCBI_RETRAIN_WEBHOOK_URL=url)
    before = versions("classifier")
    dr, states, summary = run_dag(dagbag, {**TINY, "models": "classifier", "force": True})
    assert str(dr.state) == "failed"
    assert states["classifier.train"] == "failed"
    after_train = ("train_result", "champion", "gate", "register", "promote")
    assert {states[f"classifier.{t}"] for t in after_train} == {"upstream_failed"}
    assert versions("classifier") == before and champion("classifier") == "1"
    from tasks.pipeline.rundir import run_dir

    md = (run_dir(dr.run_id) / "failure.md").read_text()
    assert "failed task: `classifier.train`" in md and "non-zero exit code 137" in md
    # The job's output streamed into the task's log as it ran (the BashOperator logs every line).
    assert "CUDA out of memory (simulated)" in capfd.readouterr().out
    (posted,) = received
    assert posted["event"] == "dag_run_failed" and posted["failed_task"] == "classifier.train"
    assert posted["dag_run_id"] == dr.run_id
    assert summary is None


def test_training_crash_then_retry_registers_one_version(repo, dagbag, settings_env, tmp_path):
    marker = tmp_path / "crashed-once"
    venv = wrapper_venv(
        tmp_path, f'if [ ! -e {marker} ]; then touch {marker}; echo "killed" >&2; exit 137; fi'
    )
    settings_env(NCBI_RETRAIN_TRAIN_VENV=str(venv))
    before = versions("classifier")
    dr, states, summary = run_dag(dagbag, {**TINY, "models": "classifier", "force": True})
    assert str(dr.state) == "success", states
    (ti,) = [t for t in dr.get_task_instances() if t.task_id == "classifier.train"]
    assert ti.try_number == 2
    after = versions("classifier")
    assert len(after) == len(before) + 1  # the crashed attempt left no version behind
    assert after[-1]["run_id"] == summary["models"]["classifier"]["run_id"]
    from tasks.pipeline.rundir import run_dir

    work = run_dir(dr.run_id) / "classifier"
    assert not (work / "try-1" / "metrics.json").exists() and (work / "try-2" / "metrics.json").exists()
    assert os.environ.get("NCBI_RETRAIN_TRAIN_VENV") == str(venv)


def test_new_data_rescores_the_champion_before_the_gate(repo, dagbag, settings_env):
    """On a new data version the champion's recorded metrics are stale: the champion is re-scored on the
    new test split (`evaluate --model models:/NAME@champion` through the launcher) and gated on that."""
    import subprocess

    from tasks.versioning import publish, pull

    settings_env()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "checkout", "-q", "v1", "--", "data.dvc"], cwd=repo["repo"], check=True)
    pull(repo["repo"])
    for name in ("train.tsv", "train.ids"):  # one abstract fewer: a new, valid data version
        path = repo["repo"] / "data" / "tc3" / name
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))
    v2 = publish(repo["repo"])
    subprocess.run([*git, "commit", "-q", "-am", "data: v2"], cwd=repo["repo"], check=True)
    subprocess.run([*git, "tag", "v2"], cwd=repo["repo"], check=True)
    champion_before = champion("classifier")

    dr, states, summary = run_dag(dagbag, {**TINY, "data_revision": "v2", "models": "classifier"})
    assert str(dr.state) == "success", states
    assert states["classifier.train"] == "success" and states["classifier.rescore_champion"] == "success"
    from tasks.pipeline.rundir import run_dir

    rescored = json.loads((run_dir(dr.run_id) / "classifier" / "champion-metrics.json").read_text())
    assert rescored["data_version"] == v2 and rescored["model"].endswith("@champion")
    decision = json.loads((run_dir(dr.run_id) / "classifier" / "decision.json").read_text())
    assert decision["champion_value"] == pytest.approx(rescored["metrics"]["macro_f1"])
    m = summary["models"]["classifier"]
    assert m["champion_value"] == pytest.approx(rescored["metrics"]["macro_f1"])
    assert "data_version" in m["plan"] and champion_before is not None
    pull(repo["repo"], "v1")
