"""DAG-level faults on the real stack: Airflow's four components on PostgreSQL (LocalExecutor, as
tests/integration/test_airflow_stack.py), an MLflow server of this module on PostgreSQL, and a git + DVC
project with two committed data revisions; `ncbi_retrain` trains for real (tiny profile, one epoch, the
small corpus slice, the training env through the local launcher).

- **the scheduler SIGKILLed while a training task runs**, then started again: its process alone (what
  the kernel's OOM killer does) or its whole process group (a crashed container or host);
- **two DAG runs on different data revisions at once** (`NCBI_RETRAIN_MAX_ACTIVE_RUNS=2`).

One stack serves the module (starting it costs about a minute); each test triggers its own runs and
reads only what they made (by DAG run id). The `ncbi_champion` guard is paused here: its smoke jobs
would take the `gpu` pool's one slot between trainings (the champion loop has its own test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from dvc_helpers import checkout_state, tree_bytes
from fault_helpers import assert_history_replays
from registry_helpers import use_store
from servers import MlflowProcess, PostgresCluster
from stack_helpers import AirflowEnv, Rest, airflow_env, core_components, running, start, stop

ROOT = Path(__file__).resolve().parents[2]
DAG = "ncbi_retrain"
RUN_DEADLINE_S = 1200  # a bound for a broken stack, not a performance assertion
TRAIN_START_DEADLINE_S = 600
RESET_DEADLINE_S = 300  # the dead scheduler's try is reset within ~45 s with the settings below
NAMES = {"classifier": "ncbi-disease-classifier", "ner": "ncbi-disease-ner"}
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}
# The second revision: fewer abstracts and sentences in every split, so the data differs in content and
# a test split's size tells which revision a model was scored on (v1 is dag_helpers' default slice).
V2_PER_CLASS = {"train": 22, "dev": 5, "test": 7}
V2_SENTENCES = {"train": 140, "dev": 35, "test": 35}

# Airflow's crash detection, lowered from its defaults for the test (through AIRFLOW__SCHEDULER__*):
SCHEDULER_TIMEOUTS = {
    # How often a scheduler looks for task instances of schedulers that stopped heartbeating (default 300 s):
    # after a restart, the dead scheduler's running tasks are reset within this interval.
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
    # When a scheduler counts as dead (default 30 s, kept): at 10 s the *live* scheduler of this loaded
    # 2-core machine missed its own heartbeat now and then, declared itself dead and reset its own running
    # tasks (they were killed and retried until the retries ran out).
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
    # A running task whose supervisor stopped heartbeating fails (or retries) after this (default 300 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
}


# ------------------------------------------------------------------ the stack
@dataclass
class Revision:
    """One committed data revision of the project: its git tag, DVC data version and files."""

    tag: str
    data_version: str
    files: dict[str, bytes]

    def test_ids(self) -> list[str]:
        return self.files["tc3/test.ids"].decode().splitlines()


class Scheduler:
    """The stack's scheduler, which a test SIGKILLs and starts again.

    Processes a killed scheduler leaves behind are remembered (as psutil handles, safe against PID reuse)
    and killed at the end of the module.
    """

    def __init__(self, stack: AirflowEnv, logs: Path):
        self.stack, self.logs = stack, logs
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.killed: list[Any] = []  # psutil.Process of every killed scheduler's descendants

    def start(self) -> None:
        self.starts += 1
        comp = core_components(self.stack, ["scheduler"])["scheduler"]
        self.proc = start(self.stack, comp, self.logs / f"scheduler-{self.starts}.log")

    def kill(self, whole_group: bool) -> list[Any]:
        """SIGKILL the scheduler's process, or its whole process group (the LocalExecutor's workers and
        their task supervisors are in it); returns its descendants as they were just before."""
        import psutil

        assert self.proc is not None and self.proc.poll() is None, "the scheduler is not running"
        descendants = psutil.Process(self.proc.pid).children(recursive=True)
        if whole_group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.killed += descendants
        return descendants

    def stop(self) -> None:
        import psutil

        if self.proc is not None:
            stop({"scheduler": self.proc})
        for p in self.killed:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


@dataclass
class DagStack:
    """The running stack, and the REST, MLflow and file views the tests read a run through."""

    airflow: AirflowEnv
    rest: Rest
    scheduler: Scheduler
    mlflow: MlflowProcess
    repo: Path
    revisions: dict[str, Revision]  # by tag (data-v2 is HEAD)
    logs: Path

    def trigger(self, **conf: Any) -> str:
        """A manual run of ncbi_retrain (tiny profile, one epoch, forced past the skip rule)."""
        conf = {"profile": "tiny", "epochs": 1, "force": True, "promote": "auto", **conf}
        status, run = self.rest("POST", f"dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})
        assert status == 200, run
        return run["dag_run_id"]

    def run_path(self, run_id: str, *more: str) -> str:
        return "/".join([f"dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}", *more])

    def task_instances(self, run_id: str) -> dict[str, dict]:
        status, got = self.rest("GET", self.run_path(run_id, "taskInstances"))
        assert status == 200, got
        return {t["task_id"]: t for t in got["task_instances"]}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        status, got = self.rest("GET", self.run_path(run_id, "taskInstances", task_id, "tries"))
        assert status == 200, got
        return got["task_instances"]

    def xcom(self, run_id: str, task_id: str) -> Any:
        path = self.run_path(run_id, "taskInstances", task_id, "xcomEntries", "return_value")
        status, got = self.rest("GET", path + "?deserialize=true")
        assert status == 200, got
        value = got["value"]
        return json.loads(value) if isinstance(value, str) else value

    def run_dir(self, run_id: str) -> Path:
        from tasks.pipeline.rundir import safe_name

        return self.repo / "runs" / safe_name(run_id)

    def wait(self, run_id: str) -> dict:
        """Until the run ends; fails with each task's state and the run's failure summary if it did not
        succeed."""
        run = self.rest.wait_run(DAG, run_id, RUN_DEADLINE_S)
        if run["state"] != "success":
            states = {k: t["state"] for k, t in self.task_instances(run_id).items()}
            failure = self.run_dir(run_id) / "failure.md"
            detail = failure.read_text() if failure.exists() else "(no failure.md)"
            pytest.fail(f"run {run_id} ended {run['state']}: {states}\n{detail}\nlogs: {self.logs}")
        return run


def _revision(repo: Path, data: Path, tag: str) -> Revision:
    from dag_helpers import commit_data, git

    from tasks.versioning import publish

    if data != repo / "data":
        shutil.rmtree(repo / "data")
        shutil.copytree(data, repo / "data")
    version = publish(repo)
    commit_data(repo, f"data {tag}")
    git(repo, "tag", tag)
    return Revision(tag, version, tree_bytes(repo / "data"))


@pytest.fixture(scope="module")
def dag_stack(
    postgres: PostgresCluster, imported_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DagStack]:
    """The project (tags data-v1, data-v2 = HEAD), an MLflow server, the four Airflow components with
    ncbi_retrain unpaused and at most two runs at once."""
    from dag_helpers import make_project, small_slice

    from tasks.settings import get_settings

    train_cli = ROOT / ".venv-train" / "bin" / "ncbi-retrain"
    if not train_cli.exists():
        pytest.skip("needs .venv-train (run `make setup`)")
    base = tmp_path_factory.mktemp("dag-faults")
    repo, remote = base / "repo", base / "dvc-remote"
    v2_data = small_slice(imported_data, base / "v2-data", V2_PER_CLASS, V2_SENTENCES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NCBI_RETRAIN_PROJECT_DIR", str(repo))
        mp.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(remote))
        mp.delenv("NCBI_RETRAIN_DVC_REMOTE", raising=False)
        get_settings.cache_clear()
        make_project(imported_data, repo)  # data/ = the default slice: v1
        v1 = _revision(repo, repo / "data", "data-v1")
        v2 = _revision(repo, v2_data, "data-v2")
    get_settings.cache_clear()
    assert v1.data_version != v2.data_version

    mlflow = MlflowProcess(
        postgres.create_database(f"dag_faults_{uuid.uuid4().hex[:8]}"), base / "mlflow", base / "mlflow.log"
    )
    env = {
        "MLFLOW_TRACKING_URI": mlflow.url,
        "NCBI_RETRAIN_PROJECT_DIR": str(repo),
        "NCBI_RETRAIN_DVC_REMOTE_URL": str(remote),
        "NCBI_RETRAIN_TRAIN_VENV": str(ROOT / ".venv-train"),
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "NCBI_RETRAIN_SCHEDULE": "none",  # only the runs the tests trigger
        "NCBI_RETRAIN_MAX_ACTIVE_RUNS": "2",
        "NCBI_RETRAIN_RETRY_DELAY_S": "2",
        **SCHEDULER_TIMEOUTS,
    }
    logs = base / "logs"
    logs.mkdir()
    scheduler: Scheduler | None = None
    try:
        mlflow.start()
        stack = airflow_env(postgres, base, "LocalExecutor", **env)
        scheduler = Scheduler(stack, logs)
        others = core_components(stack, ["api-server", "dag-processor", "triggerer"])
        with running(stack, others, logs):
            scheduler.start()
            rest = Rest(stack.url, stack.password)
            rest.wait_dag(DAG)
            status, dag = rest("PATCH", f"dags/{DAG}", {"is_paused": False})
            assert status == 200 and dag["is_paused"] is False, dag
            rest.wait_dag("ncbi_champion")
            status, guard = rest("PATCH", "dags/ncbi_champion", {"is_paused": True})
            assert status == 200 and guard["is_paused"] is True, guard
            yield DagStack(stack, rest, scheduler, mlflow, repo, {"data-v1": v1, "data-v2": v2}, logs)
    finally:
        if scheduler is not None:
            scheduler.stop()
        mlflow.stop()


# ------------------------------------------------------------------ what the tests look at
def dag_run_processes(run_id: str) -> list[Any]:
    """Live processes of this DAG run's jobs (the job environment names the run)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if p.environ().get("NCBI_RETRAIN_DAG_RUN_ID") == run_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def client(stack: DagStack) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(stack.mlflow.url, stack.mlflow.url)


def mlflow_runs(stack: DagStack, model: str, run_id: str) -> list[Any]:
    """MLflow runs the training jobs of this DAG run started for `model`."""
    exp = client(stack).get_experiment_by_name(NAMES[model])
    where = f"tags.dag_run_id = '{run_id}'"
    return [] if exp is None else client(stack).search_runs([exp.experiment_id], where)


def versions_of_run(stack: DagStack, model: str, run_id: str) -> list[Any]:
    """Registered versions of `model` that this DAG run made."""
    versions = client(stack).search_model_versions(f"name='{NAMES[model]}'")
    return [v for v in versions if v.tags.get("dag_run_id") == run_id]


def champion(stack: DagStack, model: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client(stack).get_model_version_by_alias(NAMES[model], "champion").version
    except MlflowException:  # no registered model or no alias yet
        return None


def alive(p: Any) -> bool:
    """Running and not a zombie (a killed child its parent has not reaped yet)."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def described(procs: list[Any]) -> list[str]:
    """`pid command` of each process still alive."""
    import psutil

    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if alive(p):
                out.append(f"{p.pid} {' '.join(p.cmdline()[:4])[:120]}")
    return out


def training_jobs(run_id: str, model: str) -> list[Any]:
    """Live `ncbi-retrain train MODEL` processes of this DAG run."""
    return [p for p in dag_run_processes(run_id) if p.cmdline()[2:4] == ["train", model]]


def wait_for_training(stack: DagStack, run_id: str, model: str) -> tuple[Any, str]:
    """Until `model`'s training job of this run has opened its MLflow run (NeMo imported, data read,
    training under way); returns the job's process and that MLflow run's id."""
    end = time.monotonic() + TRAIN_START_DEADLINE_S
    while True:
        jobs = training_jobs(run_id, model)
        running = [r.info.run_id for r in mlflow_runs(stack, model, run_id) if r.info.status == "RUNNING"]
        if jobs and running:
            return jobs[0], running[0]
        states = {k: t["state"] for k, t in stack.task_instances(run_id).items()}
        assert time.monotonic() < end, f"{model} never started training: {states}"
        assert "failed" not in states.values(), f"the run failed before training: {states}"
        time.sleep(1)


def assert_one_version_per_run(stack: DagStack, run_id: str, models: list[str]) -> dict[str, Any]:
    """Nothing duplicated: each trained model has exactly one version from this DAG run, registered from
    the MLflow run of the training try that succeeded (train_result's XCom), which FINISHED; its try folder
    is `try-<the task's final try>`. Returns the versions by model."""
    tis = stack.task_instances(run_id)
    found = {}
    for model in NAMES:
        versions = versions_of_run(stack, model, run_id)
        if model not in models:
            assert versions == [], f"{model} was not trained in {run_id} but has versions {versions}"
            continue
        assert len(versions) == 1, f"{model}: {len(versions)} versions from {run_id}: {versions}"
        trained = stack.xcom(run_id, f"{model}.train_result")
        assert versions[0].run_id == trained["run_id"], (versions[0], trained)
        assert client(stack).get_run(trained["run_id"]).info.status == "FINISHED"
        final_try = tis[f"{model}.train"]["try_number"]
        metrics = Path(trained["artifacts"]["metrics"])
        assert metrics.parent == stack.run_dir(run_id) / model / f"try-{final_try}", (metrics, final_try)
        found[model] = versions[0]
    return found


def assert_nothing_left_running(stack: DagStack, run_id: str, model: str) -> None:
    """Every training try of the run ended its MLflow run (a killed one FAILED, not RUNNING forever) and
    left either its complete try folder or nothing (no staging folder)."""
    runs = {r.info.run_id: r.info.status for r in mlflow_runs(stack, model, run_id)}
    assert "RUNNING" not in runs.values(), runs
    partial = list((stack.run_dir(run_id) / model).glob(".try-*.partial-*"))
    assert partial == [], partial


def assert_no_task_left_running(stack: DagStack, run_id: str) -> None:
    states = {k: t["state"] for k, t in stack.task_instances(run_id).items()}
    assert set(states.values()) <= TERMINAL, f"tasks not finished in {run_id}: {states}"


# ------------------------------------------------------------------ the faults
@pytest.mark.parametrize("whole_group", [False, True], ids=["process", "process-group"])
def test_scheduler_killed_mid_training_then_restarted(
    dag_stack: DagStack, whole_group: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler is SIGKILLed while `classifier.train` runs its job, and started again.

    Airflow 3.3 with the LocalExecutor: the job runs under a task supervisor inside one of the
    scheduler's executor workers. A new scheduler cannot adopt another's LocalExecutor tasks: once the
    dead scheduler's heartbeat is stale it resets them (the try goes to the task's history, and the next
    try is scheduled at once). Killed alone, the scheduler leaves its workers running: the supervisor goes
    on heartbeating until the reset, is then told its try is gone and SIGTERMs the job. Killed with its
    process group, the supervisor dies; the task runner and the job (each in its own process group)
    survive as orphans until they next write to their dead parent. Either way the next try waits for the
    earlier try's job to end (the job lock), trains in its own try folder and MLflow run, the run
    completes, and exactly one version is registered for it.
    """
    stack = dag_stack
    use_store(stack.mlflow.url, monkeypatch)
    name = NAMES["classifier"]
    champion_before = champion(stack, "classifier")
    checkout_before = checkout_state(stack.repo)

    run_id = stack.trigger(models="classifier")
    job, first_run = wait_for_training(stack, run_id, "classifier")
    first_try = stack.task_instances(run_id)["classifier.train"]["try_number"]
    job_group = os.getpgid(job.pid)  # the BashOperator's session: bash and the training job
    # A real training runs for hours, so it is still running when the restarted scheduler deals with its
    # try; the tiny one would often finish first. So the job is paused from just before the crash until
    # the new scheduler has reset the try, then resumed.
    os.killpg(job_group, signal.SIGSTOP)
    try:
        killed = stack.scheduler.kill(whole_group)
        time.sleep(5)  # the crash lasts a moment; a supervisor that survived it goes on heartbeating
        print(f"5 s after the kill, alive: {described(killed)}")  # what Airflow left of it (-s shows it)
        stack.scheduler.start()
        end = time.monotonic() + RESET_DEADLINE_S
        while stack.task_instances(run_id)["classifier.train"]["try_number"] == first_try:
            assert time.monotonic() < end, "the restarted scheduler never reset the dead scheduler's try"
            time.sleep(2)
    finally:
        os.killpg(job_group, signal.SIGCONT)
    # Never two training jobs of the task at once (an orphaned trainer would hold the GPU beside its retry).
    while stack.rest("GET", stack.run_path(run_id))[1].get("state") not in ("success", "failed"):
        retry = [p for p in training_jobs(run_id, "classifier") if p.pid != job.pid]
        assert not (retry and alive(job)), f"the killed try's job {job.pid} trains beside its retry"
        time.sleep(2)
    stack.wait(run_id)
    print(f"tries: {[(t['try_number'], t['state']) for t in stack.tries(run_id, 'classifier.train')]}")

    # Clean end: no task left running, no job process of the run left behind, no MLflow run left RUNNING,
    # no half-written try folder.
    assert_no_task_left_running(stack, run_id)
    assert not alive(job), f"the killed try's training job {job.pid} is still running"
    assert dag_run_processes(run_id) == []
    assert_nothing_left_running(stack, run_id, "classifier")
    tries = stack.tries(run_id, "classifier.train")
    assert [t["try_number"] for t in tries] == list(range(first_try, first_try + len(tries))), tries
    assert len(tries) >= 2 and tries[-1]["state"] == "success", tries  # the reset try was retried
    assert all(t["state"] != "success" for t in tries[:-1]), tries

    # Nothing duplicated: one version for the run, from the try that succeeded, in its own try folder;
    # the reset try had its own MLflow run (ended, not registered), the retry another.
    version = assert_one_version_per_run(stack, run_id, ["classifier"])["classifier"]
    runs = {r.info.run_id: r.info.status for r in mlflow_runs(stack, "classifier", run_id)}
    assert 2 <= len(runs) <= len(tries), runs
    assert first_run != version.run_id and runs[first_run] in ("FAILED", "FINISHED"), (first_run, runs)
    # Nothing lost: the champion is this version if it was promoted, else what it was; the alias history
    # replays to the registry's aliases.
    summary = json.loads((stack.run_dir(run_id) / "summary.json").read_text())["models"]["classifier"]
    assert summary["version"] == version.version and summary["run_id"] == version.run_id, summary
    assert champion(stack, "classifier") == (version.version if summary["promoted"] else champion_before)
    assert_history_replays(name)
    assert checkout_state(stack.repo) == checkout_before
    # The final message: the run's summary names the version and what became of it.
    assert f"v{version.version}" in summary["reason"], summary["reason"]


def test_two_runs_on_different_data_revisions_at_once(
    dag_stack: DagStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs of ncbi_retrain, one on data-v1 and one on data-v2, triggered together and running at the
    same time (NCBI_RETRAIN_MAX_ACTIVE_RUNS=2; the gpu pool serialises only the training jobs): each
    materialises its revision, trains the classifier on it, scores the candidate (and the champion when it
    was scored on other data) on its test split and registers a version tagged with its data version; the
    checkout is untouched. (The classifier alone: the NER tagger reads the same per-run folder, and two
    more trainings would add minutes to CI.)"""
    stack = dag_stack
    use_store(stack.mlflow.url, monkeypatch)
    status, dag = stack.rest("GET", f"dags/{DAG}/details")
    assert status == 200 and dag["max_active_runs"] == 2, dag
    checkout_before = checkout_state(stack.repo)

    runs = {tag: stack.trigger(data_revision=tag, models="classifier") for tag in ("data-v1", "data-v2")}
    finished = {tag: stack.wait(run_id) for tag, run_id in runs.items()}

    # At once: each run started before the other ended.
    starts = [datetime.fromisoformat(r["start_date"]) for r in finished.values()]
    ends = [datetime.fromisoformat(r["end_date"]) for r in finished.values()]
    assert max(starts) < min(ends), finished

    for tag, run_id in runs.items():
        rev = stack.revisions[tag]
        run_dir = stack.run_dir(run_id)
        # The run's own data folder holds exactly its revision's files.
        assert tree_bytes(run_dir / "data") == rev.files, f"{run_id}: data is not {tag}'s"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["data_version"] == rev.data_version, (tag, summary)
        assert_nothing_left_running(stack, run_id, "classifier")
        versions = assert_one_version_per_run(stack, run_id, ["classifier"])
        for model, version in versions.items():
            assert version.tags["data_version"] == rev.data_version, (tag, model, version.tags)
            # Scored on its own revision's test split (v2's is smaller): the candidate, and the
            # champion when it was re-scored for this run.
            scored = [Path(stack.xcom(run_id, f"{model}.train_result")["artifacts"]["metrics"])]
            scored += [p for p in [run_dir / model / "champion-metrics.json"] if p.exists()]
            for path in scored:
                doc = json.loads(path.read_text())
                assert doc["data_version"] == rev.data_version, (tag, path, doc["data_version"])
                assert [it["id"] for it in doc["items"]] == rev.test_ids(), (tag, path)
            assert summary["models"][model]["version"] == version.version, summary

    # Nothing lost: both runs' alias moves are in the history, which replays to the aliases.
    assert_history_replays(NAMES["classifier"])
    assert checkout_state(stack.repo) == checkout_before
    for run_id in runs.values():
        assert_no_task_left_running(stack, run_id)
