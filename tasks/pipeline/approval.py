"""The approval step of `ncbi_retrain` (promote=approve): what the approver sees, and their answer.

Between a passed gate and the move of `champion`, Airflow's own human-in-the-loop operator (the standard
provider's `HITLOperator`, options Approve / Reject, a free-text reason) waits in the UI's required
actions; `ncbi-retrain approve` answers it through the REST API (`tasks.airflow_api`). This module builds
the request it shows (`approval_request`: the gate metric against the champion with its confidence
intervals, per-class changes, behavioural results, where the report and the MLflow run are) and reads
the answer back (`tasks.vocab.Approval.from_response`, used by `steps.promote`). No Airflow import.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks.vocab import (
    APPROVE,
    REJECT,
    ApprovalRequest,
    GateDecision,
    GateResult,
    MetricsDocument,
    Model,
    PromoteMode,
    Registration,
    RunParams,
    TrainResult,
    class_name,
)

log = logging.getLogger(__name__)

RETRAIN_DAG_ID = "ncbi_retrain"  # dags/ncbi_retrain.py (its file stem)
APPROVAL_TASK = "approval"  # task id of the HITL operator in each model's task group


def duration_text(span: timedelta) -> str:
    """24 h, 90 min, 30 s: how the approval's timeout reads in the UI and the summary."""
    seconds = round(span.total_seconds())
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def approval_task_id(model: Model | str) -> str:
    """`classifier.approval`: where `ncbi-retrain approve` finds the request."""
    return f"{Model(model).value}.{APPROVAL_TASK}"


def approval_request(
    model: Model | str,
    registered: Registration,
    gated: GateResult,
    trained: TrainResult,
    options: RunParams,
    dag_run_id: str,
    timeout: timedelta,
) -> ApprovalRequest:
    """Whether this model's version waits for a person (promote=approve and a passed gate) and, if so,
    the subject and Markdown body of the approval task."""
    from tasks.gates import load_decision, load_metrics
    from tasks.registry import champion_version

    model = Model(model)
    name, version = registered.name, registered.version
    if options.promote != PromoteMode.approve:
        why = f"promote={options.promote.value}: no approval asked"
        return ApprovalRequest(needed=False, reason=f"{name} v{version}: {why}", name=name, version=version)
    if not gated.passed:
        why = f"{name} v{version} failed its gate: nothing to approve ({gated.reason})"
        return ApprovalRequest(needed=False, reason=why, name=name, version=version)
    decision = load_decision(Path(gated.decision))
    candidate = load_metrics(Path(trained.metrics_file))
    champion = (champion_version(model.value) or {}).get("version")
    deadline = datetime.now(UTC) + timeout
    body = approval_body(
        model, registered, decision, candidate, trained, champion, Path(gated.decision), dag_run_id, timeout
    )
    by = deadline.isoformat(timespec="minutes")
    body += f"\n\nNo answer within {duration_text(timeout)} (by about {by}) counts as a reject."
    metric = f"{decision.metric} {decision.candidate_value:.4f}"
    versus = "no champion yet" if champion is None else f"champion v{champion} {decision.champion_value:.4f}"
    return ApprovalRequest(
        needed=True,
        reason=f"{name} v{version} passed its gate; promote=approve: waiting for a person",
        name=name,
        version=version,
        subject=f"Make {name} v{version} the champion? ({metric} vs {versus})",
        body=body,
    )


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def approval_body(
    model: Model,
    registered: Registration,
    decision: GateDecision,
    candidate: MetricsDocument,
    trained: TrainResult,
    champion: str | None,
    decision_file: Path,
    dag_run_id: str,
    timeout: timedelta,
) -> str:
    """The decision as the approver reads it (Markdown, rendered by Airflow's required-actions page)."""
    name, version, metric = registered.name, registered.version, decision.metric
    lines = [
        f"**{name} v{version}** passed its gate in run `{dag_run_id}`. "
        f"**Approve** makes it the `champion` (recorded as your move); **Reject** keeps it `challenger` "
        "only. Either way, say why in *Reason*: it is recorded on the version and in the run summary.",
        "",
        f"| {metric} (test) | value | 95% CI |",
        "|---|---|---|",
    ]
    low, high = trained.metrics.get(f"test_{metric}_ci_low"), trained.metrics.get(f"test_{metric}_ci_high")
    ci = f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "-"
    lines.append(f"| challenger v{version} | **{decision.candidate_value:.4f}** | {ci} |")
    boot = next((c for c in decision.checks if c.name.startswith("bootstrap_")), None)
    if decision.champion_value is None:
        lines.append("| champion | none yet | |")
    else:
        lines.append(f"| champion v{champion} | {decision.champion_value:.4f} | |")
    if boot is not None:
        n = boot.numbers
        lines.append(
            f"| difference (paired bootstrap) | {_signed(n['observed_diff'])} | "
            f"[{_signed(n['ci_low'])}, {_signed(n['ci_high'])}] |"
        )
    if decision.per_class_f1:
        lines += ["", "| class | F1 challenger | F1 champion | change |", "|---|---|---|---|"]
        for label, f1 in decision.per_class_f1.items():
            cand, champ = f1.get("candidate"), f1.get("champion")
            change = "-" if cand is None or champ is None else _signed(cand - champ)
            lines.append(
                f"| {class_name(label)} | {'-' if cand is None else f'{cand:.4f}'} | "
                f"{'-' if champ is None else f'{champ:.4f}'} | {change} |"
            )
    lines += ["", "**Gate checks**", ""]
    lines += [f"- {'pass' if c.passed else 'FAIL'} `{c.name}`: {c.detail}" for c in decision.checks]
    lines += ["", "**Behaviour** (tasks/behaviour.yaml, as the challenger predicted)", ""]
    judged = any(c.name == "behaviour" for c in decision.checks)
    if candidate.behaviour:
        right = sum(1 for r in candidate.behaviour if r.predicted == r.expected)
        note = "" if judged else f" (not part of the gate for profile {decision.profile})"
        lines.append(f"{right} of {len(candidate.behaviour)} sentences as expected{note}.")
        lines += ["", "| sentence | expected | predicted |", "|---|---|---|"]
        for r in candidate.behaviour:
            text = r.text if len(r.text) <= 70 else r.text[:67] + "..."
            mark = "" if r.predicted == r.expected else " **(wrong)**"
            lines.append(f"| {text} | {r.expected} | {r.predicted}{mark} |")
    else:
        lines.append("No behavioural sentences were scored for this model.")
    report = decision_file.with_suffix(".md")
    lines += [
        "",
        "**Report**",
        "",
        f"- gate report with plots: `{report}` (decision JSON `{decision_file}`)",
        f"- MLflow: {_mlflow_where(name, version, trained.run_id)}",
        "",
        "From a shell: "
        f"`ncbi-retrain approve {model.value} --run '{dag_run_id}' --reason \"...\"` "
        f"(add `--reject` to reject). Options here: {APPROVE} / {REJECT}.",
    ]
    return "\n".join(lines)


def _mlflow_where(name: str, version: str, run_id: str) -> str:
    """The version and run in MLflow's UI when the store is a server, else their ids."""
    from tasks.settings import get_settings

    uri = get_settings().tracking_uri().rstrip("/")
    if uri.startswith(("http://", "https://")):
        return f"[model version]({uri}/#/models/{name}/versions/{version}), run `{run_id}`"
    return f"model version `{name}/{version}`, run `{run_id}` (store `{uri}`)"
