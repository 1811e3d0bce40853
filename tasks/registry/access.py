"""Who may move aliases on our two registered models (MLflow's basic-auth app, `make up`'s server).

Setting or deleting an alias needs EDIT on the registered model; `default_permission = READ`
(mlflow/basic_auth.ini) gives every other signed-in user READ only. So: the pipeline's account gets
MANAGE on both models (it moves `challenger` and `champion`, and `ncbi_champion` reverts), a reader
account gets READ, and nobody else can move an alias. A person allowed to promote gets EDIT on a model
(README: "Letting a person promote"); `ncbi_champion` still verifies every move they make.
"""

from __future__ import annotations

import os
from typing import Any

from tasks.errors import UsageError
from tasks.registry.service import client, mlflow_call
from tasks.settings import get_settings
from tasks.vocab import MODELS

RESOURCE_TYPE = "registered_model"  # mlflow.server.auth.permissions.RESOURCE_TYPE_REGISTERED_MODEL
PIPELINE_PASSWORD_ENV = "NCBI_RETRAIN_PIPELINE_PASSWORD"
READER_PASSWORD_ENV = "NCBI_RETRAIN_READER_PASSWORD"


def _ensure_user(auth: Any, username: str, password: str) -> bool:
    """Create `username`, or set its password when it exists; True when created."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(username)
    except MlflowException:
        auth.create_user(username, password)
        return True
    auth.update_user_password(username, password)
    return False


def _grant(auth: Any, user: str, name: str, permission: str) -> None:
    """Give `user` exactly `permission` on the registered model `name` (replacing an earlier grant)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(user, RESOURCE_TYPE, name, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(user, RESOURCE_TYPE, name)
        auth.grant_user_permission(user, RESOURCE_TYPE, name, permission)


def setup_access(pipeline_user: str, reader_user: str | None = None) -> dict[str, Any]:
    """Users and registered-model permissions: the pipeline MANAGE, the reader READ (idempotent).

    Passwords come from NCBI_RETRAIN_PIPELINE_PASSWORD / NCBI_RETRAIN_READER_PASSWORD, never from the
    command line. Run as an MLflow admin (MLFLOW_TRACKING_USERNAME / _PASSWORD). Both registered models
    are created when missing, so the grants have something to point at before the first training run.
    """
    from mlflow.server.auth.client import AuthServiceClient

    users = {pipeline_user: (PIPELINE_PASSWORD_ENV, "MANAGE")}
    if reader_user:
        users[reader_user] = (READER_PASSWORD_ENV, "READ")
    passwords = {u: os.environ.get(env, "") for u, (env, _) in users.items()}
    for user, (env, _) in users.items():
        if not passwords[user]:
            raise UsageError(f"{env} is not set: the password of the MLflow user {user}")
    mlflow_client = client()
    auth = AuthServiceClient(get_settings().tracking_uri())
    out: dict[str, Any] = {"users": {}, "models": []}
    with mlflow_call("set up users and permissions"):
        for model in MODELS:
            name = model.registered_name
            if not mlflow_client.search_registered_models(filter_string=f"name = '{name}'"):
                mlflow_client.create_registered_model(name, description=f"ncbi-retrain: the {model} model.")
            out["models"].append(name)
        for user, (_, permission) in users.items():
            created = _ensure_user(auth, user, passwords[user])
            for name in out["models"]:
                _grant(auth, user, name, permission)
            out["users"][user] = {"permission": permission, "created": created}
    return out
