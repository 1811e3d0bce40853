"""How a training-env command (`ncbi-retrain train|evaluate ...`) runs: local venv, container or pod.

The orchestration env never imports NeMo; it hands a `Job` (the same argv a container would get) to a
launcher chosen by `Settings.launcher`, and reads back the command's `--json` line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tasks.errors import NcbiRetrainError


@dataclass(frozen=True)
class Job:
    """One `ncbi-retrain` invocation in the training env."""

    argv: list[str]  # arguments after `ncbi-retrain`, e.g. ["train", "ner", "--data", ..., "--json"]
    env: dict[str, str] = field(default_factory=dict)  # extra env (MLflow URI, data version, dag run id)
    mounts: list[Path] = field(default_factory=list)  # host paths the job reads/writes (same path inside)
    timeout_s: float | None = None
    gpus: int = 0
    name: str = "ncbi-retrain-job"


@dataclass(frozen=True)
class JobResult:
    exit_code: int
    stdout: str
    log_tail: list[str]  # last lines of the job's log (stderr / container log), for error messages

    def json_line(self) -> dict:
        """The last stdout line that parses as a JSON object (the command's `--json` output)."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        raise JobFailed(f"the job printed no JSON result line; last log lines: {' | '.join(self.log_tail)}")


class JobFailed(NcbiRetrainError):
    """The training job exited non-zero, was killed, or timed out; the message carries its last log lines."""

    exit_code = 1


class Launcher(Protocol):
    def run(self, job: Job) -> JobResult:
        """Run the job to completion; raise JobFailed on a non-zero exit, OOM kill or timeout."""
        ...


def get_launcher(kind: str | None = None) -> Launcher:
    """The launcher named by `kind` or `Settings.launcher` (`local`, `docker`, `kubernetes`)."""
    from tasks.settings import get_settings

    kind = kind or get_settings().launcher
    if kind == "local":
        from tasks.launch.local import LocalLauncher

        return LocalLauncher()
    if kind == "docker":
        from tasks.launch.docker import DockerLauncher

        return DockerLauncher()
    if kind == "kubernetes":
        from tasks.launch.kubernetes import KubernetesLauncher

        return KubernetesLauncher()
    raise NcbiRetrainError(
        f"unknown launcher {kind!r} (NCBI_RETRAIN_LAUNCHER): use local, docker or kubernetes"
    )
