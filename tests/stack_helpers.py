"""Airflow's real components for the integration and fault tiers, started and stopped by PID (shared: a
plain module in tests/, which is on sys.path for every tier).

- `airflow_env(...)`: the environment every component shares (PostgreSQL metadata DB, simple auth
  manager with a generated admin password, this repository's `dags/`, an Airflow home in a tmp folder).
- `running(...)`: start components (`airflow api-server`, `scheduler --skip-serve-logs`, ...) each in
  its own session, wait until the api-server is healthy, stop each process group at the end;
  `start(...)` / `stop(...)` for one component that a test kills and starts again (the scheduler).
- `redis_server(...)`: Debian's `redis-server` on 127.0.0.1 with no persistence (the Celery broker).
- `Rest`: the REST API with a JWT (`/auth/token`), and the waits the tests share.
- `publish_project(...)` / `retrain_environment(...)`: a git + DVC project with a published data slice,
  and the variables that point the components at it and at an MLflow server (the `project` and
  `retrain_env` fixtures of conftest.py; module-scoped stacks call them directly).

Every server binds 127.0.0.1; nothing here serves logs (`--skip-serve-logs` on every component that has it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(
    method: str,
    url: str,
    body: dict | bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    """One JSON request (`body` a dict, or bytes sent as they are); returns (status, body), an HTTP
    error's text under `detail`."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        return exc.code, {"detail": exc.read().decode(errors="replace")}


def publish_project(imported_data: Path, base: Path, setenv: Any) -> dict[str, Any]:
    """A git + DVC project under `base` with the small data slice published to `base/dvc-remote`;
    `setenv(key, value)` points this process's settings at it (a monkeypatch's: its owner undoes it)."""
    from dag_helpers import commit_data, make_project

    from tasks.settings import get_settings
    from tasks.versioning import publish

    repo = base / "repo"
    make_project(imported_data, repo)
    setenv("NCBI_RETRAIN_PROJECT_DIR", str(repo))
    setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(base / "dvc-remote"))
    get_settings.cache_clear()
    version = publish(repo)
    commit_data(repo, "data v1")
    return {"repo": repo, "remote": base / "dvc-remote", "data_version": version}


def retrain_environment(mlflow_url: str, project: Mapping[str, Any]) -> dict[str, str]:
    """What the Airflow components need to run `ncbi_retrain` on `project` against an MLflow server."""
    return {
        "MLFLOW_TRACKING_URI": mlflow_url,
        "NCBI_RETRAIN_PROJECT_DIR": str(project["repo"]),
        "NCBI_RETRAIN_DVC_REMOTE_URL": str(project["remote"]),
        "NCBI_RETRAIN_TRAIN_VENV": str(ROOT / ".venv-train"),
        "NCBI_RETRAIN_GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
        "NCBI_RETRAIN_SCHEDULE": "none",  # only the REST-triggered runs
    }


@dataclass
class AirflowEnv:
    env: dict[str, str]
    url: str
    port: int
    password: str
    home: Path


def airflow_env(postgres: Any, base: Path, executor: str = "LocalExecutor", **extra: str) -> AirflowEnv:
    """A fresh metadata database in the `postgres` fixture's cluster, a home under `base`, the shared env.

    The caller's AIRFLOW*, MLFLOW_TRACKING* and NCBI_RETRAIN* variables are dropped; `extra` adds more.
    """
    home = base / "airflow"
    home.mkdir(parents=True)
    port = free_port()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_TRACKING", "NCBI_RETRAIN"))
    }
    database = f"airflow_{secrets.token_hex(4)}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.create_database(database).replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(24),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(24),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            **extra,
        }
    )
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    subprocess.run(
        [str(BIN / "airflow"), "pools", "set", env.get("NCBI_RETRAIN_GPU_POOL", "gpu"), "1", "training"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return AirflowEnv(env, f"http://127.0.0.1:{port}", port, password, home)


@dataclass
class Component:
    """What to start: `airflow ARGS...` (or `argv` as given when `airflow=False`) with extra env."""

    args: Sequence[str]
    env: Mapping[str, str] | None = None
    airflow: bool = True


def core_components(stack: AirflowEnv, only: Sequence[str] | None = None) -> dict[str, Component]:
    """api-server, scheduler, dag-processor, triggerer (or `only` those), on 127.0.0.1, no log servers."""
    every = {
        "api-server": Component(["api-server", "-H", "127.0.0.1", "-p", str(stack.port)]),
        "scheduler": Component(["scheduler", "--skip-serve-logs"]),
        "dag-processor": Component(["dag-processor"]),
        "triggerer": Component(["triggerer", "--skip-serve-logs"]),
    }
    return {k: v for k, v in every.items() if only is None or k in only}


@dataclass
class Running:
    procs: dict[str, subprocess.Popen]
    logs: dict[str, Path]

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"components exited {dead}: {[self.logs[n].read_text()[-3000:] for n in dead]}"

    def listening(self) -> set[tuple[str, str, int]]:
        """(component, address, port) of every TCP socket its processes listen on."""
        import psutil

        out = set()
        for name, p in self.procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                root = psutil.Process(p.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        for c in proc.net_connections(kind="tcp"):
                            if c.status == psutil.CONN_LISTEN:
                                out.add((name, c.laddr.ip, c.laddr.port))
        return out


def start(stack: AirflowEnv, comp: Component, log: Path) -> subprocess.Popen:
    """Start one component in its own session (its process group id is its PID), output into `log`."""
    argv = [str(BIN / "airflow"), *comp.args] if comp.airflow else list(comp.args)
    with log.open("w") as out:
        return subprocess.Popen(
            argv,
            env={**stack.env, **(comp.env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(procs: Mapping[str, subprocess.Popen]) -> None:
    """TERM each process group (its leader's PID), wait, then KILL what is left."""
    for p in procs.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@contextlib.contextmanager
def running(
    stack: AirflowEnv, components: Mapping[str, Component], logs_dir: Path, health_s: float = 180
) -> Iterator[Running]:
    """Start the components; when one is the api-server, wait until its metadatabase is healthy."""
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}
    try:
        for name, comp in components.items():
            logs[name] = logs_dir / f"{name}.log"
            procs[name] = start(stack, comp, logs[name])
        live = Running(procs, logs)
        if any(c.args[:1] == ["api-server"] for c in components.values()):
            end = time.monotonic() + health_s
            while True:
                live.check_alive()
                with contextlib.suppress(OSError):
                    status, health = http("GET", f"{stack.url}/api/v2/monitor/health")
                    if status == 200 and health.get("metadatabase", {}).get("status") == "healthy":
                        break
                assert time.monotonic() < end, "api-server not healthy: " + "".join(
                    p.read_text()[-3000:] for p in logs.values()
                )
                time.sleep(1)
        yield live
    finally:
        stop(procs)


@contextlib.contextmanager
def redis_server(base: Path) -> Iterator[str]:
    """Debian's redis-server on 127.0.0.1 (no persistence, protected mode); yields its `redis://` URL."""
    import redis

    exe = shutil.which("redis-server")
    assert exe, "redis-server is not installed (apt-get install redis-server)"
    port = free_port()
    data = base / "redis"
    data.mkdir(parents=True)
    log = base / "redis.log"
    argv = [
        exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--dir", str(data), "--daemonize", "no",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        end = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"redis-server exited {proc.returncode}: {log.read_text()[-2000:]}"
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert time.monotonic() < end, f"redis-server did not answer: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop({"redis": proc})


class Rest:
    """The api-server's REST API as admin."""

    def __init__(self, url: str, password: str):
        self.url = url
        status, tok = http("POST", f"{url}/auth/token", {"username": "admin", "password": password})
        assert status in (200, 201), tok
        self.token = tok["access_token"]

    def __call__(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return http(method, f"{self.url}/api/v2/{path.lstrip('/')}", body, self.token)

    def wait_dag(self, dag_id: str, deadline_s: float = 180) -> dict:
        """Until the dag-processor has parsed and stored `dag_id`."""
        end = time.monotonic() + deadline_s
        while (got := self("GET", f"dags/{dag_id}"))[0] != 200:
            assert time.monotonic() < end, f"DAG {dag_id} never appeared: {got}"
            time.sleep(2)
        return got[1]

    def wait_run(self, dag_id: str, run_id: str, deadline_s: float) -> dict:
        """Until the run ends (success or failed); the deadline bounds a broken stack, it is no benchmark."""
        end = time.monotonic() + deadline_s
        while True:
            _, run = self("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            if run.get("state") in ("success", "failed"):
                return run
            assert time.monotonic() < end, f"run {run_id} still {run.get('state')} after {deadline_s} s"
            time.sleep(5)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        _, tis = self("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t for t in tis.get("task_instances", [])}
