"""Docker launcher: run `ncbi-retrain <argv>` in the trainer image through a Docker-compatible API.

Works against Docker Engine and against podman's API service (`scripts/podman.sh start`, which CI and
this machine use). The image's entrypoint is `ncbi-retrain`, so `job.argv` is the container's command.

- `job.mounts` are bind-mounted at the same path, so paths in argv, env and the `--json` line mean the
  same thing on both sides. A local MLflow store is mounted too (the SQLite file's folder and
  `Settings.mlflow_artifact_root`), so the run and its artifacts land where the host reads them: a
  path that is not mounted would be written inside the container and lost with it.
- The container's env is `job.env` over this process's `NCBI_RETRAIN_*` / `MLFLOW_*` variables, so
  both sides read the same settings (the local launcher passes its whole environment).
- The container runs as the caller's uid:gid (the Airflow worker's), so what it writes under the
  mounts belongs to the caller; the image's HOME is writable by any uid.
- `job.gpus > 0` asks for that many GPUs (`DeviceRequest`, i.e. `--gpus N`: the NVIDIA toolkit).
- The run is tagged with the image's ID (`NCBI_RETRAIN_IMAGE`) and the code version
  (`NCBI_RETRAIN_GIT_COMMIT`, containers have no .git) unless the job sets them.
- Every exit path removes the container: success, non-zero exit, OOM kill, timeout, a cancelled task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from tasks.errors import ServiceError
from tasks.launch import Job, JobFailed, JobResult

log = logging.getLogger(__name__)

_STOP_GRACE_S = 10  # SIGTERM first so Lightning can close its loggers; then the engine SIGKILLs
_API_TIMEOUT_S = 120  # one API call (create, start); not the job, which has its own timeout
_FORWARDED = ("NCBI_RETRAIN_", "MLFLOW_", "HF_", "TRANSFORMERS_OFFLINE")
# Host-side choices that mean nothing inside the container.
_NOT_FORWARDED = {"NCBI_RETRAIN_LAUNCHER", "NCBI_RETRAIN_DOCKER_URL", "NCBI_RETRAIN_TRAIN_VENV"}


class DockerLauncher:
    """Runs jobs as containers of `Settings.trainer_image` on `Settings.docker_url`.

    Args:
        image: image reference (default `Settings.trainer_image`).
        url: Docker API URL, e.g. `unix:///var/run/docker.sock` (default `Settings.docker_url`).
        user: `uid:gid` to run as (default: this process's); "" runs as the image's own user.
        mem_limit: container memory limit, e.g. "8g" (default: none).
        network_mode: the container's network, e.g. the compose stack's `ncbi-retrain` (so the job reaches
            `http://mlflow:5000`) or "none" (default: `NCBI_RETRAIN_DOCKER_NETWORK`, else the engine's own).
        entrypoint: overrides the image's `ncbi-retrain` entrypoint (diagnostics and tests).
        tail_lines: how many log lines to keep for error messages.
    """

    def __init__(
        self,
        image: str | None = None,
        url: str | None = None,
        *,
        user: str | None = None,
        mem_limit: str | int | None = None,
        network_mode: str | None = None,
        entrypoint: list[str] | None = None,
        tail_lines: int = 30,
    ) -> None:
        from tasks.settings import get_settings

        settings = get_settings()
        self.image = image or settings.trainer_image
        self.url = url or settings.docker_url
        self.user = f"{os.getuid()}:{os.getgid()}" if user is None else user
        self.mem_limit = mem_limit
        self.network_mode = network_mode or os.environ.get("NCBI_RETRAIN_DOCKER_NETWORK") or None
        self.entrypoint = entrypoint
        self.tail_lines = tail_lines

    # -------------------------------------------------------------------------------- pieces
    def client(self) -> Any:
        """A docker-py client for `self.url`; ServiceError when the engine does not answer."""
        import docker

        try:
            client = docker.DockerClient(base_url=self.url, timeout=_API_TIMEOUT_S)
            client.ping()
        except Exception as exc:  # docker-py raises DockerException, requests' errors, or OSError
            raise ServiceError(
                f"container engine not reachable at {self.url} (NCBI_RETRAIN_DOCKER_URL): {exc}"
            ) from exc
        return client

    def image_id(self, client: Any) -> str:
        """The local image's ID; JobFailed naming the image when the engine does not have it."""
        import docker.errors

        try:
            return client.images.get(self.image).id
        except docker.errors.ImageNotFound:
            raise JobFailed(
                f"trainer image {self.image!r} not found on {self.url} (NCBI_RETRAIN_TRAINER_IMAGE): "
                "build it (`scripts/podman.sh build` or `docker build -f docker/trainer.Dockerfile .`) "
                "or pull it"
            ) from None

    def environment(self, job: Job, image_id: str) -> dict[str, str]:
        """Settings and MLflow variables of this process, `job.env` over them, plus provenance."""
        from tasks.settings import get_settings

        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED) and k not in _NOT_FORWARDED}
        env["NCBI_RETRAIN_MLFLOW_ARTIFACT_ROOT"] = str(self._artifact_root(get_settings()))
        env |= {"NCBI_RETRAIN_IMAGE": image_id, **job.env}
        if "NCBI_RETRAIN_GIT_COMMIT" not in env:
            from tasks.provenance import git_commit

            env["NCBI_RETRAIN_GIT_COMMIT"] = git_commit()
        return env

    @staticmethod
    def _artifact_root(settings: Any) -> Path:
        return settings.path(settings.mlflow_artifact_root).resolve()

    def mount_paths(self, job: Job) -> list[Path]:
        """`job.mounts` plus a local MLflow store's folders (created if missing), without duplicates."""
        from tasks.settings import get_settings

        settings = get_settings()
        paths = [Path(p).resolve() for p in job.mounts]
        uri = job.env.get("MLFLOW_TRACKING_URI") or settings.mlflow_tracking_uri
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            db = (db if db.is_absolute() else settings.project_dir / db).resolve()
            for extra in (db.parent, self._artifact_root(settings)):
                extra.mkdir(parents=True, exist_ok=True)
                paths.append(extra)
        unique: list[Path] = []
        for p in paths:  # a folder inside another mounted one is already visible
            if not any(p == q or q in p.parents for q in unique):
                unique = [q for q in unique if p not in q.parents] + [p]
        return unique

    def create_kwargs(self, job: Job, image_id: str) -> dict[str, Any]:
        """The `containers.create` arguments for `job` (pure: unit-testable without an engine)."""
        from docker.types import DeviceRequest, Mount

        mounts = []
        for path in self.mount_paths(job):
            if not path.exists():
                raise JobFailed(f"{job.name}: mount source {path} does not exist")
            mounts.append(Mount(target=str(path), source=str(path), type="bind", read_only=False))
        kwargs: dict[str, Any] = {
            "image": image_id,
            "command": list(job.argv),
            "environment": self.environment(job, image_id),
            "mounts": mounts,
            "labels": {"ncbi-retrain.job": job.name},
            "detach": True,
            # An init as PID 1 forwards the stop's SIGTERM (PID 1 ignores it) and reaps NeMo's workers.
            "init": True,
        }
        if self.user:
            kwargs["user"] = self.user
        if self.entrypoint is not None:
            kwargs["entrypoint"] = list(self.entrypoint)
        if self.mem_limit is not None:
            # Swap as large as the limit: the limit is the job's real ceiling, OOM instead of thrashing.
            kwargs["mem_limit"] = self.mem_limit
            kwargs["memswap_limit"] = self.mem_limit
        if self.network_mode:
            kwargs["network_mode"] = self.network_mode
        if job.gpus > 0:
            kwargs["device_requests"] = [DeviceRequest(count=job.gpus, capabilities=[["gpu"]])]
            kwargs["shm_size"] = "8g"  # PyTorch dataloaders and NCCL use /dev/shm; 64 MB is Docker's default
        return kwargs

    # -------------------------------------------------------------------------------- run
    def run(self, job: Job) -> JobResult:
        """Run `job` to completion; raise JobFailed on a non-zero exit, an OOM kill or a timeout."""
        client = self.client()
        try:
            image_id = self.image_id(client)
            container = client.containers.create(**self.create_kwargs(job, image_id))
        except JobFailed:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise JobFailed(f"{job.name}: could not create a container of {self.image}: {exc}") from exc
        log.info(
            "%s: container %s of %s: ncbi-retrain %s",
            job.name,
            container.short_id,
            self.image,
            " ".join(job.argv),
        )
        stdout: list[str] = []
        tail: deque[str] = deque(maxlen=self.tail_lines)
        try:
            container.start()
            pump = threading.Thread(target=self._pump, args=(container, job.name, tail), daemon=True)
            pump.start()
            timed_out = False
            try:
                status = container.wait(timeout=job.timeout_s)
            except Exception as exc:  # requests' ReadTimeout / ConnectionError when the deadline passes
                if not _is_timeout(exc):
                    raise
                timed_out = True
                log.warning(
                    "%s: timed out after %s s, stopping %s", job.name, job.timeout_s, container.short_id
                )
                with contextlib.suppress(Exception):
                    container.stop(timeout=_STOP_GRACE_S)
                status = {}
            pump.join(timeout=10)
            code = int(status.get("StatusCode", -1))
            state = _state(container)
            # The full stdout (the `--json` line is its last), from the engine's log, after exit.
            stdout = _decode(container.logs(stdout=True, stderr=False)).splitlines()
            last = list(tail)
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)  # also when the Airflow task itself is cancelled
            client.close()
        lines = " | ".join(last[-10:]) or "(no output)"
        if timed_out:
            raise JobFailed(
                f"{job.name} timed out after {job.timeout_s:g} s; container stopped and removed; "
                f"last log lines: {lines}"
            )
        if code != 0:
            if state.get("OOMKilled"):
                how = f"was killed for exceeding its memory limit {self.mem_limit or ''} (OOM)"
            elif code == 137 and self.mem_limit is not None:
                # podman on cgroup v1 does not report OOMKilled; a SIGKILL under a limit is the OOM killer.
                how = f"was killed by SIGKILL (exit 137) under its memory limit {self.mem_limit}: OOM"
            elif code == 137:
                how = "was killed by SIGKILL (exit 137: out of memory, or stopped by the engine)"
            else:
                how = f"exited with code {code}"
            raise JobFailed(f"{job.name} {how} in {self.image}; last log lines: {lines}")
        log.info("%s: finished", job.name)
        return JobResult(exit_code=code, stdout="\n".join(stdout), log_tail=last)

    def _pump(self, container: Any, name: str, tail: deque[str]) -> None:
        """Stream stdout+stderr to the task log as it comes, keeping the last lines."""
        buf = ""
        with contextlib.suppress(Exception):  # the stream ends with an error when the container is killed
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                buf += _decode(chunk)
                *lines, buf = buf.split("\n")
                for line in lines:
                    tail.append(line)
                    log.info("[%s] %s", name, line)
        if buf:
            tail.append(buf)
            log.info("[%s] %s", name, buf)


def _decode(data: bytes | str) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _state(container: Any) -> dict[str, Any]:
    with contextlib.suppress(Exception):
        container.reload()
        return dict(container.attrs.get("State") or {})
    return {}


def _is_timeout(exc: Exception) -> bool:
    import requests

    return isinstance(exc, requests.exceptions.ReadTimeout | requests.exceptions.ConnectionError)
