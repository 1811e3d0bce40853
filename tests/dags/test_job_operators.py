"""The training-env job as each launcher's Airflow operator (`ncbi_common.jobs.job_operator`).

- local: the real BashOperator, rendered and executed with a stand-in training venv (a bash script as
  `bin/ncbi-retrain`): the job's env and argv, one folder per try, the `--json` line as its return value
  (XCom), the skip; the whole DAG with the real training env runs in test_retrain_runs.py;
- kubernetes: the KubernetesPodOperator's rendered pod (`build_pod_request_obj`), since no cluster
  exists here: GPU limit, env, mounts, command, node selector, tolerations, the reattach labels;
- docker: the DockerOperator's rendered arguments (running it is the container tier's job).
"""

from __future__ import annotations

import json
import stat
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
if str(DAGS) not in sys.path:  # as Airflow's dag-processor and task runner put the DAG folder
    sys.path.append(str(DAGS))


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    """`setenv(**kw)`: NCBI_RETRAIN_* settings for one test (project in tmp_path), cache cleared."""
    from tasks.settings import get_settings

    def setenv(**kw: str):
        monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(tmp_path / "project"))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store/mlflow.db")
        monkeypatch.setenv("NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "store" / "artifacts"))
        for k, v in kw.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return get_settings()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


def plan_record(settings, model: str = "ner", train: bool = True) -> dict:
    """What the `plan` task returns: a Plan with the job (argv + env) for this launcher."""
    from tasks.pipeline.jobs import train_job
    from tasks.vocab import DataRef, Plan, RunParams

    data = DataRef(data_dir=str(settings.project_dir / "data"), data_version="d" * 32 + ".dir")
    job = train_job(model, RunParams(profile="tiny", epochs=1), data, "manual__1", "c0ffee", settings)
    return Plan(
        model=model,
        train=train,
        reason="ner has no champion yet" if train else "ner: nothing changed; training skipped",
        config_fingerprint="f" * 12,
        git_commit="c0ffee",
        job=job if train else None,
    ).dump()


def build(settings, record: dict):
    """A one-model DAG: a `plan` task returning `record`, then the launcher's job operator."""
    from airflow.sdk import DAG, task
    from ncbi_common.jobs import MACROS, job_operator

    with DAG(
        "job_operator_test", schedule=None, start_date=datetime(2026, 1, 1), user_defined_macros=MACROS
    ) as dag:

        @task
        def plan() -> dict:
            return record

        op = job_operator("train", plan(), name="train-ner", settings=settings, pool="gpu")
    return dag, op


def render(dag, op, record: dict, try_number: int = 2) -> dict:
    """Render `op`'s templates as the task runner does, with a stand-in task instance."""
    ti = SimpleNamespace(
        dag_id=dag.dag_id,
        task_id=op.task_id,
        run_id="manual__1",
        map_index=-1,
        try_number=try_number,
        xcom_pull=lambda task_ids, **_: record if task_ids == "plan" else None,
    )
    context = {"ti": ti, "task_instance": ti, "run_id": "manual__1", "dag": dag, "task": op}
    op.render_template_fields(context)
    return context


# ------------------------------------------------------------------------------------------- kubernetes
def test_kubernetes_pod_runs_the_cli_on_a_gpu_node(settings_env, monkeypatch):
    pytest.importorskip("kubernetes")
    from kubernetes.client import ApiClient

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes"}))
    settings = settings_env(
        NCBI_RETRAIN_LAUNCHER="kubernetes",
        NCBI_RETRAIN_TRAINER_IMAGE="registry.example/ncbi-retrain-trainer:1.0",
        NCBI_RETRAIN_GPUS="1",
        NCBI_RETRAIN_K8S_NAMESPACE="ml",
        NCBI_RETRAIN_K8S_NODE_SELECTOR='{"gpu": "a100", "count": "8"}',
        NCBI_RETRAIN_K8S_ENV_SECRET="ncbi-retrain-credentials",
    )
    record = plan_record(settings)
    dag, op = build(settings, record)
    assert op.reattach_on_restart and op.durable  # a retry after a lost worker reattaches to the pod
    assert op.deferrable and op.do_xcom_push and op.get_logs
    assert op.on_finish_action.value == "delete_pod" and op.pool == "gpu"
    context = render(dag, op, record, try_number=2)
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context, dry_run=True))

    spec = pod["spec"]
    base = next(c for c in spec["containers"] if c["name"] == "base")
    assert base["image"] == "registry.example/ncbi-retrain-trainer:1.0"
    job = record["job"]
    out = f"{job['out_dir']}/try-2"  # this try's own folder
    assert base["command"] == ["ncbi-retrain"] and base["args"] == [*job["argv"], "--out", out]
    assert base["args"][:2] == ["train", "ner"] and "trainer.max_epochs=1" in base["args"]
    env = {e["name"]: e["value"] for e in base["env"]}
    assert env == job["env"]
    assert env["NCBI_RETRAIN_RESULT_FILE"] == "/airflow/xcom/return.json"  # what the sidecar pushes
    assert env["NCBI_RETRAIN_DAG_RUN_ID"] == "manual__1" and env["NCBI_RETRAIN_GIT_COMMIT"] == "c0ffee"
    assert base["envFrom"] == [{"secretRef": {"name": "ncbi-retrain-credentials"}}]
    assert not any("PASSWORD" in name for name in env)
    resources = base["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in resources["requests"]
    assert spec["nodeSelector"] == {"gpu": "a100", "count": "8"}  # strings stay strings
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["restartPolicy"] == "Never"  # retries belong to the Airflow task
    mounts = {m["mountPath"]: m for m in base["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    project = str(settings.project_dir.resolve())
    assert volumes[mounts[project]["name"]]["hostPath"] == {"path": project, "type": "DirectoryOrCreate"}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"] == {"medium": "Memory"}
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])
    labels = pod["metadata"]["labels"]
    assert labels["ncbi-retrain/job"] == "train-ner" and pod["metadata"]["namespace"] == "ml"
    # What a reattaching retry searches by: this task instance's labels, whatever its try number.
    assert {labels[k] for k in ("dag_id", "task_id", "run_id", "try_number")} == {
        "job_operator_test",
        "train",
        "manual__1",
        "2",
    }
    selector = op._build_find_pod_label_selector(context)
    assert "task_id=train" in selector and "run_id=manual__1" in selector and "try_number" not in selector


def test_kubernetes_pod_mounts_a_shared_claim_and_cpu_jobs_ask_no_gpu(settings_env, monkeypatch):
    pytest.importorskip("kubernetes")
    from kubernetes.client import ApiClient

    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes"}))
    settings = settings_env(NCBI_RETRAIN_LAUNCHER="kubernetes", NCBI_RETRAIN_K8S_VOLUME_CLAIM="ncbi-work")
    record = plan_record(settings)
    dag, op = build(settings, record)
    pod = ApiClient().sanitize_for_serialization(
        op.build_pod_request_obj(render(dag, op, record), dry_run=True)
    )
    base = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    assert "nvidia.com/gpu" not in base["resources"]["limits"]
    project = str(settings.project_dir.resolve())
    (mount,) = [m for m in base["volumeMounts"] if m["mountPath"] == project]
    assert mount["subPath"] == project.lstrip("/")
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": "ncbi-work"}


# ------------------------------------------------------------------------------------------- docker
def test_docker_operator_renders_the_job(settings_env):
    pytest.importorskip("docker")
    settings = settings_env(
        NCBI_RETRAIN_LAUNCHER="docker",
        NCBI_RETRAIN_DOCKER_URL="unix:///run/podman/podman.sock",
        NCBI_RETRAIN_DOCKER_MEM_LIMIT="12g",
        NCBI_RETRAIN_DOCKER_NETWORK="ncbi-retrain",
        NCBI_RETRAIN_GPUS="2",
    )
    record = plan_record(settings)
    dag, op = build(settings, record)
    render(dag, op, record, try_number=3)
    job = record["job"]
    assert op.command == [*job["argv"], "--out", f"{job['out_dir']}/try-3"]
    assert op.environment == job["env"] and op.environment["NCBI_RETRAIN_IMAGE"] == settings.trainer_image
    assert op.docker_url == "unix:///run/podman/podman.sock" and op.image == settings.trainer_image
    assert (op.mem_limit, op.network_mode, op.auto_remove, op.mount_tmp_dir) == (
        "12g",
        "ncbi-retrain",
        "force",
        False,
    )
    (gpus,) = op.device_requests
    assert gpus["Count"] == 2 and gpus["Capabilities"] == [["gpu"]] and op.shm_size == 8 * 2**30
    sources = {m["Source"] for m in op.mounts}
    assert str(settings.project_dir.resolve()) in sources
    assert all(m["Source"] == m["Target"] and m["Type"] == "bind" for m in op.mounts)
    assert op.labels == {"ncbi-retrain.job": "train-ner"}


# ------------------------------------------------------------------------------------------- local
def fake_venv(tmp_path: Path, body: str) -> Path:
    """A folder shaped like the training venv whose `bin/ncbi-retrain` is a bash script."""
    venv = tmp_path / "train-venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "ncbi-retrain"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return venv


def test_local_bash_operator_runs_the_job_and_returns_its_json_line(settings_env, tmp_path, capfd):
    venv = fake_venv(
        tmp_path,
        'echo "epoch 1/1 (progress on stderr)" >&2\n'
        'out="${@: -1}"\n'
        """printf '{"run_id": "r-%s", "out": "%s", "venv": "%s"}\\n' "$NCBI_RETRAIN_DAG_RUN_ID" "$out" """
        '"$VIRTUAL_ENV"\n',
    )
    settings = settings_env(NCBI_RETRAIN_TRAIN_VENV=str(venv))
    record = plan_record(settings)
    dag, op = build(settings, record)
    context = render(dag, op, record, try_number=1)
    cli = str(venv / "bin" / "ncbi-retrain")
    call = next(line for line in op.bash_command.splitlines() if line.startswith(cli))
    assert call.endswith(f'--out {record["job"]["out_dir"]}/try-1 >"$out"')  # stdout printed last
    output = op.execute(context)  # the BashOperator's return value is its XCom: the last line
    assert json.loads(output) == {
        "run_id": "r-manual__1",
        "out": f"{record['job']['out_dir']}/try-1",
        "venv": str(venv),
    }
    assert "epoch 1/1 (progress on stderr)" in capfd.readouterr().out  # each line goes to the task log


def test_local_operator_fails_on_a_non_zero_exit(settings_env, tmp_path):
    from airflow.sdk.exceptions import AirflowException

    settings = settings_env(NCBI_RETRAIN_TRAIN_VENV=str(fake_venv(tmp_path, "exit 99\n")))
    record = plan_record(settings)
    dag, op = build(settings, record)
    with pytest.raises(AirflowException, match="non-zero exit code 99"):  # 99 is no skip here
        op.execute(render(dag, op, record))


def test_the_operator_skips_with_the_plans_reason(settings_env, tmp_path):
    from airflow.sdk.exceptions import AirflowSkipException
    from ncbi_common.jobs import skip_without_job

    settings = settings_env(NCBI_RETRAIN_TRAIN_VENV=str(tmp_path / "unused"))
    record = plan_record(settings, train=False)
    dag, op = build(settings, record)
    context = render(dag, op, record)
    with pytest.raises(AirflowSkipException, match="nothing changed; training skipped"):
        skip_without_job("plan")(context)
    skip_without_job("plan")(render(dag, op, plan_record(settings)))  # a job: no skip


def test_local_operator_names_a_missing_training_env(settings_env, tmp_path, capfd):
    from airflow.sdk.exceptions import AirflowException

    settings = settings_env(NCBI_RETRAIN_TRAIN_VENV=str(tmp_path / "nope"))
    record = plan_record(settings)
    dag, op = build(settings, record)
    with pytest.raises(AirflowException, match="exit code 127"):
        op.execute(render(dag, op, record))
    missing = f"training env not found: {tmp_path / 'nope'}/bin/ncbi-retrain does not exist"
    assert missing in capfd.readouterr().out
