"""The run summary (`summary.json`, the `summarize` task's XCom) and the demo's result table."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.files import atomic_write_json
from tasks.pipeline.rundir import run_dir
from tasks.vocab import (
    Approval,
    ApprovalRequest,
    DataRef,
    GateResult,
    Model,
    ModelSummary,
    Plan,
    Promotion,
    Record,
    Registration,
    RunSummary,
    TrainResult,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutcome:
    """What one model's tasks returned; None where a task was skipped (or never ran)."""

    plan: Plan | None = None
    train: TrainResult | None = None
    gate: GateResult | None = None
    register: Registration | None = None
    promote: Promotion | None = None
    request: ApprovalRequest | None = None
    approval: Approval | None = None

    @classmethod
    def from_xcom(cls, values: Mapping[str, Any]) -> ModelOutcome:
        """From the tasks' XComs by name (plan, train, gate, register, promote, approval_request, and
        approval: the HITL operator's answer); None for a skipped one."""

        def record(kind: type[Record], key: str) -> Any:
            value = values.get(key)
            return kind.model_validate(value) if value else None

        return cls(
            plan=record(Plan, "plan"),
            train=record(TrainResult, "train"),
            gate=record(GateResult, "gate"),
            register=record(Registration, "register"),
            promote=record(Promotion, "promote"),
            request=record(ApprovalRequest, "approval_request"),
            approval=Approval.from_response(values.get("approval")),
        )


def model_summary(o: ModelOutcome) -> ModelSummary:
    """One model's line: trained or why not, the gate, the version, promoted or why not."""
    reason = o.promote.reason if o.promote else None
    if reason is None and o.gate:  # promote skipped itself: say why from the gate (and the approval)
        version = o.register.version if o.register else None
        if not o.gate.passed:
            reason = f"v{version} registered as challenger, not promoted: gate failed: {o.gate.reason}"
        elif o.approval is not None:
            reason = f"v{version} passed the gate, not promoted: {o.approval.describe()}"
        elif o.request is not None and o.request.needed:
            reason = f"v{version} passed the gate, not promoted: nobody approved it (approval skipped)"
        else:
            reason = f"v{version} passed the gate, not promoted (promote=never)"
    plan_reason = o.plan.reason if o.plan else None
    return ModelSummary(
        trained=o.train is not None,
        reason=reason or plan_reason,
        plan=plan_reason,
        run_id=o.train.run_id if o.train else None,
        metric=o.gate.metric if o.gate else None,
        value=o.gate.value if o.gate else None,
        champion_value=o.gate.champion_value if o.gate else None,
        gate=o.gate.gate if o.gate else None,
        gate_reason=o.gate.reason if o.gate else None,
        version=o.register.version if o.register else None,
        promoted=bool(o.promote and o.promote.promoted),
        approval=o.approval,
    )


def summarize(
    dag_run_id: str,
    data: DataRef | None,
    outcomes: Mapping[str, ModelOutcome],
    started_at: datetime | None = None,
) -> RunSummary:
    """The run's outcome per model; written to `<run dir>/summary.json`. `started_at`: the DAG run's start,
    so the summary (and the demo's table) says how long the run took by Airflow's own clock."""
    path = run_dir(dag_run_id) / "summary.json"
    summary = RunSummary(
        dag_run_id=dag_run_id,
        started_at=started_at.astimezone(UTC).isoformat(timespec="seconds") if started_at else None,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        data_version=data.data_version if data else None,
        models={model: model_summary(o) for model, o in outcomes.items()},
        path=str(path),
    )
    atomic_write_json(path, summary.model_dump(mode="json", exclude={"path"}))
    for model, m in summary.models.items():
        log.info("%s: %s", model, m.reason)
    return summary


def result_table(summary_path: Path) -> str:
    """The demo's result table: F1 per model, gate decision, versions and aliases from the registry."""
    from tasks.registry import list_versions

    summary = RunSummary.model_validate(json.loads(Path(summary_path).read_text()))
    rows = [("model", "trained", "metric", "F1", "champion F1", "gate", "approval", "version", "aliases")]
    for model, m in summary.models.items():
        name = Model(model).registered_name
        versions = list_versions(name) or []
        aliases = next(
            (",".join(v.get("aliases") or []) for v in versions if str(v.get("version")) == m.version), ""
        )
        champ = next((v for v in versions if "champion" in (v.get("aliases") or [])), None)
        rows.append(
            (
                name,
                "yes" if m.trained else "skipped",
                m.metric or "-",
                "-" if m.value is None else f"{m.value:.4f}",
                "-" if m.champion_value is None else f"{m.champion_value:.4f}",
                m.gate or "-",
                m.approval.short() if m.approval else "-",
                m.version or "-",
                aliases or ("-" if champ is None else f"(champion is v{champ.get('version')})"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for model, m in summary.models.items():
        reason = m.reason or ""
        named = reason.startswith((model, Model(model).registered_name))
        lines.append(reason if named else f"{model}: {reason}")
    if summary.started_at:
        took = datetime.fromisoformat(summary.finished_at) - datetime.fromisoformat(summary.started_at)
        lines.append(f"The DAG run took {took.total_seconds():.0f} s (from its start to this summary).")
    return "\n".join(lines)
