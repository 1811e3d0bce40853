"""Infrastructure settings (URIs, remotes, images, names) from the environment or `.env`.

Hyperparameters never live here: they are in the NeMo-style YAML under `tasks/training/`.
Every field can be set as `NCBI_RETRAIN_<FIELD>`; MLflow also honours `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.vocab import PromoteMode


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ncbi-retrain"


class Settings(BaseSettings):
    """Where things are and which services to talk to; no side effects on construction."""

    model_config = SettingsConfigDict(env_prefix="NCBI_RETRAIN_", env_file=".env", extra="ignore")

    project_dir: Path = Field(default_factory=Path.cwd, description="Root of the git + DVC repository.")
    data_dir: Path = Field(Path("data"), description="DVC-tracked data directory (relative to project_dir).")
    shared_data: Path = Field(
        Path("../shared/data"),
        validation_alias=AliasChoices("NCBI_RETRAIN_SHARED_DATA", "NCBI_SHARED_DATA"),
        description="Staged NCBI release + MeSH 2017 (also NCBI_SHARED_DATA, as the README and demo say).",
    )
    work_dir: Path = Field(Path("runs"), description="Training outputs, one folder per run.")

    mlflow_tracking_uri: str = Field(
        "sqlite:///mlruns/mlflow.db",
        validation_alias=AliasChoices("NCBI_RETRAIN_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking + registry store; a SQLite file by default.",
    )
    mlflow_artifact_root: Path = Field(Path("mlruns/artifacts"), description="Artifacts for a local store.")

    dvc_remote: str = Field("local", description="Name of the default DVC remote.")
    dvc_remote_url: str = Field(
        default_factory=lambda: str(_default_cache() / "dvc-remote"),
        description="URL of the default DVC remote: a local directory outside git, or s3://bucket/path.",
    )

    launcher: Literal["local", "docker", "kubernetes"] = Field(
        "local",
        description="The Airflow operator that runs training and re-scoring jobs, chosen when the DAG is "
        "parsed: local (BashOperator, the training venv), docker (DockerOperator), kubernetes "
        "(KubernetesPodOperator).",
    )
    train_venv: Path = Field(Path(".venv-train"), description="Training env used by the local launcher.")
    trainer_image: str = Field("localhost/ncbi-retrain-trainer:latest", description="Trainer image.")
    gpus: int = Field(
        0, ge=0, description="GPUs per training job (docker: device_requests; kubernetes: nvidia.com/gpu)."
    )
    docker_url: str = Field("unix:///var/run/docker.sock", description="Docker-compatible API socket.")
    docker_network: str | None = Field(
        None, description="Network of the training containers (e.g. the compose stack's, to reach MLflow)."
    )
    docker_mem_limit: str | None = Field(None, description="Memory limit of a training container, e.g. 16g.")
    docker_user: str | None = Field(
        None, description="uid:gid in the container; unset: the Airflow worker's own (outputs stay theirs)."
    )
    k8s_namespace: str = "default"
    k8s_conn_id: str = Field("kubernetes_default", description="Airflow connection of the cluster.")
    k8s_cpu: str = Field("4", description="CPU request and limit of a training pod.")
    k8s_memory: str = Field("16Gi", description="Memory request and limit of a training pod.")
    k8s_node_selector: dict[str, str] = Field(
        default_factory=dict, description='Node selector of training pods (JSON), e.g. {"gpu": "a100"}.'
    )
    k8s_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        description="Tolerations of training pods (JSON list); the default tolerates tainted GPU nodes.",
    )
    k8s_volume_claim: str | None = Field(
        None, description="RWX claim holding the project at the same path as on the workers (else hostPath)."
    )
    k8s_env_secret: str | None = Field(
        None, description="Secret whose keys become the pod's env (MLflow / S3 credentials)."
    )
    k8s_deferrable: bool = Field(
        True, description="Wait for training pods in the triggerer, freeing the worker slot."
    )
    k8s_on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "keep_pod"] = Field(
        "delete_pod", description="What happens to a finished pod (its log is in the Airflow task log)."
    )
    gpu_pool: str = Field("gpu", description="Airflow pool that bounds concurrent training jobs.")
    gpu_queue: str = Field(
        "gpu", description="Executor queue of the training tasks (Celery: the GPU workers consume it)."
    )
    webhook_url: str | None = Field(None, description="Posted a JSON summary when a DAG run fails.")
    worker_name: str | None = Field(
        None,
        description="The host name Airflow records for the tasks this worker runs (see worker_hostname); "
        "unset: the machine's FQDN.",
    )

    mlflow_webhook_url: str = Field(
        "http://127.0.0.1:8080/ncbi-retrain/mlflow-webhook",
        description="Where MLflow posts alias moves: the Airflow api-server's ncbi-retrain plugin.",
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        None, description="HMAC secret shared by the MLflow webhook and the Airflow receiver."
    )
    champion_guard: Literal["revert", "alert"] = Field(
        "revert",
        description="What ncbi_champion does with an unverified champion: move it back, or only report.",
    )

    promote: PromoteMode = Field(
        PromoteMode.auto,
        description="The promote mode of scheduled ncbi_retrain runs and the trigger form's default: auto "
        "(champion moves on a passed gate), approve (a person approves first), never (challenger only).",
    )
    approval_timeout: timedelta = Field(
        timedelta(hours=24),
        gt=timedelta(0),
        description="How long a promote=approve run waits for an answer; none by then counts as a reject. "
        "Seconds (86400), ISO 8601 (PT24H, P1D) or HH:MM:SS.",
    )
    airflow_url: str = Field(
        "http://127.0.0.1:8080", description="Airflow's api-server, for `ncbi-retrain approve` (/api/v2)."
    )
    airflow_user: str = Field("admin", description="The Airflow user `ncbi-retrain approve` answers as.")
    airflow_password: SecretStr | None = Field(None, description="That user's Airflow password.")

    @field_validator("approval_timeout", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """A plain number of seconds, as environment variables usually give durations."""
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value

    def path(self, p: Path) -> Path:
        """Resolve a settings path against the project directory."""
        return p if p.is_absolute() else self.project_dir / p

    def tracking_uri(self) -> str:
        """The MLflow URI with a relative `sqlite:///` path made absolute against the project directory,
        so that every process (DAG task, training job, CLI) opens the same store. The one place that
        interprets `mlflow_tracking_uri`."""
        uri = self.mlflow_tracking_uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.path(Path(uri.removeprefix(prefix))))
        return uri

    def is_local_store(self) -> bool:
        """A SQLite or file store on this machine (artifacts then go to `mlflow_artifact_root`)."""
        uri = self.mlflow_tracking_uri
        return uri.startswith(("sqlite:", "file:")) or "://" not in uri


@lru_cache
def get_settings() -> Settings:
    return Settings()


def worker_hostname() -> str:
    """Airflow's `[core] hostname_callable` for workers that share a machine (`make up EXECUTOR=celery`).

    Airflow records the host of each task instance through this callable; by default it is the FQDN,
    which every worker on one machine shares. With `NCBI_RETRAIN_WORKER_NAME` set, that name is recorded
    instead, so the UI and the REST API show which worker (e.g. the GPU one) ran a task.
    """
    import socket

    return get_settings().worker_name or socket.getfqdn()
