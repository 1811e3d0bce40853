"""`TrainerDockerOperator`: the Docker provider's `DockerOperator` for training-env jobs, plus only what it
does not do, each said where it is done: the worker's credentials as private environment, the image ID
as lineage tag, a failure message naming the cause, and an `on_kill` that lets a timeout stay the error.
Imported when `NCBI_RETRAIN_LAUNCHER=docker`, so the other launchers never load docker-py."""

from __future__ import annotations

import ast
import contextlib
import os
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk.exceptions import AirflowException

from tasks.pipeline.jobs import explain_exit, forwarded_env, missing_image


class TrainerDockerOperator(DockerOperator):
    """Runs one `ncbi-retrain` job in the trainer image; everything else is the provider's DockerOperator.

    Args:
        job_name: the job's name (`train-classifier`): container label and error messages.
    """

    def __init__(self, *, job_name: str, **kwargs: Any) -> None:
        super().__init__(labels={"ncbi-retrain.job": job_name}, **kwargs)
        self.job_name = job_name

    def execute(self, context: Any) -> Any:
        import docker.errors

        # The worker's credentials and settings, private: never in XCom, the UI or the serialized DAG.
        self._private_environment = {
            **forwarded_env(os.environ, self.environment),
            **self._private_environment,
        }
        # Lineage: tag the MLflow run with the ID of the image that trains (a tag like :latest moves).
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.environment["NCBI_RETRAIN_IMAGE"] = self.cli.inspect_image(self.image)["Id"]
        try:
            return super().execute(context)
        except DockerContainerFailedException as exc:
            # The provider's message is only the wait() status; name the cause (podman on cgroup v1
            # reports no OOMKilled, so exit 137 under mem_limit is the OOM killer) and the last lines.
            status = _status(str(exc))
            raise AirflowException(
                explain_exit(
                    self.job_name,
                    int(status.get("StatusCode", -1)),
                    image=self.image,
                    mem_limit=None if self.mem_limit is None else str(self.mem_limit),
                    log_lines=[_text(line) for line in (exc.logs or [])],
                )
            ) from exc
        except docker.errors.ImageNotFound as exc:  # the provider's pull failed quietly; create said 404
            detail = exc.explanation or str(exc)
            raise AirflowException(missing_image(self.image, str(self.docker_url), str(detail))) from exc

    def on_kill(self) -> None:
        import docker.errors

        # After a timeout the provider's own `finally` has already force-removed the container; its
        # on_kill then gets a 404 from stop(), which would replace the timeout as the task's error.
        with contextlib.suppress(docker.errors.NotFound):
            super().on_kill()


def _status(message: str) -> dict[str, Any]:
    """The wait() status in the provider's message ("Docker container failed: {'StatusCode': 137, ...}")."""
    with contextlib.suppress(ValueError, SyntaxError):
        status = ast.literal_eval(message.split(":", 1)[1].strip())
        if isinstance(status, dict):
            return status
    return {}


def _text(line: str | bytes) -> str:
    return line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line)
