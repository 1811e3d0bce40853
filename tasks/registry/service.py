"""The MLflow client of the registry and the translation of MLflow's errors into ours.

An unreachable server must fail in seconds (ServiceError, exit 3), not after MLflow's ~4 minutes of
retries; an unknown run, version or model is the caller's mistake (UsageError, exit 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import DataError, GateFailed, ServiceError, UsageError
from tasks.settings import get_settings
from tasks.vocab import MODELS, Model

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Bounded retries, set before MLflow is imported (it reads them then); the user's own settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def registered_name(model: str) -> str:
    """`classifier` / `ner` -> the registered model name; any other string is taken as a full name."""
    if model in MODELS:
        return Model(model).registered_name
    if not model or "'" in model or "@" in model:
        raise UsageError(f"invalid registered model name {model!r}")
    return model


def bound_http_retries() -> None:
    """MLflow's HTTP retries and timeout bounded (`HTTP_DEFAULTS`) unless the user set them; MLflow reads
    them at each request, so call this before the first one (the training env's MLflow calls too)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def client() -> MlflowClient:
    """A client on `Settings.tracking_uri()`, also set as MLflow's global tracking and registry URI."""
    bound_http_retries()
    import mlflow
    from mlflow import MlflowClient

    uri = get_settings().tracking_uri()
    if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # models:/ and runs:/ artifact URIs resolve through the global URIs, so set both globally.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def mlflow_call(action: str) -> Iterator[None]:
    """Turn MLflow / HTTP / DB exceptions raised while doing `action` into one-sentence errors."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (DataError, UsageError, GateFailed, ServiceError):
        raise
    except MlflowException as exc:
        if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise _auth_error(action, exc.error_code) from exc
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise UsageError(f"{action}: {_first_line(exc.message)}") from exc
        if exc.error_code == "INVALID_PARAMETER_VALUE" and not _unreachable(exc):
            raise UsageError(f"{action}: {_first_line(exc.message)}") from exc
        if _unreachable(exc):
            raise _unreachable_error(action) from exc
        raise ServiceError(f"MLflow refused to {action}: {_first_line(exc.message)}") from exc
    except Exception as exc:
        if _unreachable(exc):
            raise _unreachable_error(action) from exc
        raise


def _unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    markers = (
        "Max retries exceeded",
        "ConnectionError",
        "Connection refused",
        "timed out",
        "Connection aborted",
    )
    return any(m in text for m in markers) or type(exc).__name__ in ("OperationalError", "ConnectionError")


def _unreachable_error(action: str) -> ServiceError:
    return ServiceError(
        f"MLflow at {get_settings().tracking_uri()} is unreachable while trying to {action}: start the "
        "server or point MLFLOW_TRACKING_URI at it"
    )


def _auth_error(action: str, code: str) -> ServiceError:
    uri, user = get_settings().tracking_uri(), os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED":
        who = f"user {user!r}" if user else "no user (MLFLOW_TRACKING_USERNAME is not set)"
        return ServiceError(
            f"MLflow at {uri} refused the credentials of {who} while trying to {action} (HTTP 401): check "
            "the user name and password in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )
    return ServiceError(
        f"MLflow at {uri}: user {user!r} may not {action} (HTTP 403): an MLflow admin must grant it"
    )


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else "unknown error"
