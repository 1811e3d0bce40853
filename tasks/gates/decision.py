"""The gate decision: does a candidate's evidence justify replacing the champion?

A decision compares two `metrics.json` documents (schema in docs/architecture.md) scored on the same
frozen test split. Checks, each reported with its numbers:

- `floor`: the gate metric (classifier macro-F1, NER strict entity F1) is at least the profile's floor;
- `bootstrap_non_inferior` / `bootstrap_superior`: the paired bootstrap of challenger minus champion
  (`tasks.stats.difference_interval`: same resampled items for both models, fixed seed); non-inferior
  passes when the CI lower bound >= -margin, superior when it is > 0;
- `per_class_f1` (classifier): no class's F1 drops by more than `max_class_f1_drop`;
- `behaviour` (on for the cpu/gpu profiles): every sentence of `tasks/behaviour.yaml` came out right.

Without a champion the floor and the behavioural checks decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tasks import stats
from tasks.errors import DataError
from tasks.gates.policy import GatePolicy, load_policy
from tasks.metrics import classifier_metrics
from tasks.vocab import (
    CLASS_LABELS,
    ClassifierMetricsDocument,
    GateCheck,
    GateDecision,
    MetricsDocument,
    Model,
    Profile,
    parse_metrics,
)

BEHAVIOUR_FILE = Path(__file__).resolve().parents[1] / "behaviour.yaml"


def labels_of(doc: MetricsDocument) -> list[int]:
    """The classifier's class labels: as recorded in the metrics, else every class seen (at least 0-2)."""
    if isinstance(doc, ClassifierMetricsDocument) and doc.metrics.labels:
        return list(doc.metrics.labels)
    seen = {it.gold for it in doc.items} | {it.pred for it in doc.items}
    return sorted(seen | set(CLASS_LABELS))


def pair(candidate: MetricsDocument, champion: MetricsDocument) -> tuple[list[Any], list[Any]]:
    """Both documents' items in the candidate's order, matched by id; the id sets must be equal."""

    def index(doc: MetricsDocument, who: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for it in doc.items:
            key = str(it.id)
            if key in out:
                raise DataError(f"{who} metrics: field items has the id {key!r} twice")
            out[key] = it
        return out

    cand, champ = index(candidate, "candidate"), index(champion, "champion")
    if missing := [k for k in cand if k not in champ]:
        raise DataError(
            f"champion metrics: field items lacks the candidate's item {missing[0]!r} "
            f"({len(missing)} unmatched): both must be scored on the same test split"
        )
    if extra := [k for k in champ if k not in cand]:
        raise DataError(
            f"candidate metrics: field items lacks the champion's item {extra[0]!r} "
            f"({len(extra)} unmatched): both must be scored on the same test split"
        )
    return list(cand.values()), [champ[k] for k in cand]


def _same_evaluation(model: str, candidate: MetricsDocument, champion: MetricsDocument) -> None:
    """The champion must have been scored on the candidate's data version and split."""
    if champion.data_version != candidate.data_version:
        raise DataError(
            f"champion metrics: field data_version is {champion.data_version!r} but the "
            f"candidate's is {candidate.data_version!r}: re-score the champion on the current "
            f"split first (ncbi-retrain evaluate {model} --model models:/NAME@champion "
            "--data DIR --out FILE)"
        )
    if champion.split != candidate.split:
        raise DataError(
            f"champion metrics: field split is {champion.split!r} but the candidate's is "
            f"{candidate.split!r}: both must be scored on the same split"
        )


def _floor_check(metric: str, value: float, floor: float) -> GateCheck:
    ok = value >= floor
    return GateCheck(
        name="floor",
        passed=ok,
        numbers={"metric": metric, "value": value, "floor": floor},
        detail=f"{metric} {value:.4f} {'>=' if ok else '<'} floor {floor:.4f}",
    )


def _bootstrap_check(policy: GatePolicy, interval: stats.Interval, items: int) -> GateCheck:
    lo, hi, observed = interval.low, interval.high, interval.observed
    non_inferior = policy.mode == "non_inferior"
    threshold = -policy.margin if non_inferior else 0.0
    passed = lo >= threshold if non_inferior else lo > 0.0
    word = "non-inferior" if non_inferior else "superior"
    op = (">=" if passed else "<") if non_inferior else (">" if passed else "<=")
    diffs = interval.distribution
    return GateCheck(
        name=f"bootstrap_{policy.mode}",
        passed=passed,
        numbers={
            "observed_diff": observed,
            "ci_low": lo,
            "ci_high": hi,
            "threshold": threshold,
            "margin": policy.margin,
            "mode": policy.mode,
            "confidence": policy.confidence,
            "resamples": policy.resamples,
            "seed": policy.seed,
            "items": items,
            "mean_diff": float(diffs.mean()),
            "p_diff_le_0": float((diffs <= 0).mean()),
        },
        detail=f"{'' if passed else 'not '}{word}: difference {observed:+.4f}, "
        f"{round(policy.confidence * 100)}% CI [{lo:+.4f}, {hi:+.4f}], lower bound {op} {threshold:+.4f}",
    )


def _per_class_check(per_class: dict[str, dict[str, float | None]], max_drop: float) -> GateCheck:
    drops = {c: v["champion"] - v["candidate"] for c, v in per_class.items()}
    worst = max(drops, key=lambda c: drops[c])
    ok = drops[worst] <= max_drop + 1e-12
    return GateCheck(
        name="per_class_f1",
        passed=ok,
        numbers={"max_drop": max_drop, "drops": drops, "worst_class": worst},
        detail=(
            f"class {worst} F1 drop {drops[worst]:+.4f} {'<=' if ok else '>'} {max_drop:.4f} allowed"
            if drops[worst] > 0
            else "no class's F1 drops"
        ),
    )


def _behaviour_check(model: str, candidate: MetricsDocument) -> GateCheck:
    expected = (yaml.safe_load(BEHAVIOUR_FILE.read_text()) or {}).get(model) or []
    got = {row.text.strip(): row for row in candidate.behaviour}
    failures: list[str] = []
    for case in expected:
        text = str(case["text"]).strip()
        row = got.get(text)
        if row is None:
            failures.append(f"not scored: {text[:40]}...")
            continue
        ok = row.predicted == case["expected"] if "predicted" in row.model_fields_set else bool(row.passed)
        if not ok:
            failures.append(f"expected {case['expected']!r}, got {row.predicted!r}: {text[:40]}...")
    passed = not failures
    detail = (
        f"all {len(expected)} behavioural sentences come out right"
        if passed
        else f"{len(failures)} of {len(expected)} behavioural sentences wrong ({failures[0]})"
    )
    return GateCheck(
        name="behaviour",
        passed=passed,
        numbers={"cases": len(expected), "failed": len(failures), "failures": failures},
        detail=detail,
    )


def _check_pairable(model: str, cand_items: list[Any], champ_items: list[Any]) -> None:
    """At least two paired items (a bootstrap needs two), with the same gold class in both documents."""
    if len(cand_items) < 2:
        raise DataError(
            f"candidate metrics: field items has {len(cand_items)} item(s): the paired bootstrap "
            "needs at least 2 test items"
        )
    if model == Model.classifier:
        for a, b in zip(cand_items, champ_items, strict=True):
            if a.gold != b.gold:
                raise DataError(f"champion metrics: field items[id={a.id}].gold differs from the candidate's")


def _per_class_f1(items: Sequence[Any], labels: list[int]) -> dict[str, float]:
    scores = classifier_metrics([it.gold for it in items], [it.pred for it in items], labels)
    return {k: v["f1"] for k, v in scores["per_class"].items()}


def decide(
    model: str,
    candidate: MetricsDocument | dict,
    champion: MetricsDocument | dict | None,
    profile: str,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Gate `candidate` (a metrics.json document) against `champion` (or None) under `profile`'s policy.

    Raises DataError when a document is malformed, when the two were scored on different data versions
    (re-score the champion with `ncbi-retrain evaluate MODEL --model models:/NAME@champion` on the
    current split first) or when their items do not match by id.
    """
    model = Model.parse(model).value
    profile = Profile.parse(profile).value
    policy = policy or load_policy(model)
    cand = parse_metrics(candidate, "candidate metrics")
    champ = None if champion is None else parse_metrics(champion, "champion metrics")
    for who, doc in (("candidate", cand), ("champion", champ)):
        if doc is not None and doc.task != model:
            raise DataError(f"{who} metrics: field task is {doc.task.value!r}, but the gate is for {model}")
    if champ is not None:
        _same_evaluation(model, cand, champ)

    metric = policy.metric
    value = float(getattr(cand.metrics, metric))
    floor = policy.floor_for(profile)
    checks = [_floor_check(metric, value, floor)]
    classifier = model == Model.classifier
    labels = labels_of(cand) if classifier else []
    interval, champ_f1 = None, {}
    if champ is not None:
        cand_items, champ_items = pair(cand, champ)
        _check_pairable(model, cand_items, champ_items)
        interval = stats.difference_interval(
            model,
            cand_items,
            champ_items,
            labels=labels or CLASS_LABELS,
            resamples=policy.resamples,
            seed=policy.seed,
            confidence=policy.confidence,
        )
        checks.append(_bootstrap_check(policy, interval, len(cand_items)))
        champ_f1 = _per_class_f1(champ_items, labels) if classifier else {}
    extra: dict[str, Any] = {}
    if classifier:
        scores = classifier_metrics([it.gold for it in cand.items], [it.pred for it in cand.items], labels)
        extra["confusion_matrix"] = scores["confusion_matrix"]
        extra["per_class_f1"] = {
            c: {"candidate": v["f1"], "champion": champ_f1.get(c)} for c, v in scores["per_class"].items()
        }
        if champ is not None and policy.max_class_f1_drop is not None:
            checks.append(_per_class_check(extra["per_class_f1"], policy.max_class_f1_drop))
    if interval is not None:
        extra["bootstrap_diffs"] = [round(float(x), 6) for x in interval.distribution]
    if policy.behaviour_for(profile):
        checks.append(_behaviour_check(model, cand))

    passed = all(c.passed for c in checks)
    champion_value = None if champ is None else float(getattr(champ.metrics, metric))
    return GateDecision(
        model=model,
        profile=profile,
        passed=passed,
        reason=_reason(policy, profile, checks, value, floor, champion_value, interval),
        checks=checks,
        metric=metric,
        candidate_value=value,
        champion_value=champion_value,
        data_version=cand.data_version,
        candidate_model=cand.model,
        champion_model=None if champ is None else champ.model,
        policy=policy.to_dict(),
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        labels=labels,
        **extra,
    )


def _reason(
    policy: GatePolicy,
    profile: str,
    checks: list[GateCheck],
    value: float,
    floor: float,
    champion_value: float | None,
    interval: stats.Interval | None,
) -> str:
    """One sentence: what failed, or why the candidate may replace the champion."""
    failed = [c for c in checks if not c.passed]
    if failed:
        return "Failed " + "; ".join(f"{c.name} ({c.detail})" for c in failed) + "."
    metric = policy.metric
    if interval is None:
        extra = " and the behavioural checks pass" if policy.behaviour_for(profile) else ""
        return f"No champion yet: {metric} {value:.4f} clears the floor {floor:.4f}{extra}."
    word = "non-inferior" if policy.mode == "non_inferior" else "superior"
    return (
        f"{metric} {value:.4f} clears the floor {floor:.4f} and is {word} to the champion's "
        f"{champion_value:.4f} (difference {interval.observed:+.4f}, {round(policy.confidence * 100)}% CI "
        f"[{interval.low:+.4f}, {interval.high:+.4f}])."
    )
