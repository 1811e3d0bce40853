"""Errors the CLI turns into one sentence on stderr and a non-zero exit code."""

from __future__ import annotations


class NcbiRetrainError(Exception):
    """Base class: the message is one sentence naming the file, line and field at fault."""

    exit_code = 1


class DataError(NcbiRetrainError):
    """Input data is not what it claims to be (bad format, truncated, invalid)."""

    exit_code = 1


class UsageError(NcbiRetrainError):
    """Bad arguments, a missing file or directory, an I/O problem."""

    exit_code = 2


class ServiceError(NcbiRetrainError):
    """A service (MLflow, DVC remote, container engine) is unreachable or refused the call."""

    exit_code = 3


class GateFailed(NcbiRetrainError):
    """A candidate did not pass its gate (used where a failed gate must stop a pipeline)."""

    exit_code = 4


class JobFailed(NcbiRetrainError):
    """A training-env job (`ncbi-retrain train|evaluate` run by an Airflow operator) failed or returned no
    result; the message names the job and what it printed last."""

    exit_code = 1
