"""Metrics against hand-computed cases: strict IOB2 entities (partial spans, adjacent entities, I after O),
classifier macro-F1 / confusion matrix, and the bootstrap CI of the gate metric."""

from __future__ import annotations

import pytest

from tasks import stats
from tasks.metrics import classifier_metrics, entity_spans, gate_value, ner_metrics


def micro_f1(items: list[dict]) -> float:
    """Strict entity F1 from the per-sentence counts, as the gate's bootstrap scores it."""
    return float(stats.gate_metric("ner", *stats.outcomes("ner", items)))


@pytest.mark.parametrize(
    ("tags", "spans"),
    [
        ("O B I O", {(1, 3)}),
        ("B B I", {(0, 1), (1, 3)}),  # adjacent entities: a B starts a new span
        ("O I I O", set()),  # I after O: strict IOB2 drops it, never repairs it into an entity
        ("B O I", {(0, 1)}),
        ("I B", {(1, 2)}),  # I at the start of the sentence
        ("O O O", set()),
    ],
)
def test_entity_spans_strict_iob2(tags: str, spans: set) -> None:
    assert entity_spans(tags.split()) == spans


def test_partial_span_is_both_a_false_positive_and_a_false_negative() -> None:
    gold = [["B", "I", "I", "O"]]
    pred = [["B", "I", "O", "O"]]  # boundary one token short
    metrics, items = ner_metrics(gold, pred)
    assert items == [{"id": "0", "tp": 0, "fp": 1, "fn": 1}]
    assert metrics["entity_f1"] == 0.0
    assert metrics["token_accuracy"] == 0.75


def test_adjacent_entities_and_i_after_o_hand_computed() -> None:
    gold = [["B", "B", "I", "O"], ["O", "B", "I", "O"]]
    # sentence 0: both adjacent entities right; sentence 1: the tagger starts the span with I.
    pred = [["B", "B", "I", "O"], ["O", "I", "I", "O"]]
    metrics, items = ner_metrics(gold, pred)
    assert [(i["tp"], i["fp"], i["fn"]) for i in items] == [(2, 0, 0), (0, 0, 1)]
    assert metrics["entity_precision"] == 1.0
    assert metrics["entity_recall"] == pytest.approx(2 / 3)
    assert metrics["entity_f1"] == pytest.approx(0.8)
    assert metrics["i_after_o"] == 1
    assert micro_f1(items) == pytest.approx(metrics["entity_f1"])


def test_seqeval_aggregate_equals_per_sentence_counts_on_random_tags() -> None:
    import random

    rng = random.Random(3)
    gold = [[rng.choice("BIOOO") for _ in range(12)] for _ in range(50)]
    pred = [[rng.choice("BIOOO") for _ in range(12)] for _ in range(50)]
    metrics, items = ner_metrics(gold, pred)
    assert micro_f1(items) == pytest.approx(metrics["entity_f1"])


def test_the_gate_value_alone_equals_the_full_metrics_gate() -> None:
    import random

    rng = random.Random(5)
    gold = [[rng.choice("BIOOO") for _ in range(rng.randint(0, 15))] for _ in range(60)]
    pred = [[rng.choice("BIOOO") for _ in g] for g in gold]
    assert gate_value("ner", gold, pred) == ner_metrics(gold, pred)[0]["entity_f1"]
    hand = gate_value("ner", [["B", "B", "I"], ["B", "I"]], [["B", "B", "I"], ["I", "I"]])
    assert hand == pytest.approx(0.8)  # 2 of 3 gold found, no false positive (I after O is no entity)
    labels = [rng.choice((0, 1, 2)) for _ in range(40)]
    guesses = [rng.choice((0, 1, 2)) for _ in range(40)]
    assert gate_value("classifier", labels, guesses) == classifier_metrics(labels, guesses)["macro_f1"]
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        gate_value("ner", [["O"], ["O"]], [["O"]])


def test_classifier_metrics_hand_computed() -> None:
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    m = classifier_metrics(gold, pred)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows gold, columns predicted
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 1/2 R 1/2 F 1/2; class 1: P 2/3 R 1 F 0.8; class 2: P 1 R 1/2 F 2/3
    assert m["per_class"]["1"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_class_never_predicted_scores_zero_not_an_error() -> None:
    m = classifier_metrics([0, 1, 2], [0, 0, 0])
    assert m["per_class"]["2"]["f1"] == 0.0


def test_bootstrap_ci_brackets_the_point_estimate_and_is_seeded() -> None:
    items = [{"id": str(i), "tp": i % 3, "fp": i % 2, "fn": (i + 1) % 2} for i in range(40)]
    ci = stats.metric_interval("ner", items, resamples=300, seed=1, confidence=0.95)
    assert ci.low <= micro_f1(items) == ci.observed <= ci.high
    again = stats.metric_interval("ner", items, resamples=300, seed=1, confidence=0.95)
    assert (again.low, again.high) == (ci.low, ci.high)
    other = stats.metric_interval("ner", items, resamples=300, seed=2, confidence=0.95)
    assert (other.low, other.high) != (ci.low, ci.high)
    cls = [{"id": str(i), "gold": i % 3, "pred": (i * 7) % 3} for i in range(30)]
    ci = stats.metric_interval("classifier", cls, resamples=200, seed=0, confidence=0.95)
    assert 0.0 <= ci.low <= ci.observed <= ci.high <= 1.0
    assert ci.observed == pytest.approx(
        classifier_metrics([i % 3 for i in range(30)], [(i * 7) % 3 for i in range(30)])["macro_f1"]
    )


@pytest.mark.parametrize(
    ("raw", "repaired"),
    [("O I I O", "O B I O"), ("I O", "B O"), ("B I O I", "B I O B"), ("B B I", "B B I"), ("O O", "O O")],
)
def test_decoder_emits_valid_iob2(raw: str, repaired: str) -> None:
    from tasks.training.predict import repair_iob2

    assert repair_iob2(raw.split()) == repaired.split()
    # Strict scoring keeps every span of the raw output and gains the ones it would have dropped.
    assert entity_spans(raw.split()) <= entity_spans(repaired.split())
