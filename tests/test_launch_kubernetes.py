"""Kubernetes launcher: the pod spec (pure), and the run loop against a stand-in CoreV1 API.

No cluster exists on this machine; the spec is checked through the real kubernetes client models and
their API serialisation, and `run()` through a minimal fake of the four CoreV1 calls it makes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("kubernetes")

from kubernetes.client import ApiClient

from tasks.launch import Job, JobFailed
from tasks.launch.kubernetes import GPU_RESOURCE, KubernetesLauncher, build_pod, pod_name

JOB = Job(
    argv=["train", "ner", "--data", "/srv/ncbi/data", "--out", "/srv/ncbi/runs/r1/ner", "--json"],
    env={"MLFLOW_TRACKING_URI": "http://mlflow:5000", "NCBI_RETRAIN_DAG_RUN_ID": "manual__1"},
    mounts=[Path("/srv/ncbi")],
    timeout_s=3600,
    gpus=2,
    name="train_ner",
)


def spec(**kw) -> dict:
    return ApiClient().sanitize_for_serialization(build_pod(JOB, image="registry/trainer:1.0", **kw))


def test_pod_requests_gpus_and_runs_the_cli():
    pod = spec(namespace="ml", name="p1")
    assert pod["metadata"] == {
        "name": "p1",
        "namespace": "ml",
        "labels": {"app.kubernetes.io/name": "ncbi-retrain", "ncbi-retrain/job": "train_ner"},
    }
    (c,) = pod["spec"]["containers"]
    assert c["image"] == "registry/trainer:1.0"
    assert c["command"] == ["ncbi-retrain"] and c["args"] == JOB.argv
    assert c["resources"]["limits"][GPU_RESOURCE] == "2"
    assert GPU_RESOURCE not in c["resources"]["requests"]  # extended resources: limit implies request
    assert {e["name"]: e["value"] for e in c["env"]} == JOB.env
    assert pod["spec"]["restartPolicy"] == "Never"  # retries belong to the Airflow task
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    assert pod["spec"]["tolerations"] == [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


def test_mounts_use_hostpath_or_a_shared_claim():
    host = spec()
    vols = {v["name"]: v for v in host["spec"]["volumes"]}
    assert vols["mount-0"]["hostPath"] == {"path": "/srv/ncbi", "type": "DirectoryOrCreate"}
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory"}
    claim = spec(volume_claim="ncbi-work")
    vols = {v["name"]: v for v in claim["spec"]["volumes"]}
    assert vols["mount-0"]["persistentVolumeClaim"] == {"claimName": "ncbi-work"}
    (c,) = claim["spec"]["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["mount-0"] == {"name": "mount-0", "mountPath": "/srv/ncbi", "subPath": "srv/ncbi"}
    assert c["workingDir"] == "/srv/ncbi"


def test_credentials_come_from_a_secret_not_the_spec():
    (c,) = spec(env_secret="ncbi-retrain-credentials")["spec"]["containers"]
    assert c["envFrom"] == [{"secretRef": {"name": "ncbi-retrain-credentials"}}]
    assert not any("PASSWORD" in e["name"] for e in c["env"])


def test_cpu_job_has_no_gpu_request_or_toleration():
    pod = ApiClient().sanitize_for_serialization(build_pod(Job(argv=["evaluate"], gpus=0), image="i"))
    assert GPU_RESOURCE not in pod["spec"]["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod["spec"]


@pytest.mark.parametrize("name", ["Train NER / try 2", "x" * 100, "___"])
def test_pod_names_are_dns_1123(name):
    got = pod_name(Job(argv=[], name=name))
    assert len(got) <= 63 and got[0].isalnum() and all(ch.isalnum() or ch == "-" for ch in got)
    assert got == got.lower()


class FakeCoreV1:
    """Records calls; the pod goes Pending -> Running -> `final` phase."""

    def __init__(self, final: str, logs: str, terminated=None, phases=None):
        self.phases = phases or ["Pending", "Running", final]
        self.logs, self.terminated = logs, terminated
        self.created, self.deleted = [], []

    def create_namespaced_pod(self, namespace, body):
        self.created.append(body)

    def read_namespaced_pod_status(self, name, namespace):
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        state = SimpleNamespace(terminated=self.terminated)
        return SimpleNamespace(
            status=SimpleNamespace(
                phase=phase, reason=None, container_statuses=[SimpleNamespace(state=state)]
            )
        )

    def read_namespaced_pod_log(self, name, namespace):
        return self.logs

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds):
        self.deleted.append(name)


def test_run_returns_the_json_line_and_deletes_the_pod():
    api = FakeCoreV1("Succeeded", 'epoch 1\n{"run_id": "abc"}\n')
    result = KubernetesLauncher(api, poll_s=0).run(JOB)
    assert result.json_line() == {"run_id": "abc"}
    assert api.deleted == [api.created[0].metadata.name]


def test_oom_killed_pod_fails_with_reason_and_log_tail():
    term = SimpleNamespace(reason="OOMKilled", exit_code=137)
    api = FakeCoreV1("Failed", "loading\nstep 3/10\n", terminated=term)
    with pytest.raises(
        JobFailed, match=r"ended Failed \(OOMKilled, exit 137\); last log lines: loading \| step 3/10"
    ):
        KubernetesLauncher(api, poll_s=0).run(JOB)
    assert len(api.deleted) == 1


def test_timeout_deletes_the_pod():
    api = FakeCoreV1("Running", "step 1\n", phases=["Running"])
    job = Job(argv=["train"], timeout_s=0.01, name="t")
    with pytest.raises(JobFailed, match=r"timed out after 0\.01 s and was deleted"):
        KubernetesLauncher(api, poll_s=0.01).run(job)
    assert len(api.deleted) == 1
