"""Classifier and NER metrics, with per-item outcomes for the gates' paired bootstrap.

NER is scored at the entity level, strict IOB2 (seqeval `mode="strict", scheme=IOB2`): a span counts only
when its boundaries match exactly and it starts with B. A span that begins with an I (I right after O) is
not an entity here; this is the only scoring used anywhere in this project (never mixed with seqeval's
lenient default). NeMo's tagger does emit such I's: the decoder (`tasks.training.predict.tag`) turns them
into B before anything is scored or returned, so what is scored is what users get. Token-level numbers are
reported for reference only; they are never a gate metric (NeMo's own report is token-level and counts O).

Pure Python plus seqeval (training env).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tasks.vocab import ENTITY_TYPE, TAGS


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def classifier_metrics(gold: Sequence[int], pred: Sequence[int], labels: Sequence[int] = (0, 1, 2)) -> dict:
    """accuracy, macro_f1,
    per_class {label: {precision, recall, f1, support}}, confusion_matrix (rows gold)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    index = {lab: i for i, lab in enumerate(labels)}
    cm = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        cm[index[g]][index[p]] += 1
    per_class = {}
    for i, lab in enumerate(labels):
        tp = cm[i][i]
        support = sum(cm[i])
        predicted = sum(row[i] for row in cm)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        per_class[str(lab)] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": support,
        }
    n = len(gold)
    return {
        "accuracy": sum(cm[i][i] for i in range(len(labels))) / n if n else 0.0,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(labels),
        "per_class": per_class,
        "confusion_matrix": cm,
        "labels": list(labels),
    }


def _typed(tags: Sequence[str]) -> list[str]:
    """B/I/O -> B-Disease / I-Disease / O (seqeval wants typed tags)."""
    return [t if t == "O" else f"{t}-{ENTITY_TYPE}" for t in tags]


def entity_spans(tags: Sequence[str]) -> set[tuple[int, int]]:
    """Strict IOB2 spans [start, end) of a B/I/O sequence; a run that starts with I is not an entity."""
    from seqeval.scheme import IOB2, Entities

    ents = Entities([_typed(tags)], IOB2).entities[0]
    return {(e.start, e.end) for e in ents}


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[dict, list[dict]]:
    """Strict-IOB2 entity P/R/F1 (seqeval),
    token accuracy and macro-F1 over B/I/O; per-sentence tp/fp/fn."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    items = []
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = entity_spans(g), entity_spans(p)
        items.append({"id": str(i), "tp": len(gs & ps), "fp": len(ps - gs), "fn": len(gs - ps)})
    y_true, y_pred = [_typed(g) for g in gold], [_typed(p) for p in pred]
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    flat_g = [t for s in gold for t in s]
    flat_p = [t for s in pred for t in s]
    token = classifier_metrics(
        [TAG_INDEX[t] for t in flat_g], [TAG_INDEX[t] for t in flat_p], labels=(0, 1, 2)
    )
    metrics = {
        "entity_precision": float(precision_score(y_true, y_pred, **kw)),
        "entity_recall": float(recall_score(y_true, y_pred, **kw)),
        "entity_f1": float(f1_score(y_true, y_pred, **kw)),
        "token_accuracy": token["accuracy"],
        "token_macro_f1": token["macro_f1"],
        "token_f1": {tag: token["per_class"][str(i)]["f1"] for tag, i in TAG_INDEX.items()},
        "token_confusion_matrix": token["confusion_matrix"],
        "entities_gold": sum(it["tp"] + it["fn"] for it in items),
        "entities_pred": sum(it["tp"] + it["fp"] for it in items),
        "i_after_o": sum(_i_after_o(p) for p in pred),
    }
    return metrics, items


TAG_INDEX = {tag: i for i, tag in enumerate(TAGS)}


def _i_after_o(tags: Sequence[str]) -> int:
    """How many I tags start a run (after O or at the start): spans strict IOB2 drops."""
    return sum(1 for i, t in enumerate(tags) if t == "I" and (i == 0 or tags[i - 1] == "O"))


def micro_f1(items: Sequence[dict]) -> float:
    tp = sum(it["tp"] for it in items)
    fp = sum(it["fp"] for it in items)
    fn = sum(it["fn"] for it in items)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def bootstrap_ci(
    task: str, items: Sequence[dict], n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap CI of the gate metric over items (abstracts or sentences), resampled with
    replacement: macro-F1 for the classifier, strict entity micro-F1 for NER."""
    rng = random.Random(seed)
    k = len(items)
    stats = []
    for _ in range(n):
        sample = [items[rng.randrange(k)] for _ in range(k)]
        if task == "classifier":
            stats.append(
                classifier_metrics([s["gold"] for s in sample], [s["pred"] for s in sample])["macro_f1"]
            )
        else:
            stats.append(micro_f1(sample))
    stats.sort()
    return stats[int(alpha / 2 * n)], stats[min(n - 1, int((1 - alpha / 2) * n))]
