"""After a good promotion: the smoke test through `models:/NAME@champion` and the version's model card.

The smoke test runs in the training env, through its command line only (the orchestration env has no
NeMo): `tasks.pipeline.jobs.smoke_job` is that command (`ncbi-retrain predict MODEL --model
models:/NAME@champion --json TEXT...` with `smoke_cases`, the sentences of tasks/behaviour.yaml, which start
with the NeMo tutorial's three), run by the launcher's operator, and `judge_smoke` reads its JSON line.
The smoke test passes when every sentence gets a well-formed prediction; the expected labels are required
too when the version's gate profile requires behavioural checks (cpu / gpu, tasks/gates.yaml), as the gate
itself did. The model card (lineage, the gate decision with its numbers and plots, the smoke results, the
version's alias moves) is logged to the version's run as `model_card/v<version>/` and shown in short as the
version's description in MLflow's UI; the version tag `model_card` points at the full card.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tasks.registry.service import client, mlflow_call, registered_name
from tasks.vocab import CLASS_LABELS, Model

BEHAVIOUR_FILE = Path(__file__).resolve().parents[1] / "behaviour.yaml"
CARD_TAG = "model_card"


def smoke_cases(model: str) -> list[dict[str, Any]]:
    """The behavioural sentences of `model` (tasks/behaviour.yaml) with their expected outputs."""
    return list((yaml.safe_load(BEHAVIOUR_FILE.read_text(encoding="utf-8")) or {}).get(Model(model)) or [])


def judge_smoke(model: str, output: str | None, profile: str | None) -> dict[str, Any]:
    """Judge the predict command's last stdout line: {passed, reason, cases, behaviour_required}."""
    from tasks.gates import load_policy

    model = Model(model).value
    cases = smoke_cases(model)
    required = bool(profile) and load_policy(model).behaviour_for(str(profile))
    try:
        rows = json.loads(output or "")["predictions"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return {
            "passed": False,
            "reason": f"the predict command printed no predictions ({(output or '')[:200]!r})",
            "cases": [],
            "behaviour_required": required,
        }
    judged, malformed = [], []
    for case, row in zip(cases, rows, strict=False):
        got = row.get("label") if model == "classifier" else row.get("entities")
        ok_shape = (
            got in CLASS_LABELS and abs(sum(row.get("probabilities") or []) - 1.0) < 1e-3
            if model == "classifier"
            else isinstance(got, list) and len(row.get("tags") or []) == len(case["text"].split())
        )
        if not ok_shape:
            malformed.append(case["text"][:40])
        right = got == case["expected"]
        judged.append({"text": case["text"], "expected": case["expected"], "predicted": got, "right": right})
    wrong = [c for c in judged if not c["right"]]
    if len(rows) != len(cases) or malformed:
        bad = len(malformed) or abs(len(rows) - len(cases))
        reason = f"{bad} of {len(cases)} predictions malformed or missing"
        passed = False
    elif required and wrong:
        reason = (
            f"{len(wrong)} of {len(cases)} behavioural sentences wrong (expected {wrong[0]['expected']!r}, "
            f"got {wrong[0]['predicted']!r}: {wrong[0]['text'][:40]}...)"
        )
        passed = False
    else:
        passed = True
        reason = (
            f"{len(cases)} sentences predicted through models:/...@champion; "
            f"{len(cases) - len(wrong)} of {len(cases)} as expected"
            + ("" if required else f" (behaviour not required for profile {profile or 'unknown'})")
        )
    return {"passed": passed, "reason": reason, "cases": judged, "behaviour_required": required}


def write_model_card(model: str, version: str, smoke: dict[str, Any] | None) -> dict[str, Any]:
    """Log the model card of `version` to its run and show it on the version; returns {uri, path}."""
    from mlflow.artifacts import load_dict

    from tasks.registry.views import lineage
    from tasks.report import render_report
    from tasks.vocab import GateDecision

    name = registered_name(model)
    info = lineage(f"{name}/{version}")
    run_id = info["run"]["run_id"]
    mlflow_client = client()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"v{version}"
        out.mkdir()
        decision = None
        with mlflow_call(f"read the gate decision of run {run_id}"):
            if any(a.path == "gate/decision.json" for a in mlflow_client.list_artifacts(run_id, "gate")):
                decision = GateDecision.model_validate(load_dict(f"runs:/{run_id}/gate/decision.json"))
        gate_files = render_report(decision, out, "gate") if decision else []
        card = _card_markdown(info, decision, smoke, [p.name for p in gate_files])
        (out / "model_card.md").write_text(card, encoding="utf-8")
        path = f"model_card/v{version}"
        with mlflow_call(f"log the model card of {name} v{version}"):
            mlflow_client.log_artifacts(run_id, str(out), path)
    uri = f"runs:/{run_id}/{path}/model_card.md"
    with mlflow_call(f"describe {name} v{version}"):
        short = _short_card(info, decision, smoke, uri)
        mlflow_client.update_model_version(name, version, description=short)
        mlflow_client.set_model_version_tag(name, version, CARD_TAG, uri)
    return {"uri": uri, "path": path, "run_id": run_id}


def _gate_rows(decision: Any) -> list[str]:
    champ = "none" if decision.champion_value is None else f"{decision.champion_value:.4f}"
    rows = [
        f"| {decision.metric} | {decision.candidate_value:.4f} | {champ} | {decision.gate} |",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    rows += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in decision.checks]
    return rows


def _card_markdown(info: dict, decision: Any, smoke: dict | None, plots: list[str]) -> str:
    lines = [
        f"# Model card: {info['name']} v{info['version']}",
        "",
        "## Lineage",
        "",
        *[f"- {step}" for step in info["chain"]],
        f"- config fingerprint `{info.get('config_fingerprint')}`, profile `{info['run'].get('profile')}`",
        f"- `.nemo` sha256 `{info['model'].get('nemo_sha256')}`",
        "",
        "## Gate decision",
        "",
    ]
    if decision is None:
        lines += [
            f"No decision JSON on the run; version tags say: gate {info['gate']['gate']}: "
            f"{info['gate']['reason']}",
            "",
        ]
    else:
        lines += [decision.reason, "", "| metric | challenger | champion | gate |", "|---|---|---|---|"]
        lines += [*_gate_rows(decision), ""]
        lines += [f"![{p}]({p})" for p in plots if p.endswith(".png")]
        lines += ["", "Full report with every number: [gate.md](gate.md)", ""]
    lines += ["## Smoke test through `models:/NAME@champion`", ""]
    if smoke:
        lines += [f"**{'passed' if smoke['passed'] else 'FAILED'}**: {smoke['reason']}", ""]
        lines += ["| sentence | expected | predicted |", "|---|---|---|"]
        lines += [f"| {c['text'][:80]} | {c['expected']} | {c['predicted']} |" for c in smoke["cases"]]
    else:
        lines.append("not run")
    lines += ["", "## Alias moves of this version", ""]
    lines += [
        f"- {m['when']} {m['who']}: {m['alias']} {m.get('from') or '-'} -> {m.get('to')}: {m['why']}"
        for m in info["alias_moves"]
    ] or ["- none"]
    return "\n".join(lines) + "\n"


def _short_card(info: dict, decision: Any, smoke: dict | None, uri: str) -> str:
    lines = [f"**Model card** (full, with plots: `{uri}`)", "", *[f"- {s}" for s in info["chain"]], ""]
    if decision is not None:
        lines += ["| metric | challenger | champion | gate |", "|---|---|---|---|", *_gate_rows(decision), ""]
    if smoke:
        verdict = "passed" if smoke["passed"] else "FAILED"
        lines.append(f"Smoke test via `@champion`: **{verdict}**: {smoke['reason']}")
    text = "\n".join(lines)
    return text if len(text) <= 4900 else text[:4880] + "\n\n(truncated)"
