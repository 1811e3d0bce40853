"""Real servers on 127.0.0.1 for integration tests: a throwaway PostgreSQL cluster and an MLflow server.

Generic on purpose (the Airflow integration tests reuse them):

- `postgres` (session): a fresh cluster (`initdb -A trust -U postgres`, fsync off, a free port, its
  unix socket inside the cluster folder). Use `postgres.create_database("name")`, which returns a
  SQLAlchemy URL `postgresql://postgres@127.0.0.1:PORT/name`; `postgres.url("name")` for an existing one.
- `mlflow_server` (session): `mlflow server --host 127.0.0.1` on a free port, backed by the database
  `mlflow` in that cluster, artifacts proxied to a local folder, job execution off. `mlflow_server.url`
  is the tracking URI; `mlflow_server.log` the server's log file.

Both are stopped by their own PID at the end of the session and their folders removed. When PostgreSQL
or MLflow is missing, the dependent tests are skipped with the reason.

- `project`: a git + DVC project with a published slice of the corpus; `retrain_env`: the variables that
  point Airflow's components at it and at `mlflow_server` (the DAG runs' tests). The components
  themselves are started by stack_helpers.py.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    if env := os.environ.get("PG_BINDIR"):
        return Path(env)
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(dirs[-1]) if dirs else None


@dataclass
class PostgresCluster:
    host: str
    port: int
    user: str
    root: Path
    bindir: Path

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, dbname: str) -> str:
        """Create `dbname` (it must not exist yet) and return its URL."""
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, dbname],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.url(dbname)


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off), removed afterwards."""
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not found (set PG_BINDIR)")
    # Not under pytest's tmp dir: that is 0700 root-owned, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="ncbi-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    log = root / "server.log"
    try:
        subprocess.run(
            _as_postgres(
                [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
        subprocess.run(
            _as_postgres(
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')[-2000:]}{tail}")
    try:
        yield PostgresCluster("127.0.0.1", port, "postgres", root, bindir)
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    port: int
    backend_uri: str
    artifacts: Path
    log: Path
    pid: int


def wait_http(url: str, proc: subprocess.Popen, log: Path, deadline_s: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the log tail if the process dies or time runs out."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {deadline_s} s: {log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a server started with start_new_session=True (its group id is its own PID) and its workers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 backed by the `postgres` cluster, artifacts in a local folder."""
    pytest.importorskip("mlflow")
    base = tmp_path_factory.mktemp("mlflow-server")
    backend = postgres.create_database("mlflow")
    artifacts = base / "artifacts"
    artifacts.mkdir()
    port = free_port()
    log = base / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts),
        "--workers", "1",
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield MlflowServer(f"http://127.0.0.1:{port}", port, backend, artifacts, log, proc.pid)
    finally:
        stop_process_group(proc)


@pytest.fixture
def project(imported_data, tmp_path, monkeypatch):
    """A git + DVC project with a published data slice (the stack's NCBI_RETRAIN_PROJECT_DIR)."""
    from stack_helpers import publish_project

    from tasks.settings import get_settings

    yield publish_project(imported_data, tmp_path, monkeypatch.setenv)
    get_settings.cache_clear()


@pytest.fixture
def retrain_env(mlflow_server: MlflowServer, project: dict) -> dict[str, str]:
    """What the Airflow components need to run `ncbi_retrain` on `project` against `mlflow_server`."""
    from stack_helpers import retrain_environment

    if not (Path(__file__).resolve().parents[2] / ".venv-train" / "bin" / "ncbi-retrain").exists():
        pytest.skip("needs .venv-train (run `make setup`)")
    return retrain_environment(mlflow_server.url, project)
