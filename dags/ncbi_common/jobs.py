"""Training-env jobs as Airflow's own operators, picked when the DAG is parsed (`Settings.launcher`).

`job_operator(task_id, source)` returns, for the job spec that the `source` task returned (a `Plan` or a
`ChampionRef`, whose `job` is a `tasks.vocab.JobSpec`):

- `local`: a `BashOperator` running `<train venv>/bin/ncbi-retrain ...` with the job's environment;
- `docker`: a `DockerOperator` of the trainer image (`TrainerDockerOperator`, see why in its module);
- `kubernetes`: a `KubernetesPodOperator` (GPU limit, node selector, tolerations, reattach after a lost
  worker, deferrable wait, XCom through the sidecar).

Command and environment are templates over the source's XCom, rendered on the worker that runs the job
with the try number, so each try gets its own output folder (and MLflow run). The job's output streams
into the Airflow task log; its `--json` result is the operator's XCom (last output line, or the pod's
result file). A `pre_execute` hook skips the operator, with the source's reason, when there is no job.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from tasks.pipeline.jobs import bash_script, mount_paths
from tasks.settings import Settings, get_settings
from tasks.vocab import JobSpec


# ------------------------------------------------------------------ template macros (rendered on the worker)
def _job(record: dict[str, Any] | None) -> JobSpec | None:
    job = (record or {}).get("job")
    return JobSpec.model_validate(job) if job else None


def job_argv(record: dict[str, Any] | None, try_number: int) -> list[str]:
    """The `ncbi-retrain` arguments of one try (empty when the source planned no job)."""
    job = _job(record)
    return job.argv_for(try_number) if job else []


def job_env(record: dict[str, Any] | None) -> dict[str, str]:
    job = _job(record)
    return dict(job.env) if job else {}


def job_script(record: dict[str, Any] | None, try_number: int) -> str:
    """The BashOperator's script of one try, with this worker's training venv."""
    job = _job(record)
    if job is None:
        return "true"  # never run: pre_execute skips first
    settings = get_settings()
    return bash_script(job, try_number, settings.path(settings.train_venv))


MACROS = {"job_argv": job_argv, "job_env": job_env, "job_script": job_script}  # the DAG's user_defined_macros


def skip_without_job(source_task_id: str):
    """A pre_execute hook: skip the job's operator, with the source's reason, when it planned no job."""

    def pre_execute(context: Any) -> None:
        record = context["ti"].xcom_pull(task_ids=source_task_id) or {}
        if not record.get("job"):
            raise AirflowSkipException(record.get("reason") or f"{source_task_id} planned no job")

    return pre_execute


# ------------------------------------------------------------------ operators
def _jinja(expression: str) -> str:
    """A template of one Jinja expression (in an f-string the braces would need doubling)."""
    return "{{ " + expression + " }}"


def job_operator(task_id: str, source: Any, *, name: str, settings: Settings | None = None, **kwargs: Any):
    """The operator running the job that `source` (an XComArg of a Plan / ChampionRef task) planned.

    `name` labels the container or pod; `kwargs` go to the operator (pool, queue, retries, timeout) and
    win over the settings' arguments (e.g. another `mem_limit` for one task).
    """
    settings = settings or get_settings()
    src = source.operator.task_id
    record = f"ti.xcom_pull(task_ids='{src}')"
    common = {"task_id": task_id, "pre_execute": skip_without_job(src), **kwargs}
    if settings.launcher == "docker":
        op = _docker(settings, record, name, common)
    elif settings.launcher == "kubernetes":
        op = _kubernetes(settings, record, name, common)
    else:
        from airflow.providers.standard.operators.bash import BashOperator

        op = BashOperator(
            bash_command=_jinja(f"job_script({record}, ti.try_number)"),
            skip_on_exit_code=None,  # 99 is a failure like any other code, not a skip
            **common,
        )
    source >> op
    return op


def _docker(settings: Settings, record: str, name: str, common: dict[str, Any]):
    from docker.types import DeviceRequest, Mount

    from .trainer_docker import TrainerDockerOperator

    gpu = settings.gpus > 0
    args = dict(
        image=settings.trainer_image,
        docker_url=settings.docker_url,
        command=_jinja(f"job_argv({record}, ti.try_number)"),  # the image's entrypoint is ncbi-retrain
        environment=_jinja(f"job_env({record})"),
        render_template_as_native_obj=True,  # the command renders to a list, the environment to a dict
        # Same paths inside and out: the argv's paths, the --json line and the MLflow store mean the same.
        mounts=[Mount(target=str(p), source=str(p), type="bind") for p in mount_paths(settings)],
        user=settings.docker_user or f"{os.getuid()}:{os.getgid()}",
        mem_limit=settings.docker_mem_limit,
        network_mode=settings.docker_network,
        device_requests=[DeviceRequest(count=settings.gpus, capabilities=[["gpu"]])] if gpu else None,
        shm_size=8 * 2**30 if gpu else None,  # PyTorch dataloaders and NCCL use /dev/shm (64 MB default)
        auto_remove="force",  # also on failure and timeout
        mount_tmp_dir=False,  # a remote or sibling engine cannot mount the worker's temp dir
        job_name=name,
    )
    return TrainerDockerOperator(**(args | common))


def _kubernetes(settings: Settings, record: str, name: str, common: dict[str, Any]):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k

    limits = {"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
    volumes, mounts = [], []
    for i, path in enumerate(mount_paths(settings)):
        if settings.k8s_volume_claim:  # one RWX claim holding the project tree at the workers' paths
            claim = k.V1PersistentVolumeClaimVolumeSource(claim_name=settings.k8s_volume_claim)
            volumes.append(k.V1Volume(name=f"mount-{i}", persistent_volume_claim=claim))
            sub_path = str(path).lstrip("/")
        else:  # a single-node cluster: the host's folders
            host = k.V1HostPathVolumeSource(path=str(path), type="DirectoryOrCreate")
            volumes.append(k.V1Volume(name=f"mount-{i}", host_path=host))
            sub_path = None
        mounts.append(k.V1VolumeMount(name=f"mount-{i}", mount_path=str(path), sub_path=sub_path))
    if settings.gpus > 0:
        limits["nvidia.com/gpu"] = str(settings.gpus)  # an extended resource: the limit is the request
        # Lightning DDP shares tensors through /dev/shm; a container's default (64 MiB) is too small.
        volumes.append(k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory")))
        mounts.append(k.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    secret = k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name=settings.k8s_env_secret))
    # The pod's fixed shape from settings, as a pod spec the operator merges in but does not template:
    # only the job's argv and env are rendered natively below, so no setting can turn into a number.
    shape = k.V1Pod(
        spec=k.V1PodSpec(
            containers=[
                k.V1Container(
                    name="base",
                    resources=k.V1ResourceRequirements(
                        requests={"cpu": settings.k8s_cpu, "memory": settings.k8s_memory}, limits=limits
                    ),
                    volume_mounts=mounts,
                    env_from=[secret] if settings.k8s_env_secret else None,  # credentials: a Secret
                )
            ],
            volumes=volumes,
            node_selector=settings.k8s_node_selector or None,
            tolerations=[k.V1Toleration(**t) for t in settings.k8s_tolerations] or None,
        )
    )
    args = dict(
        kubernetes_conn_id=settings.k8s_conn_id,
        namespace=settings.k8s_namespace,
        name=name,
        image=settings.trainer_image,
        cmds=["ncbi-retrain"],
        arguments=_jinja(f"job_argv({record}, ti.try_number)"),
        env_vars=_jinja(f"job_env({record})"),
        render_template_as_native_obj=True,  # arguments render to a list, env_vars to a dict
        full_pod_spec=shape,
        labels={"app.kubernetes.io/name": "ncbi-retrain", "ncbi-retrain/job": name},
        # providers-cncf-kubernetes 10.25's name for reattach_on_restart on Airflow 3.3 (which it
        # deprecates): a retry after a lost worker reattaches to the running pod instead of a new one.
        durable=True,
        deferrable=settings.k8s_deferrable,  # hours of training wait in the triggerer, not a worker slot
        logging_interval=120 if settings.k8s_deferrable else None,  # the log still streams while deferred
        on_finish_action=settings.k8s_on_finish_action,
        do_xcom_push=True,  # the job writes /airflow/xcom/return.json (NCBI_RETRAIN_RESULT_FILE)
        get_logs=True,
    )
    return KubernetesPodOperator(**(args | common))
