"""Kubernetes launcher: run `ncbi-retrain <argv>` as a pod of the trainer image on a GPU node.

`build_pod()` is a pure function (Job -> V1Pod) so the spec is unit-tested without a cluster. `run()`
talks to the cluster through the cncf provider's `KubernetesHook` (connection `kubernetes_default`, or
in-cluster config), creates the pod, streams its log, and always deletes it, also on timeout or failure.
Job mounts come from a shared volume claim (RWX, same paths as on the workers), or hostPath on a
single-node cluster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from tasks.launch import Job, JobFailed, JobResult

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"


def pod_name(job: Job) -> str:
    """A DNS-1123 pod name from the job name plus a digest of its argv and env (stable for one job)."""
    base = re.sub(r"[^a-z0-9-]+", "-", job.name.lower()).strip("-")[:40] or "ncbi-retrain"
    digest = hashlib.sha256(repr((job.argv, sorted(job.env.items()), time.time_ns())).encode()).hexdigest()
    return f"{base}-{digest[:8]}"


def build_pod(
    job: Job,
    *,
    image: str,
    namespace: str = "default",
    name: str | None = None,
    volume_claim: str | None = None,
    cpu: str = "4",
    memory: str = "16Gi",
    service_account: str | None = None,
    node_selector: dict[str, str] | None = None,
    env_secret: str | None = None,
) -> Any:
    """The V1Pod that runs `job` once (restartPolicy Never; the Airflow task owns retries).

    `env_secret` names a Secret whose keys become env vars (MLflow / S3 credentials never sit in argv
    or in the pod spec).
    """
    from kubernetes.client import models as k

    env = [k.V1EnvVar(name=key, value=value) for key, value in sorted(job.env.items())]
    limits = {"cpu": cpu, "memory": memory}
    tolerations = None
    if job.gpus > 0:
        limits[GPU_RESOURCE] = str(job.gpus)
        # GPU node pools are usually tainted so that only GPU work lands there.
        tolerations = [k.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")]
    volumes, volume_mounts = [], []
    for i, path in enumerate(job.mounts):
        vol = f"mount-{i}"
        if volume_claim:
            source = {
                "persistent_volume_claim": k.V1PersistentVolumeClaimVolumeSource(claim_name=volume_claim)
            }
            sub_path = str(Path(path)).lstrip("/")
        else:
            source = {"host_path": k.V1HostPathVolumeSource(path=str(path), type="DirectoryOrCreate")}
            sub_path = None
        volumes.append(k.V1Volume(name=vol, **source))
        volume_mounts.append(k.V1VolumeMount(name=vol, mount_path=str(path), sub_path=sub_path))
    # Lightning DDP shares tensors through /dev/shm; the container default (64 MiB) is too small.
    volumes.append(k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory")))
    volume_mounts.append(k.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    container = k.V1Container(
        name="trainer",
        image=image,
        command=["ncbi-retrain"],
        args=list(job.argv),
        env=env,
        env_from=[k.V1EnvFromSource(secret_ref=k.V1SecretEnvSource(name=env_secret))] if env_secret else None,
        working_dir=str(job.mounts[0]) if job.mounts else None,
        resources=k.V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits=limits),
        volume_mounts=volume_mounts,
    )
    return k.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=k.V1ObjectMeta(
            name=name or pod_name(job),
            namespace=namespace,
            labels={"app.kubernetes.io/name": "ncbi-retrain", "ncbi-retrain/job": job.name[:63]},
        ),
        spec=k.V1PodSpec(
            restart_policy="Never",
            containers=[container],
            volumes=volumes,
            tolerations=tolerations,
            node_selector=node_selector,
            service_account_name=service_account,
            active_deadline_seconds=int(job.timeout_s) if job.timeout_s else None,
        ),
    )


class KubernetesLauncher:
    """Creates one pod per job with the trainer image; raises JobFailed with the pod's last log lines."""

    def __init__(
        self,
        core_v1: Any | None = None,
        *,
        conn_id: str = "kubernetes_default",
        volume_claim: str | None = None,
        poll_s: float = 5.0,
        tail_lines: int = 30,
    ) -> None:
        from tasks.settings import get_settings

        settings = get_settings()
        self.image = settings.trainer_image
        self.namespace = settings.k8s_namespace
        # Deployment knobs beside Settings: a shared RWX claim for the project tree, a credentials Secret.
        self.volume_claim = volume_claim or os.environ.get("NCBI_RETRAIN_K8S_VOLUME_CLAIM") or None
        self.env_secret = os.environ.get("NCBI_RETRAIN_K8S_ENV_SECRET") or None
        self.conn_id = conn_id
        self.poll_s = poll_s
        self.tail_lines = tail_lines
        self._core_v1 = core_v1  # injectable for tests; otherwise from the provider's hook

    @property
    def core_v1(self) -> Any:
        if self._core_v1 is None:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            self._core_v1 = KubernetesHook(conn_id=self.conn_id).core_v1_client
        return self._core_v1

    def run(self, job: Job) -> JobResult:
        pod = build_pod(
            job,
            image=self.image,
            namespace=self.namespace,
            volume_claim=self.volume_claim,
            env_secret=self.env_secret,
        )
        name = pod.metadata.name
        api = self.core_v1
        log.info(
            "%s: creating pod %s/%s (image %s, gpus %d)", job.name, self.namespace, name, self.image, job.gpus
        )
        api.create_namespaced_pod(namespace=self.namespace, body=pod)
        deadline = time.monotonic() + job.timeout_s if job.timeout_s else None
        try:
            phase, reason = self._wait(name, deadline)
            logs = api.read_namespaced_pod_log(name=name, namespace=self.namespace) or ""
            lines = logs.splitlines()
            for line in lines:
                log.info("[%s] %s", job.name, line)
            tail = lines[-self.tail_lines :]
            if phase == "Timeout":
                raise JobFailed(
                    f"{job.name} (pod {name}) timed out after {job.timeout_s:g} s and was deleted; "
                    f"last log lines: {' | '.join(tail[-10:])}"
                )
            if phase != "Succeeded":
                raise JobFailed(
                    f"{job.name} (pod {name}) ended {phase} ({reason}); "
                    f"last log lines: {' | '.join(tail[-10:])}"
                )
            return JobResult(exit_code=0, stdout=logs, log_tail=tail)
        finally:
            api.delete_namespaced_pod(name=name, namespace=self.namespace, grace_period_seconds=10)

    def _wait(self, name: str, deadline: float | None) -> tuple[str, str]:
        """Poll the pod until it ends; returns (phase, reason), phase `Timeout` past the deadline."""
        while True:
            status = self.core_v1.read_namespaced_pod_status(name=name, namespace=self.namespace).status
            phase = status.phase or "Pending"
            if phase in ("Succeeded", "Failed"):
                return phase, _termination_reason(status)
            if deadline is not None and time.monotonic() > deadline:
                return "Timeout", "deadline"
            time.sleep(self.poll_s)


def _termination_reason(status: Any) -> str:
    """`OOMKilled, exit 137`-style reason from the trainer container's status."""
    for cs in status.container_statuses or []:
        term = cs.state.terminated if cs.state else None
        if term is not None:
            return f"{term.reason or 'terminated'}, exit {term.exit_code}"
    return status.reason or "unknown"
