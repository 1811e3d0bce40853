"""Scale-out, proven: `ncbi_retrain` on CeleryExecutor with Redis as the broker and two Celery workers,
the training and re-scoring tasks routed to the one that consumes the `gpu` queue.

The same components as `make up EXECUTOR=celery` (scripts/stack.sh): Debian's redis-server on
127.0.0.1 without persistence, `airflow celery worker -q default` and `-q gpu`, each with
`--skip-serve-logs` and its own recorded host name (`NCBI_RETRAIN_WORKER_NAME` through
`[core] hostname_callable = tasks.settings.worker_hostname`), which REST shows per task instance.
"""

from __future__ import annotations

import os
import shutil

import pytest
from stack_helpers import Component, Rest, airflow_env, core_components, redis_server, running

pytestmark = pytest.mark.integration
RUN_DEADLINE_S = 1500  # a bound for a broken stack, not a performance assertion
TRAIN_TASKS = {"classifier.train", "ner.train"}
GPU_TASKS = TRAIN_TASKS | {"classifier.rescore_champion", "ner.rescore_champion"}  # queue gpu


def _worker(name: str, queue: str, concurrency: int) -> Component:
    return Component(
        ["celery", "worker", "-q", queue, "-c", str(concurrency), "-H", f"{name}@%h", "--skip-serve-logs"],
        env={"NCBI_RETRAIN_WORKER_NAME": name},
    )


@pytest.fixture
def celery_stack(postgres, retrain_env, tmp_path):
    """Redis + the four components on CeleryExecutor + a default-queue and a gpu-queue worker."""
    if shutil.which("redis-server") is None:  # .ci/run installs it: there a missing one is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)("redis-server is not installed (apt-get)")
    pytest.importorskip("airflow.providers.celery", reason="the `airflow` extra's Celery provider")
    with redis_server(tmp_path) as broker:
        stack = airflow_env(
            postgres,
            tmp_path,
            "CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=broker,
            AIRFLOW__CORE__HOSTNAME_CALLABLE="tasks.settings.worker_hostname",
            NCBI_RETRAIN_GPU_QUEUE="gpu",
            **retrain_env,
        )
        components = core_components(stack) | {
            "worker-default": _worker("worker-default", "default", 2),
            "worker-gpu": _worker("worker-gpu", "gpu", 1),
        }
        with running(stack, components, tmp_path) as live:
            yield stack, live


def test_celery_run_trains_on_the_gpu_worker(celery_stack, project):
    stack, live = celery_stack
    rest = Rest(stack.url, stack.password)
    rest.wait_dag("ncbi_retrain")
    status, dag = rest("PATCH", "dags/ncbi_retrain", {"is_paused": False})
    assert status == 200 and dag["is_paused"] is False

    # force: train even if another test of this session already made the same champion (shared MLflow)
    conf = {"profile": "tiny", "epochs": 1, "force": True}
    status, run = rest("POST", "dags/ncbi_retrain/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, run
    run = rest.wait_run("ncbi_retrain", run["dag_run_id"], RUN_DEADLINE_S)
    tis = rest.task_instances("ncbi_retrain", run["dag_run_id"])
    states = {k: t["state"] for k, t in tis.items()}
    detail = [p.read_text() for p in (project["repo"] / "runs").glob("*/failure.md")]
    assert run["state"] == "success", (states, detail)
    assert {states[t] for t in TRAIN_TASKS} == {"success"}, states
    live.check_alive()

    # Re-scoring may skip itself (no champion on other data): it still starts on its queue's worker.
    hosts = {k: (t["queue"], t["hostname"]) for k, t in tis.items() if t["hostname"]}
    assert set(hosts) >= TRAIN_TASKS, hosts
    for task_id in set(hosts) & GPU_TASKS:
        assert hosts[task_id] == ("gpu", "worker-gpu"), (task_id, hosts)
    for task_id in set(hosts) - GPU_TASKS:
        assert hosts[task_id] == ("default", "worker-default"), (task_id, hosts)
    # Every component, the workers included, listens on loopback only (no log server on 0.0.0.0).
    listening = live.listening()
    assert {(name, port) for name, _, port in listening} >= {("api-server", stack.port)}
    assert {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening
