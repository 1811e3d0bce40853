"""docker/compose.yaml is a valid stack: `docker compose config` where the compose plugin exists;
otherwise (this machine: a docker CLI without the plugin, and no engine) parsed with PyYAML, with
compose's variable interpolation checked by hand and the structure asserted."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
REQUIRED = {
    "POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "REDIS_PASSWORD", "NCBI_RETRAIN_PROJECT_DIR",
}  # fmt: skip
# Compose's forms: $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$")


AIRFLOW_SERVICES = (
    "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker", "airflow-worker-gpu",
)  # fmt: skip


def _compose_plugin() -> bool:
    try:
        proc = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        return proc.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_is_valid(tmp_path):
    if not _compose_plugin():
        pytest.skip("no `docker compose` plugin here; the PyYAML checks below stand in for it")
    env = {v: "x" for v in REQUIRED} | {"NCBI_RETRAIN_PROJECT_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_every_variable_reference_is_well_formed_and_credentials_are_required():
    text = COMPOSE.read_text()
    required: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), 1):
        body = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
        for m in _VAR.finditer(body):
            assert m.group(0) != "$", f"compose.yaml:{line_no}: a bare $ (write $$ for a literal one)"
            if m.group(2) in (":?", "?"):
                required.add(m.group(1))
    assert required >= REQUIRED
    # No literal secret: every password/secret-looking value is a required variable reference.
    for line_no, line in enumerate(text.splitlines(), 1):
        key, _, value = line.strip().partition(":")
        if re.search(r"PASSWORD|SECRET", key) and not key.endswith("_FILE") and value.strip():
            assert value.strip().startswith("${"), f"compose.yaml:{line_no}: {key} is not a variable"


def test_services_wire_the_stack(doc):
    services = doc["services"]
    assert {"postgres", "mlflow", "s3", "redis", "trainer", *AIRFLOW_SERVICES} <= set(services)
    mlflow_cmd = services["mlflow"]["command"][0]
    assert "--app-name basic-auth" in mlflow_cmd and "postgresql://" in mlflow_cmd and "s3://" in mlflow_cmd
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["NCBI_RETRAIN_LAUNCHER"] == "docker"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert "postgresql" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert (
        doc["networks"]["default"]["name"]
        == services["airflow-scheduler"]["environment"]["NCBI_RETRAIN_DOCKER_NETWORK"]
    )
    # Every published port is bound to loopback only.
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_celery_workers_split_the_gpu_queue_and_serve_no_logs(doc):
    """CeleryExecutor on Redis; one worker per queue; logs shared on a volume instead of log servers."""
    services = doc["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")
        assert "airflow-logs:/opt/airflow/logs" in services[name]["volumes"]
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    queue = services["airflow-worker-gpu"]["environment"]["NCBI_RETRAIN_GPU_QUEUE"]
    default = services["airflow-worker"]["command"].split()
    gpu = services["airflow-worker-gpu"]["command"].split()
    assert default[:2] == gpu[:2] == ["celery", "worker"]
    assert default[default.index("--queues") + 1] == "default" and gpu[gpu.index("--queues") + 1] == queue
    assert "--skip-serve-logs" in default and "--skip-serve-logs" in gpu
    redis = services["redis"]
    assert "--requirepass" in redis["command"][-1] and "--save ''" in redis["command"][-1]
    assert "ports" not in redis  # reachable from the stack's network only


def test_trainer_reserves_a_gpu_and_builds_from_the_trainer_dockerfile(doc):
    trainer = doc["services"]["trainer"]
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert trainer["build"]["dockerfile"] == "docker/trainer.Dockerfile"
    assert (COMPOSE.parent / Path(trainer["build"]["dockerfile"]).name).is_file()
    assert (COMPOSE.parent / "airflow.Dockerfile").is_file()
