"""The approval step (promote=approve) as the standard provider's human-in-the-loop operator.

`approval_operator(task_id, source, timeout)` returns an `HITLOperator` with the options Approve / Reject
and one free-text field, *reason*; its subject and Markdown body are what the `source` task (an
`ApprovalRequest`, built by `tasks.pipeline.approval`) wrote. On Airflow 3.3 the task parks in the
`awaiting_input` state (no worker slot, no triggerer) and shows under the UI's required actions; it is
answered there or through the REST API (`ncbi-retrain approve`), and the scheduler resolves it with the
default, Reject, when nobody answers within `timeout`. A `pre_execute` hook skips it, with the source's
reason, when no approval is needed (promote=auto / never, or a failed gate), so nothing waits then.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

from tasks.vocab import APPROVAL_REASON, APPROVE, REJECT


def skip_unless_needed(source_task_id: str):
    """A pre_execute hook: skip the approval, with the source's reason, when none is needed."""

    def pre_execute(context: Any) -> None:
        record = context["ti"].xcom_pull(task_ids=source_task_id) or {}
        if not record.get("needed"):
            raise AirflowSkipException(record.get("reason") or f"{source_task_id} asked for no approval")

    return pre_execute


def approval_operator(task_id: str, source: Any, timeout: timedelta, **kwargs: Any) -> HITLOperator:
    """The HITL operator asking what `source` (an XComArg of an ApprovalRequest task) describes."""
    src = source.operator.task_id

    def field(key: str) -> str:  # a template of the request's field, rendered on the worker
        return "{{ (ti.xcom_pull(task_ids='" + src + "') or {}).get('" + key + "', '') }}"

    op = HITLOperator(
        task_id=task_id,
        subject=field("subject"),
        body=field("body"),
        options=[APPROVE, REJECT],
        defaults=[REJECT],  # what the scheduler answers when nobody did within the timeout
        params={
            APPROVAL_REASON: Param(
                None,
                type=["null", "string"],
                title="Reason",
                description="Why you approve or reject (recorded on the version and in the run summary).",
            )
        },
        response_timeout=timeout,
        pre_execute=skip_unless_needed(src),
        **kwargs,
    )
    source >> op
    return op
