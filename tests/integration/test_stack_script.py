"""`make up EXECUTOR=celery` / `make down` as a user runs them (scripts/stack.sh): PostgreSQL, MLflow,
Redis, the four Airflow components and two Celery workers come up on 127.0.0.1 only, the DAGs are
paused, the scheduled runs' profile is the stack's, `make up` says so, and `down` stops every PID.

The stack's state goes to a throwaway NCBI_STACK_DIR on free ports, so a developer's own `.stack/` is
never touched. (The celery run itself is proven in test_celery_stack.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from stack_helpers import Rest, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {
    "mlflow", "redis", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
}  # fmt: skip


def _listening(pids: dict[str, int]) -> set[tuple[str, str]]:
    import psutil

    out = set()
    for name, pid in pids.items():
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            for c in proc.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((name, c.laddr.ip))
    return out


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def stack_env():
    if shutil.which("redis-server") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("redis-server is not installed")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not os.environ.get("PG_BINDIR"):
        pytest.skip("PostgreSQL server binaries not found (set PG_BINDIR)")
    # Not under pytest's 0700 tmp dir: the cluster inside runs as `postgres`.
    state = Path(tempfile.mkdtemp(prefix="ncbi-stack-"))
    state.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "NCBI_RETRAIN", "NCBI_STACK"))
    }
    env.update(
        NCBI_STACK_DIR=str(state),
        NCBI_STACK_EXECUTOR="celery",
        NCBI_STACK_PG_PORT=str(free_port()),
        NCBI_STACK_MLFLOW_PORT=str(free_port()),
        NCBI_STACK_AIRFLOW_PORT=str(free_port()),
        NCBI_STACK_REDIS_PORT=str(free_port()),
        NCBI_RETRAIN_PROFILE="tiny",
    )
    yield env
    shutil.rmtree(state, ignore_errors=True)


def _stack(env: dict[str, str], action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/stack.sh", action], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_make_up_celery_starts_everything_on_loopback_and_down_stops_it(stack_env):
    state = Path(stack_env["NCBI_STACK_DIR"])
    pids: dict[str, int] = {}
    try:
        up = _stack(stack_env, "up")
        logs = "".join(p.read_text()[-1500:] for p in (state / "logs").glob("*.log"))
        assert up.returncode == 0, up.stdout + up.stderr + logs
        pids = {p.stem: int(p.read_text()) for p in state.glob("*.pid")}
        assert set(pids) == COMPONENTS
        out = " ".join(up.stdout.split())
        assert "stack: up (CeleryExecutor, Redis 127.0.0.1:" in out
        assert "Both DAGs start PAUSED" in out
        assert "Unpausing ncbi_retrain starts its latest scheduled run at once" in out
        assert "with profile tiny" in out and "a manual run waits behind it" in out
        port = stack_env["NCBI_STACK_AIRFLOW_PORT"]  # how to answer an approval from a shell
        assert (
            f"export NCBI_RETRAIN_AIRFLOW_URL=http://127.0.0.1:{port} NCBI_RETRAIN_AIRFLOW_USER=admin" in out
        )
        assert f"NCBI_STACK_AIRFLOW_PASSWORD=//p' {state}/secrets.env)" in out
        assert "ncbi-retrain approve classifier --run RUN_ID" in out

        secrets = dict(
            line.split("=", 1) for line in (state / "secrets.env").read_text().splitlines() if "=" in line
        )
        assert oct((state / "secrets.env").stat().st_mode & 0o777) == "0o600"
        rest = Rest(
            f"http://127.0.0.1:{stack_env['NCBI_STACK_AIRFLOW_PORT']}", secrets["NCBI_STACK_AIRFLOW_PASSWORD"]
        )
        for dag_id in ("ncbi_retrain", "ncbi_promote"):
            assert rest.wait_dag(dag_id)["is_paused"] is True
        status, details = rest("GET", "dags/ncbi_retrain/details")
        assert status == 200 and details["params"]["profile"]["value"] == "tiny"  # the stack's choice
        assert details["params"]["promote"]["value"] == "auto"  # NCBI_RETRAIN_PROMOTE's default

        for name, node in (("airflow-worker", "default"), ("airflow-worker-gpu", "gpu")):
            log = state / "logs" / f"{name}.log"
            end = time.monotonic() + 180  # both consume from the password-protected broker
            while f"{node}@" not in log.read_text() or " ready." not in log.read_text():
                assert time.monotonic() < end, log.read_text()[-2000:]
                time.sleep(2)
            assert "Connected to redis://:**@127.0.0.1" in log.read_text()
        again = _stack({**stack_env, "NCBI_STACK_EXECUTOR": "local"}, "up")  # another executor: refused
        assert again.returncode == 2 and "running with EXECUTOR=celery: make down first" in again.stdout
        listening = _listening(pids)
        assert {"redis", "mlflow", "airflow-api-server"} <= {name for name, _ in listening}
        assert {ip for _, ip in listening} == {"127.0.0.1"}, listening
    finally:
        down = _stack(stack_env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(_gone(pid) for pid in pids.values()), pids
    assert not list(state.glob("*.pid"))
