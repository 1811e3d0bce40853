"""Classifier and NER metrics, with per-item outcomes for the paired bootstrap (tasks/stats.py).

Classifier: scikit-learn (accuracy, per-class precision / recall / F1, macro-F1, confusion matrix).
NER is scored at the entity level, strict IOB2 (seqeval `mode="strict", scheme=IOB2`): a span counts only
when its boundaries match exactly and it starts with B. A span that begins with an I (I right after O) is
not an entity here; this is the only scoring used anywhere in this project (never mixed with seqeval's
lenient default). NeMo's tagger does emit such I's: the decoder (`tasks.training.predict.run`: constrained
Viterbi, or argmax with the I turned into B for older models) never returns them, so what is scored is what
users get. Token-level numbers
(scikit-learn, over B/I/O) are reported for reference only; they are never a gate metric (NeMo's own
report is token-level and counts O).

scikit-learn is in both environments; seqeval (training env) is imported inside the NER functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.vocab import CLASS_LABELS, ENTITY_TYPE, GATE_METRIC, TAGS, Model


def classifier_metrics(
    gold: Sequence[int | str], pred: Sequence[int | str], labels: Sequence[int | str] = CLASS_LABELS
) -> dict:
    """accuracy, macro_f1, per_class {label: {precision, recall, f1, support}},
    confusion_matrix (rows gold, columns predicted, in `labels` order), labels.

    Every label counts in the macro average, also one that is absent from both (F1 0, as never predicted).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, pred, labels=labels, average=None, zero_division=0
    )
    per_class = {
        str(c): {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for c, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist(),
        "labels": labels,
    }


def _typed(tags: Sequence[str]) -> list[str]:
    """B/I/O -> B-Disease / I-Disease / O (seqeval wants typed tags)."""
    return [t if t == "O" else f"{t}-{ENTITY_TYPE}" for t in tags]


def entity_spans(tags: Sequence[str]) -> set[tuple[int, int]]:
    """Strict IOB2 spans [start, end) of a B/I/O sequence; a run that starts with I is not an entity."""
    from seqeval.scheme import IOB2, Entities

    ents = Entities([_typed(tags)], IOB2).entities[0]
    return {(e.start, e.end) for e in ents}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Strict-IOB2 entity_precision / entity_recall / entity_f1, micro over sentences (seqeval)."""
    # What seqeval's precision_score / recall_score / f1_score(mode="strict") each call: one pass, not three.
    from seqeval.metrics.v1 import precision_recall_fscore_support
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    precision, recall, f1, _ = precision_recall_fscore_support(
        [_typed(g) for g in gold], [_typed(p) for p in pred], average="micro", scheme=IOB2, zero_division=0
    )
    return {"entity_precision": float(precision), "entity_recall": float(recall), "entity_f1": float(f1)}


def gate_value(task: str, gold: Sequence, pred: Sequence) -> float:
    """`GATE_METRIC[task]` alone: what per-epoch dev scoring needs. Without the per-item outcomes and
    token-level tables of `ner_metrics` it takes about a third of that function's time on NER."""
    scores = entity_scores(gold, pred) if task == Model.ner else classifier_metrics(gold, pred)
    return scores[GATE_METRIC[task]]


def ner_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[dict, list[dict]]:
    """Strict-IOB2 entity P/R/F1 (seqeval),
    token accuracy and macro-F1 over B/I/O; per-sentence tp/fp/fn."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    items = []
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gs, ps = entity_spans(g), entity_spans(p)
        items.append({"id": str(i), "tp": len(gs & ps), "fp": len(ps - gs), "fn": len(gs - ps)})
    token = classifier_metrics([t for s in gold for t in s], [t for s in pred for t in s], labels=TAGS)
    metrics = {
        **entity_scores(gold, pred),
        "token_accuracy": token["accuracy"],
        "token_macro_f1": token["macro_f1"],
        "token_f1": {tag: token["per_class"][tag]["f1"] for tag in TAGS},
        "token_confusion_matrix": token["confusion_matrix"],
        "entities_gold": sum(it["tp"] + it["fn"] for it in items),
        "entities_pred": sum(it["tp"] + it["fp"] for it in items),
        "i_after_o": sum(_i_after_o(p) for p in pred),
    }
    return metrics, items


def _i_after_o(tags: Sequence[str]) -> int:
    """How many I tags start a run (after O or at the start): spans strict IOB2 drops."""
    return sum(1 for i, t in enumerate(tags) if t == "I" and (i == 0 or tags[i - 1] == "O"))
