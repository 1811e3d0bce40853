"""Airflow's REST API as `ncbi-retrain approve` uses it: answer a pending approval of `ncbi_retrain`.

A JWT from `POST /auth/token` (user and password from `NCBI_RETRAIN_AIRFLOW_USER` / `_PASSWORD`), then the
human-in-the-loop endpoints of `/api/v2` through Airflow's own client (`apache-airflow-client`, orchestration
env): `GET .../taskInstances/{model}.approval/-1/hitlDetails` finds the request, `PATCH` the same answers
it (Approve / Reject and the reason), as the user the token names, who is then recorded as the approver.
Every error is one sentence: Airflow down, wrong password, no pending approval for that run and model
(no such run, not asked yet, skipped, already answered), or a user without the right to answer.

A request is answered no sooner than `SETTLE_S` after it was made: Airflow 3.3.2 (LocalExecutor) loses
an answer that re-queues the task before its scheduler has handled the exit of the worker that parked it
(it takes the task for one killed externally and retries it, and the retry asks anew).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from tasks.errors import ServiceError, UsageError
from tasks.pipeline.approval import RETRAIN_DAG_ID, approval_task_id
from tasks.settings import Settings, get_settings
from tasks.vocab import APPROVAL_REASON, APPROVE, REJECT, Approval, Model

TIMEOUT_S = 15  # per request: an api-server that does not answer is down for our purpose
CREDENTIALS = "NCBI_RETRAIN_AIRFLOW_USER / _PASSWORD; `make up` prints them"
WAITING = ("awaiting_input", "deferred", "running")  # the request exists and can be answered
SETTLE_S = 15.0  # a request's minimum age before it is answered (Airflow 3.3.2's race, see above)


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    """Connection failures (refused, timed out, DNS) and unexpected answers as one ServiceError naming
    the URL (the expected refusals are UsageErrors raised inside)."""
    import requests
    import urllib3

    try:
        yield
    except ImportError as exc:  # the training env has no REST client: this command belongs to .venv
        raise ServiceError(
            f"the Airflow REST client is not installed here ({exc.name}): use the orchestration env (.venv)"
        ) from None
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
        text = str(exc)
        cause = (
            "connection refused"
            if "refused" in text
            else f"no answer within {TIMEOUT_S} s"
            if isinstance(exc, requests.Timeout) or "timed out" in text
            else type(exc).__name__
        )
        raise ServiceError(
            f"Airflow at {url} is unreachable ({cause}): start it (`make up`) or set NCBI_RETRAIN_AIRFLOW_URL"
        ) from None
    except Exception as exc:
        from airflow_client.client.exceptions import ApiException

        if not isinstance(exc, ApiException):
            raise
        raise ServiceError(
            f"Airflow at {url} answered {exc.status} {exc.reason}: {(exc.body or '')[:200]}"
        ) from None


def access_token(settings: Settings | None = None) -> str:
    """A JWT for the configured user (`POST /auth/token`)."""
    import requests

    settings = settings or get_settings()
    url, user = settings.airflow_url.rstrip("/"), settings.airflow_user
    if settings.airflow_password is None:
        raise UsageError(
            f"no Airflow password for user {user}: set NCBI_RETRAIN_AIRFLOW_PASSWORD ({CREDENTIALS})"
        )
    with _reachable(url):
        resp = requests.post(
            f"{url}/auth/token",
            json={"username": user, "password": settings.airflow_password.get_secret_value()},
            timeout=TIMEOUT_S,
        )
    if resp.status_code in (401, 403):
        raise UsageError(f"Airflow at {url} refused user {user}: wrong user name or password ({CREDENTIALS})")
    if resp.status_code not in (200, 201) or "access_token" not in (resp.json() if _is_json(resp) else {}):
        raise ServiceError(
            f"Airflow at {url} answered {resp.status_code} to POST /auth/token: {resp.text[:200]}"
        )
    return resp.json()["access_token"]


def _is_json(resp: Any) -> bool:
    return resp.headers.get("content-type", "").startswith("application/json")


def answer_approval(
    model: Model | str, dag_run_id: str, approve: bool, reason: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Approve or reject the pending approval of `model` in the `ncbi_retrain` run `dag_run_id`.

    Returns {model, dag_id, dag_run_id, task_id, answer, reason, by, at}; raises UsageError when there is
    nothing to answer (with why), the user may not answer or the credentials are wrong, ServiceError when
    Airflow is unreachable.
    """
    model = Model.parse(str(model))
    if not reason.strip():
        raise UsageError("--reason is empty: say why you approve or reject (it is recorded)")
    settings = settings or get_settings()
    url, user = settings.airflow_url.rstrip("/"), settings.airflow_user
    with _reachable(url):
        from airflow_client.client import ApiClient, Configuration
        from airflow_client.client.api.task_instance_api import TaskInstanceApi
        from airflow_client.client.exceptions import (
            ConflictException,
            ForbiddenException,
            NotFoundException,
            UnauthorizedException,
        )
        from airflow_client.client.models.update_hitl_detail_payload import UpdateHITLDetailPayload

    task_id = approval_task_id(model)
    what = f"{model} in run {dag_run_id}"
    token = access_token(settings)
    config = Configuration(host=url, access_token=token, retries=1)
    with ApiClient(config) as api_client, _reachable(url):
        tis = TaskInstanceApi(api_client)
        try:
            detail = tis.get_hitl_detail(RETRAIN_DAG_ID, dag_run_id, task_id, -1, _request_timeout=TIMEOUT_S)
        except NotFoundException:
            raise UsageError(
                f"no pending approval for {what}: {_why_none(api_client, dag_run_id, task_id)}"
            ) from None
        except (UnauthorizedException, ForbiddenException):
            raise UsageError(
                f"Airflow user {user} may not read approvals of {RETRAIN_DAG_ID} at {url}"
            ) from None
        if detail.response_received:
            done = Approval.from_response(detail.to_dict())
            said = done.describe() if done else "answered"
            raise UsageError(f"no pending approval for {what}: it was already {_past(said)}")
        state = str(getattr(detail.task_instance.state, "value", detail.task_instance.state) or "")
        if state not in WAITING:
            raise UsageError(f"no pending approval for {what}: its approval task is {state or 'not running'}")
        age = (datetime.now(UTC) - detail.created_at).total_seconds()
        if age < SETTLE_S:
            time.sleep(SETTLE_S - max(age, 0.0))
        payload = UpdateHITLDetailPayload(
            chosen_options=[APPROVE if approve else REJECT], params_input={APPROVAL_REASON: reason.strip()}
        )
        try:
            answered = tis.update_hitl_detail(
                RETRAIN_DAG_ID, dag_run_id, task_id, -1, payload, _request_timeout=TIMEOUT_S
            )
        except ForbiddenException:
            raise UsageError(
                f"Airflow user {user} may not answer the approval of {what} (needs a role that may edit "
                f"{RETRAIN_DAG_ID}'s task instances, or to be one of its assigned approvers)"
            ) from None
        except ConflictException:
            raise UsageError(f"no pending approval for {what}: someone answered it a moment ago") from None
    return {
        "model": model.value,
        "dag_id": RETRAIN_DAG_ID,
        "dag_run_id": dag_run_id,
        "task_id": task_id,
        "answer": answered.chosen_options[0],
        "reason": (answered.params_input or {}).get(APPROVAL_REASON),
        "by": answered.responded_by.name,
        "at": answered.responded_at.isoformat(timespec="seconds"),
    }


def _past(said: str) -> str:
    """`approved by alice: ...` reads on; a timeout's description starts with `not approved`."""
    return said if not said.startswith("not ") else f"closed: {said}"


def _why_none(api_client: Any, dag_run_id: str, task_id: str) -> str:
    """Why a run has no approval request for the task: no such run, not asked yet, or skipped."""
    from airflow_client.client.api.dag_run_api import DagRunApi
    from airflow_client.client.api.task_instance_api import TaskInstanceApi
    from airflow_client.client.exceptions import NotFoundException

    try:
        DagRunApi(api_client).get_dag_run(RETRAIN_DAG_ID, dag_run_id, _request_timeout=TIMEOUT_S)
    except NotFoundException:
        return f"{RETRAIN_DAG_ID} has no run {dag_run_id!r}"
    try:
        ti = TaskInstanceApi(api_client).get_task_instance(
            RETRAIN_DAG_ID, dag_run_id, task_id, _request_timeout=TIMEOUT_S
        )
    except NotFoundException:
        return f"the run has no task {task_id}"
    state = str(getattr(ti.state, "value", ti.state) or "")
    if state == "skipped":
        return "its approval was skipped (the run's promote mode is not approve, or the gate failed)"
    if state in ("", "none", "scheduled", "queued", "up_for_retry", "up_for_reschedule"):
        return "it has not asked yet (still training or gating): answer once it waits in required actions"
    return f"its approval task is {state}"
