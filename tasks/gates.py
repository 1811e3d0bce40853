"""The promotion gate: does a candidate's evidence justify replacing the champion?

A decision compares two `metrics.json` files (schema in docs/architecture.md) scored on the same
frozen test split. Checks, each reported with its numbers:

- `floor`: the gate metric (classifier macro-F1, NER strict entity F1) is at least the profile's floor;
- `bootstrap_non_inferior` / `bootstrap_superior`: a paired bootstrap over test items (same resampled
  items for both models, fixed seed) of challenger minus champion; non-inferior passes when the CI lower
  bound >= -margin, superior when it is > 0;
- `per_class_f1` (classifier): no class's F1 drops by more than `max_class_f1_drop`;
- `behaviour` (on for the cpu/gpu profiles): every sentence of `tasks/behaviour.yaml` came out right.

Without a champion the floor and the behavioural checks decide. Pure numpy: runs in both environments.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from tasks.errors import DataError, UsageError
from tasks.vocab import GATE_METRIC, MODELS, PROFILES, Model, Profile

POLICY_FILE = Path(__file__).with_name("gates.yaml")
BEHAVIOUR_FILE = Path(__file__).with_name("behaviour.yaml")
GATE_METRICS = {m.value: metric for m, metric in GATE_METRIC.items()}
Mode = Literal["non_inferior", "superior"]


# --------------------------------------------------------------------------------------------- policy
@dataclass(frozen=True)
class GatePolicy:
    """One model's gate policy (see tasks/gates.yaml for the meaning of each field)."""

    model: str
    metric: str
    floor: dict[str, float]
    mode: Mode = "non_inferior"
    margin: float = 0.01
    resamples: int = 2000
    seed: int = 20261201
    confidence: float = 0.95
    max_class_f1_drop: float | None = None
    behaviour: dict[str, bool] = field(default_factory=lambda: {"tiny": False, "cpu": True, "gpu": True})
    source: str = str(POLICY_FILE)

    def floor_for(self, profile: str) -> float:
        return self.floor[_profile(profile)]

    def behaviour_for(self, profile: str) -> bool:
        return self.behaviour[_profile(profile)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _profile(profile: str) -> str:
    return Profile.parse(profile).value


def _key_lines(path: Path, text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping key path to its 1-based line, so errors can name the line."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                kp = (*prefix, str(key.value))
                lines[kp] = key.start_mark.line + 1
                walk(value, kp)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else "?"
        raise DataError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if root is not None:
        walk(root, ())
    return lines


def load_policy(model: str, path: Path | None = None) -> GatePolicy:
    """Read `model`'s gate policy from `path` (default: tasks/gates.yaml) and validate every field."""
    model = _model_kind(model)
    path = Path(path) if path else POLICY_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read gate policy {path}: {exc.strerror}") from exc
    lines = _key_lines(path, text)
    doc = yaml.safe_load(text) or {}

    def where(*keys: str) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{path}:{lines[keys[:n]]}"
        return f"{path}:1"

    def bad(keys: tuple[str, ...], why: str) -> DataError:
        return DataError(f"{where(*keys)}: field {'.'.join(keys)} {why}")

    if not isinstance(doc, dict) or not isinstance(doc.get(model), dict):
        raise bad((model,), "is missing (expected a mapping with the policy of this model)")
    raw = doc[model]

    def number(keys: tuple[str, ...], value: Any, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise bad(keys, f"must be a number in [{lo}, {hi}], got {value!r}")
        return float(value)

    def per_profile(key: str, kind: type) -> dict[str, Any]:
        value = raw.get(key)
        if not isinstance(value, dict) or set(value) != set(PROFILES):
            raise bad((model, key), f"must map each profile ({', '.join(PROFILES)}) to a value")
        out = {}
        for prof, v in value.items():
            if kind is bool:
                if not isinstance(v, bool):
                    raise bad((model, key, prof), f"must be true or false, got {v!r}")
                out[prof] = v
            else:
                out[prof] = number((model, key, prof), v, 0.0, 1.0)
        return out

    metric = raw.get("metric")
    if metric != GATE_METRICS[model]:
        raise bad((model, "metric"), f"must be {GATE_METRICS[model]!r} for {model}, got {metric!r}")
    mode = raw.get("mode", "non_inferior")
    if mode not in ("non_inferior", "superior"):
        raise bad((model, "mode"), f"must be non_inferior or superior, got {mode!r}")
    boot = raw.get("bootstrap") or {}
    if not isinstance(boot, dict):
        raise bad((model, "bootstrap"), "must be a mapping with resamples, seed and confidence")
    resamples = boot.get("resamples", 2000)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1000:
        raise bad((model, "bootstrap", "resamples"), f"must be an integer >= 1000, got {resamples!r}")
    seed = boot.get("seed", 20261201)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad((model, "bootstrap", "seed"), f"must be a non-negative integer, got {seed!r}")
    drop = raw.get("max_class_f1_drop")
    return GatePolicy(
        model=model,
        metric=metric,
        floor=per_profile("floor", float),
        mode=mode,
        margin=number((model, "margin"), raw.get("margin", 0.01), 0.0, 1.0),
        resamples=resamples,
        seed=seed,
        confidence=number((model, "bootstrap", "confidence"), boot.get("confidence", 0.95), 0.5, 0.999),
        max_class_f1_drop=None if drop is None else number((model, "max_class_f1_drop"), drop, 0.0, 1.0),
        behaviour=per_profile("behaviour", bool),
        source=str(path),
    )


def _model_kind(model: str) -> str:
    """`classifier` / `ner`, also accepting the registered model names."""
    return Model.parse(model).value


# -------------------------------------------------------------------------------------------- metrics
def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; an unreadable file is a usage error, malformed JSON a data error at file:line."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


def load_metrics(path: Path) -> dict[str, Any]:
    """Read a metrics.json (see docs/architecture.md); errors name the file, line and field."""
    path = Path(path)
    doc = _read_json(path, "metrics")
    doc = dict(doc) if isinstance(doc, dict) else doc
    check_metrics(doc, str(path))
    return doc


def check_metrics(doc: Any, source: str = "metrics") -> None:
    """Validate the fields the gate reads; raise DataError naming the source and field."""

    def bad(fld: str, why: str) -> DataError:
        return DataError(f"{source}: field {fld} {why}")

    if not isinstance(doc, dict):
        raise bad("(root)", "must be a JSON object")
    task = doc.get("task")
    if task not in MODELS:
        raise bad("task", f"must be classifier or ner, got {task!r}")
    metric = doc.get("gate_metric", GATE_METRICS[task])
    if metric != GATE_METRICS[task]:
        raise bad("gate_metric", f"must be {GATE_METRICS[task]!r} for {task}, got {metric!r}")
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict):
        raise bad("metrics", "must be an object")
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise bad(f"metrics.{metric}", f"must be a number in [0, 1], got {value!r}")
    items = doc.get("items")
    if not isinstance(items, list):
        raise bad("items", "must be a list of per-item outcomes")
    keys = ("gold", "pred") if task == "classifier" else ("tp", "fp", "fn")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            raise bad(f"items[{i}]", "must be an object with an id")
        for k in keys:
            v = item.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or (task == "ner" and v < 0):
                raise bad(
                    f"items[{i}].{k}", f"must be {'a non-negative ' if task == 'ner' else 'an '}integer"
                )
    behaviour = doc.get("behaviour", [])
    if not isinstance(behaviour, list) or not all(isinstance(b, dict) and "text" in b for b in behaviour):
        raise bad("behaviour", "must be a list of objects with text, expected, predicted")


def _per_class_f1(gold: np.ndarray, pred: np.ndarray, labels: list[int]) -> np.ndarray:
    """F1 per label along the last axis; works on (n,) or (resamples, n). Zero where undefined."""
    out = []
    for c in labels:
        g, p = gold == c, pred == c
        tp = (g & p).sum(-1)
        denom = g.sum(-1) + p.sum(-1)
        out.append(np.divide(2 * tp, denom, out=np.zeros(np.shape(denom), float), where=denom > 0))
    return np.stack(out, axis=-1)


def _entity_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(np.shape(denom), float), where=denom > 0)


def _labels(doc: dict[str, Any]) -> list[int]:
    labels = doc.get("metrics", {}).get("labels")
    if isinstance(labels, list) and labels:
        return [int(x) for x in labels]
    seen = {it["gold"] for it in doc["items"]} | {it["pred"] for it in doc["items"]}
    return sorted(seen | {0, 1, 2})


def _pair(candidate: dict[str, Any], champion: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """Champion items reordered to the candidate's, matched by id; the id sets must be equal."""

    def index(doc: dict[str, Any], who: str) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for it in doc["items"]:
            key = str(it["id"])
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


# ------------------------------------------------------------------------------------------- decision
@dataclass
class Check:
    name: str
    passed: bool
    numbers: dict[str, Any]
    detail: str


@dataclass
class Decision:
    """A gate decision: `passed`, a one-sentence `reason` and every check with its numbers."""

    model: str
    profile: str
    passed: bool
    reason: str
    checks: list[Check]
    metric: str
    candidate_value: float
    champion_value: float | None
    data_version: str | None
    candidate_model: str | None = None
    champion_model: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    decided_at: str = ""
    # Plot inputs (kept in the JSON so a report can be rebuilt from it).
    labels: list[int] = field(default_factory=list)
    confusion_matrix: list[list[int]] | None = None
    per_class_f1: dict[str, dict[str, float | None]] = field(default_factory=dict)
    bootstrap_diffs: list[float] = field(default_factory=list, repr=False)

    @property
    def gate(self) -> str:
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gate"] = self.gate
        d["schema"] = 1
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["checks"] = [Check(**c) for c in d.get("checks", [])]
        return cls(**kwargs)


def _behaviour_check(model: str, candidate: dict[str, Any]) -> Check:
    expected = (yaml.safe_load(BEHAVIOUR_FILE.read_text()) or {}).get(model) or []
    got = {str(b["text"]).strip(): b for b in candidate.get("behaviour") or []}
    failures: list[str] = []
    for case in expected:
        text = str(case["text"]).strip()
        out = got.get(text)
        if out is None:
            failures.append(f"not scored: {text[:40]}...")
            continue
        ok = out["predicted"] == case["expected"] if "predicted" in out else bool(out.get("passed"))
        if not ok:
            failures.append(f"expected {case['expected']!r}, got {out.get('predicted')!r}: {text[:40]}...")
    passed = not failures
    detail = (
        f"all {len(expected)} behavioural sentences come out right"
        if passed
        else f"{len(failures)} of {len(expected)} behavioural sentences wrong ({failures[0]})"
    )
    return Check(
        "behaviour", passed, {"cases": len(expected), "failed": len(failures), "failures": failures}, detail
    )


def decide(
    model: str,
    candidate: dict,
    champion: dict | None,
    profile: str,
    policy: GatePolicy | None = None,
) -> Decision:
    """Gate `candidate` (a metrics.json dict) against `champion` (or None) under `profile`'s policy.

    Raises DataError when the two were scored on different data versions (re-score the champion with
    `ncbi-retrain evaluate MODEL --model models:/NAME@champion` on the current split first) or when
    their items do not match by id.
    """
    model = _model_kind(model)
    profile = _profile(profile)
    policy = policy or load_policy(model)
    check_metrics(candidate, "candidate metrics")
    if candidate["task"] != model:
        raise DataError(
            f"candidate metrics: field task is {candidate['task']!r}, but the gate is for {model}"
        )
    if champion is not None:
        check_metrics(champion, "champion metrics")
        if champion["task"] != model:
            raise DataError(
                f"champion metrics: field task is {champion['task']!r}, but the gate is for {model}"
            )
        if champion.get("data_version") != candidate.get("data_version"):
            raise DataError(
                f"champion metrics: field data_version is {champion.get('data_version')!r} but the "
                f"candidate's is {candidate.get('data_version')!r}: re-score the champion on the current "
                f"split first (ncbi-retrain evaluate {model} --model models:/NAME@champion "
                "--data DIR --out FILE)"
            )
        if champion.get("split", "test") != candidate.get("split", "test"):
            raise DataError(
                f"champion metrics: field split is {champion.get('split')!r} but the candidate's is "
                f"{candidate.get('split')!r}: both must be scored on the same split"
            )

    metric = policy.metric
    value = float(candidate["metrics"][metric])
    floor = policy.floor_for(profile)
    checks = [
        Check(
            "floor",
            value >= floor,
            {"metric": metric, "value": value, "floor": floor},
            f"{metric} {value:.4f} {'>=' if value >= floor else '<'} floor {floor:.4f}",
        )
    ]
    decision = Decision(
        model=model,
        profile=profile,
        passed=False,
        reason="",
        checks=checks,
        metric=metric,
        candidate_value=value,
        champion_value=None,
        data_version=candidate.get("data_version"),
        candidate_model=candidate.get("model"),
        champion_model=(champion or {}).get("model"),
        policy=policy.to_dict(),
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    labels = _labels(candidate) if model == "classifier" else []
    decision.labels = labels
    if model == "classifier":
        decision.confusion_matrix = _confusion(candidate["items"], labels)

    diff_summary = None
    if champion is not None:
        decision.champion_value = float(champion["metrics"][metric])
        cand_items, champ_items = _pair(candidate, champion)
        if not cand_items:
            raise DataError("candidate metrics: field items is empty: the paired bootstrap needs test items")
        rng = np.random.default_rng(policy.seed)
        idx = rng.integers(0, len(cand_items), size=(policy.resamples, len(cand_items)))
        if model == "classifier":
            gold = np.array([it["gold"] for it in cand_items])
            mismatch = next(
                (a["id"] for a, b in zip(cand_items, champ_items, strict=True) if a["gold"] != b["gold"]),
                None,
            )
            if mismatch is not None:
                raise DataError(
                    f"champion metrics: field items[id={mismatch}].gold differs from the candidate's"
                )
            pc = np.array([it["pred"] for it in cand_items])
            pp = np.array([it["pred"] for it in champ_items])
            f_c, f_p = _per_class_f1(gold, pc, labels), _per_class_f1(gold, pp, labels)
            observed = float(f_c.mean() - f_p.mean())
            diffs = _per_class_f1(gold[idx], pc[idx], labels).mean(-1) - _per_class_f1(
                gold[idx], pp[idx], labels
            ).mean(-1)
            decision.per_class_f1 = {
                str(c): {"candidate": float(a), "champion": float(b)}
                for c, a, b in zip(labels, f_c, f_p, strict=True)
            }
        else:
            c3 = [np.array([it[k] for it in cand_items]) for k in ("tp", "fp", "fn")]
            p3 = [np.array([it[k] for it in champ_items]) for k in ("tp", "fp", "fn")]
            observed = float(_entity_f1(*(a.sum() for a in c3)) - _entity_f1(*(a.sum() for a in p3)))
            diffs = _entity_f1(*(a[idx].sum(-1) for a in c3)) - _entity_f1(*(a[idx].sum(-1) for a in p3))
        alpha = (1.0 - policy.confidence) / 2
        lo, hi = (float(x) for x in np.quantile(diffs, [alpha, 1 - alpha]))
        threshold = -policy.margin if policy.mode == "non_inferior" else 0.0
        passed = lo >= threshold if policy.mode == "non_inferior" else lo > 0.0
        pct = round(policy.confidence * 100)
        word = "non-inferior" if policy.mode == "non_inferior" else "superior"
        op = (">=" if passed else "<") if policy.mode == "non_inferior" else (">" if passed else "<=")
        checks.append(
            Check(
                f"bootstrap_{policy.mode}",
                passed,
                {
                    "observed_diff": observed,
                    "ci_low": lo,
                    "ci_high": hi,
                    "threshold": threshold,
                    "margin": policy.margin,
                    "mode": policy.mode,
                    "confidence": policy.confidence,
                    "resamples": policy.resamples,
                    "seed": policy.seed,
                    "items": len(cand_items),
                    "mean_diff": float(diffs.mean()),
                    "p_diff_le_0": float((diffs <= 0).mean()),
                },
                f"{'' if passed else 'not '}{word}: difference {observed:+.4f}, {pct}% CI "
                f"[{lo:+.4f}, {hi:+.4f}], lower bound {op} {threshold:+.4f}",
            )
        )
        decision.bootstrap_diffs = [round(float(x), 6) for x in diffs]
        diff_summary = (observed, lo, hi, pct, word)
        if model == "classifier" and policy.max_class_f1_drop is not None:
            drops = {c: v["champion"] - v["candidate"] for c, v in decision.per_class_f1.items()}
            worst = max(drops, key=lambda c: drops[c])
            ok = drops[worst] <= policy.max_class_f1_drop + 1e-12
            checks.append(
                Check(
                    "per_class_f1",
                    ok,
                    {"max_drop": policy.max_class_f1_drop, "drops": drops, "worst_class": worst},
                    f"class {worst} F1 {'drop' if drops[worst] > 0 else 'change'} {drops[worst]:+.4f} "
                    f"{'<=' if ok else '>'} {policy.max_class_f1_drop:.4f} allowed"
                    if drops[worst] > 0
                    else "no class's F1 drops",
                )
            )
    elif model == "classifier":
        f_c = _per_class_f1(
            np.array([it["gold"] for it in candidate["items"]]),
            np.array([it["pred"] for it in candidate["items"]]),
            labels,
        )
        decision.per_class_f1 = {
            str(c): {"candidate": float(a), "champion": None} for c, a in zip(labels, f_c, strict=True)
        }

    if policy.behaviour_for(profile):
        checks.append(_behaviour_check(model, candidate))

    decision.passed = all(c.passed for c in checks)
    if not decision.passed:
        failed = [c for c in checks if not c.passed]
        decision.reason = "Failed " + "; ".join(f"{c.name} ({c.detail})" for c in failed) + "."
    elif champion is None:
        extra = " and the behavioural checks pass" if policy.behaviour_for(profile) else ""
        decision.reason = f"No champion yet: {metric} {value:.4f} clears the floor {floor:.4f}{extra}."
    else:
        observed, lo, hi, pct, word = diff_summary
        decision.reason = (
            f"{metric} {value:.4f} clears the floor {floor:.4f} and is {word} to the champion's "
            f"{decision.champion_value:.4f} (difference {observed:+.4f}, {pct}% CI [{lo:+.4f}, {hi:+.4f}])."
        )
    return decision


def _confusion(items: list[dict], labels: list[int]) -> list[list[int]]:
    pos = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), int)
    for it in items:
        if it["gold"] in pos and it["pred"] in pos:
            cm[pos[it["gold"]], pos[it["pred"]]] += 1
    return cm.tolist()


def load_decision(path: Path) -> Decision:
    """Read a decision JSON written by `write_decision`."""
    path = Path(path)
    doc = _read_json(path, "decision")
    for key in ("model", "passed", "reason", "checks", "metric", "candidate_value"):
        if not isinstance(doc, dict) or key not in doc:
            raise DataError(f"{path}: field {key} is missing: not a gate decision")
    return Decision.from_dict(doc)


def write_decision(decision: Decision, out: Path) -> Path:
    """Write the decision JSON to `out`, with `<stem>.md` and `<stem>.*.png` next to it.

    Everything is rendered in a temporary folder beside `out` and moved into place, the JSON last,
    so a decision file on disk always has its report.
    """
    from tasks.report import render_report

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        files = render_report(decision, tmp, out.stem, json_name=out.name)
        doc = decision.to_dict()
        doc["report"] = [p.name for p in files]
        (tmp / out.name).write_text(json.dumps(doc, indent=2) + "\n")
        for p in files:
            os.replace(p, out.parent / p.name)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
