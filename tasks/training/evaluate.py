"""Score a model on a split and write the metrics.json contract (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tasks.files import atomic_write_json
from tasks.training.data import Split, read_split
from tasks.vocab import CLASS_LABELS, GATE_METRIC

BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour.yaml"


def _predict(model, task: str, split: Split, encoded=None) -> tuple[list, list]:
    """(what is scored: class ids or B/I/O tags after the abbreviation step, what `run` returned)."""
    from tasks.training.predict import encode, resolve_abbreviations, run

    preds = run(model, encoded if encoded is not None else encode(model, task, split.texts))
    if task == "classifier":
        return [max(range(len(p)), key=p.__getitem__) for p in preds], preds
    tags = resolve_abbreviations(model, split.texts, preds, split.documents)
    return tags, tags


def score(model, task: str, split: Split, encoded=None) -> tuple[dict, list[dict], list]:
    """(metrics, items, predictions) of `model` on `split`; items are in split order. `encoded` is the
    split's texts already tokenised for this model (`tasks.training.predict.encode`), else done here."""
    from tasks.metrics import classifier_metrics, ner_metrics

    scored, preds = _predict(model, task, split, encoded)
    if task == "classifier":
        metrics = classifier_metrics(split.labels, scored)
        items = [
            {"id": i, "gold": g, "pred": p} for i, g, p in zip(split.ids, split.labels, scored, strict=True)
        ]
        return metrics, items, preds
    metrics, items = ner_metrics(split.labels, scored)
    for it, sid in zip(items, split.ids, strict=True):
        it["id"] = sid
    return metrics, items, preds


def gate_score(model, task: str, split: Split, encoded=None) -> float:
    """`GATE_METRIC[task]` of `model` on `split`, equal to `score(...)[0][GATE_METRIC[task]]`: the
    per-epoch dev pass, which needs nothing else."""
    from tasks.metrics import gate_value

    return gate_value(task, split.labels, _predict(model, task, split, encoded)[0])


def behaviour(model, task: str, path: Path = BEHAVIOUR) -> list[dict]:
    """The behavioural sentences of tasks/behaviour.yaml, predicted and judged."""
    from tasks.training.predict import predict_texts

    cases = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(task) or []
    if not cases:
        return []
    preds = predict_texts(model, task, [c["text"] for c in cases])
    out = []
    for case, pred in zip(cases, preds, strict=True):
        got = pred["label"] if task == "classifier" else pred["entities"]
        out.append(
            {
                "text": case["text"],
                "expected": case["expected"],
                "predicted": got,
                "passed": got == case["expected"],
            }
        )
    return out


def metrics_document(
    task: str,
    split: str,
    model_ref: str,
    data_version: str | None,
    metrics: dict,
    items: list[dict],
    behaviour_rows: list[dict],
) -> dict:
    """The metrics.json document; `metrics` gains `<gate metric>_ci`, the bootstrap CI of the gate metric
    over the items (the gate policy's resamples, seed and confidence: the gate's own procedure)."""
    from tasks.gates.policy import load_policy
    from tasks.stats import metric_interval

    policy = load_policy(task)
    ci = metric_interval(
        task,
        items,
        labels=metrics.get("labels") or CLASS_LABELS,
        resamples=policy.resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )
    metrics = {**metrics, f"{GATE_METRIC[task]}_ci": ci.to_dict()}
    return {
        "schema": 1,
        "task": task,
        "split": split,
        "data_version": data_version,
        "model": model_ref,
        "gate_metric": GATE_METRIC[task],
        "metrics": metrics,
        "items": items,
        "behaviour": behaviour_rows,
    }


def write_json(path: Path, doc: dict) -> Path:
    return atomic_write_json(path, doc, indent=1)


def evaluate(
    task: str, model_ref: str, data: Path, out: Path, split: str = "test", data_version: str | None = None
) -> dict:
    """Restore `model_ref` (.nemo path or MLflow URI), score it on DATA's `split`, write `out`."""
    from tasks.training.predict import load
    from tasks.training.versions import resolve_data_version

    split_data = read_split(task, data, split)  # check the data before the slow restore
    model = load(model_ref, task)
    metrics, items, _ = score(model, task, split_data)
    doc = metrics_document(
        task,
        split,
        model_ref,
        data_version or resolve_data_version(data),
        metrics,
        items,
        behaviour(model, task),
    )
    write_json(out, doc)
    return doc
