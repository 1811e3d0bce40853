"""The library statistics reproduce the hand-written code they replaced, on the real test split.

The constants below were computed by the code before this change (commit 5fdb597: hand-written
classifier metrics, `tasks.gates.decide` with its own numpy bootstrap) on seeded pseudo-predictions of
the real test split (100 abstracts, 940 sentences; `imported_data`). The new code (scikit-learn,
seqeval, `scipy.stats.bootstrap` in `tasks.stats`) must give the same numbers to 1e-9 and the same gate
decisions: same checks passed, same CI bounds, same reason sentence.

Classifier cases run in both environments; the NER ones need seqeval (training env:
`.venv-train/bin/pytest tests/test_stats_equivalence.py`).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks import stats
from tasks.gates import decide, load_policy
from tasks.metrics import classifier_metrics
from tasks.training.data import read_split
from tasks.vocab import TAGS

TOL = 1e-9
# Recorded with the code before the change (see the module docstring); label: (P, R, F1, support).
CLASSIFIER = {
    "c85": {
        "accuracy": 0.82,
        "macro_f1": 0.8177777777777777,
        "per_class": {
            "0": (0.7222222222222222, 0.896551724137931, 0.7999999999999999, 29),
            "1": (0.8571428571428571, 0.75, 0.7999999999999999, 32),
            "2": (0.8888888888888888, 0.8205128205128205, 0.8533333333333333, 39),
        },
        "confusion_matrix": [[26, 2, 1], [5, 24, 3], [5, 2, 32]],
    },
    "c93": {
        "accuracy": 0.89,
        "macro_f1": 0.8863358863358863,
        "per_class": {
            "0": (0.8888888888888888, 0.8275862068965517, 0.8571428571428572, 29),
            "1": (0.8529411764705882, 0.90625, 0.8787878787878787, 32),
            "2": (0.9230769230769231, 0.9230769230769231, 0.9230769230769231, 39),
        },
        "confusion_matrix": [[24, 3, 2], [2, 29, 1], [1, 2, 36]],
    },
    "c70": {
        "accuracy": 0.67,
        "macro_f1": 0.6740284197911316,
        "per_class": {
            "0": (0.7666666666666667, 0.7931034482758621, 0.7796610169491527, 29),
            "1": (0.5588235294117647, 0.59375, 0.5757575757575757, 32),
            "2": (0.6944444444444444, 0.6410256410256411, 0.6666666666666666, 39),
        },
        "confusion_matrix": [[23, 2, 4], [6, 19, 7], [1, 13, 25]],
    },
    "c86": {
        "accuracy": 0.9,
        "macro_f1": 0.8997946497946497,
        "per_class": {
            "0": (0.9259259259259259, 0.8620689655172413, 0.8928571428571429, 29),
            "1": (0.8823529411764706, 0.9375, 0.9090909090909091, 32),
            "2": (0.8974358974358975, 0.8974358974358975, 0.8974358974358975, 39),
        },
        "confusion_matrix": [[25, 1, 3], [1, 30, 1], [1, 3, 35]],
    },
}
NER = {
    "n05": {
        "entity_precision": 0.6594148537134283,
        "entity_recall": 0.915625,
        "entity_f1": 0.7666812036633233,
        "token_accuracy": 0.9657917295995428,
        "token_macro_f1": 0.8735147082600601,
        "token_f1": {"B": 0.8102921936327954, "I": 0.8284815106215578, "O": 0.9817704205258271},
        "token_confusion_matrix": [[929, 13, 18], [20, 1053, 14], [384, 389, 21677]],
        "entities_gold": 960,
        "entities_pred": 1333,
        "i_after_o": 383,
        "tp_fp_fn": [879, 454, 81],
    },
    "n03": {
        "entity_precision": 0.7689684569479965,
        "entity_recall": 0.9395833333333333,
        "entity_f1": 0.8457571495546179,
        "token_accuracy": 0.9804465852961587,
        "token_macro_f1": 0.9220650025845311,
        "token_f1": {"B": 0.8766994842944209, "I": 0.8997885835095137, "O": 0.9897069399496584},
        "token_confusion_matrix": [[935, 10, 15], [11, 1064, 12], [227, 204, 22019]],
        "entities_gold": 960,
        "entities_pred": 1173,
        "i_after_o": 218,
        "tp_fp_fn": [902, 271, 58],
    },
    "n15": {
        "entity_precision": 0.3664007976071785,
        "entity_recall": 0.765625,
        "entity_f1": 0.49561699258260283,
        "token_accuracy": 0.9008858227538066,
        "token_macro_f1": 0.7102475155749682,
        "token_f1": {"B": 0.5758597437626433, "I": 0.6092837380879188, "O": 0.9455990648743425},
        "token_confusion_matrix": [[854, 52, 54], [49, 991, 47], [1103, 1123, 20224]],
        "entities_gold": 960,
        "entities_pred": 2006,
        "i_after_o": 1056,
        "tp_fp_fn": [735, 1271, 225],
    },
}
GATES = {
    ("classifier", "c86", "c85", "cpu"): {
        "passed": True,
        "checks": {"floor": True, "bootstrap_non_inferior": True, "per_class_f1": True, "behaviour": True},
        "candidate_value": 0.8997946497946497,
        "champion_value": 0.8177777777777777,
        "bootstrap": {
            "observed_diff": 0.08201687201687191,
            "ci_low": -0.009708984474482494,
            "ci_high": 0.1778967663819881,
            "mean_diff": 0.08486556350990827,
            "p_diff_le_0": 0.0355,
        },
        "reason": (
            "macro_f1 0.8998 clears the floor 0.8000 and is non-inferior to the champion's 0.8178 "
            "(difference +0.0820, 95% CI [-0.0097, +0.1779])."
        ),
    },
    ("classifier", "c93", "c85", "cpu"): {
        "passed": False,
        "checks": {"floor": True, "bootstrap_non_inferior": False, "per_class_f1": True, "behaviour": True},
        "candidate_value": 0.8863358863358863,
        "champion_value": 0.8177777777777777,
        "bootstrap": {
            "observed_diff": 0.06855810855810851,
            "ci_low": -0.030692205314192925,
            "ci_high": 0.16532591411058642,
            "mean_diff": 0.06873752898039097,
            "p_diff_le_0": 0.09,
        },
        "reason": (
            "Failed bootstrap_non_inferior (not non-inferior: difference +0.0686, 95% CI [-0.0307, "
            "+0.1653], lower bound < -0.0300)."
        ),
    },
    ("classifier", "c70", "c85", "tiny"): {
        "passed": False,
        "checks": {"floor": True, "bootstrap_non_inferior": False, "per_class_f1": False},
        "candidate_value": 0.6740284197911316,
        "champion_value": 0.8177777777777777,
        "bootstrap": {
            "observed_diff": -0.14374935798664623,
            "ci_low": -0.26019524071093286,
            "ci_high": -0.027883605616553866,
            "mean_diff": -0.14337506494226102,
            "p_diff_le_0": 0.9935,
        },
        "reason": (
            "Failed bootstrap_non_inferior (not non-inferior: difference -0.1437, 95% CI [-0.2602, "
            "-0.0279], lower bound < -0.0300); per_class_f1 (class 1 F1 drop +0.2242 > 0.1000 allowed)."
        ),
    },
    ("classifier", "c85", None, "gpu"): {
        "passed": False,
        "checks": {"floor": False, "behaviour": True},
        "candidate_value": 0.8177777777777777,
        "champion_value": None,
        "reason": ("Failed floor (macro_f1 0.8178 < floor 0.8500)."),
    },
    ("classifier", "c93", None, "cpu"): {
        "passed": True,
        "checks": {"floor": True, "behaviour": True},
        "candidate_value": 0.8863358863358863,
        "champion_value": None,
        "reason": (
            "No champion yet: macro_f1 0.8863 clears the floor 0.8000 and the behavioural checks pass."
        ),
    },
    ("ner", "n03", "n05", "cpu"): {
        "passed": True,
        "checks": {"floor": True, "bootstrap_non_inferior": True, "behaviour": True},
        "candidate_value": 0.8457571495546179,
        "champion_value": 0.7666812036633233,
        "bootstrap": {
            "observed_diff": 0.07907594589129474,
            "ci_low": 0.052825219837671425,
            "ci_high": 0.10529664812702812,
            "mean_diff": 0.07916417029057965,
            "p_diff_le_0": 0.0,
        },
        "reason": (
            "entity_f1 0.8458 clears the floor 0.7000 and is non-inferior to the champion's 0.7667 "
            "(difference +0.0791, 95% CI [+0.0528, +0.1053])."
        ),
    },
    ("ner", "n15", "n05", "tiny"): {
        "passed": False,
        "checks": {"floor": True, "bootstrap_non_inferior": False},
        "candidate_value": 0.49561699258260283,
        "champion_value": 0.7666812036633233,
        "bootstrap": {
            "observed_diff": -0.2710642110807203,
            "ci_low": -0.298721593605884,
            "ci_high": -0.24269928698865356,
            "mean_diff": -0.27107456125757995,
            "p_diff_le_0": 1.0,
        },
        "reason": (
            "Failed bootstrap_non_inferior (not non-inferior: difference -0.2711, 95% CI [-0.2987, "
            "-0.2427], lower bound < -0.0100)."
        ),
    },
    ("ner", "n05", "n03", "tiny"): {
        "passed": False,
        "checks": {"floor": True, "bootstrap_non_inferior": False},
        "candidate_value": 0.7666812036633233,
        "champion_value": 0.8457571495546179,
        "bootstrap": {
            "observed_diff": -0.07907594589129474,
            "ci_low": -0.10529664812702813,
            "ci_high": -0.05282521983767143,
            "mean_diff": -0.07916417029057965,
            "p_diff_le_0": 1.0,
        },
        "reason": (
            "Failed bootstrap_non_inferior (not non-inferior: difference -0.0791, 95% CI [-0.1053, "
            "-0.0528], lower bound < -0.0100)."
        ),
    },
    ("ner", "n03", None, "cpu"): {
        "passed": True,
        "checks": {"floor": True, "behaviour": True},
        "candidate_value": 0.8457571495546179,
        "champion_value": None,
        "reason": (
            "No champion yet: entity_f1 0.8458 clears the floor 0.7000 and the behavioural checks pass."
        ),
    },
    ("ner", "n15", None, "gpu"): {
        "passed": False,
        "checks": {"floor": False, "behaviour": True},
        "candidate_value": 0.49561699258260283,
        "champion_value": None,
        "reason": ("Failed floor (entity_f1 0.4956 < floor 0.7500)."),
    },
}


CASES = yaml.safe_load((Path(__file__).parents[1] / "tasks" / "behaviour.yaml").read_text())


def pseudo_labels(gold: list[int], accuracy: float, seed: int) -> list[int]:
    """Gold classes, each replaced by another class with probability 1 - accuracy."""
    rng = random.Random(seed)
    return [g if rng.random() < accuracy else (g + rng.choice((1, 2))) % 3 for g in gold]


def pseudo_tags(gold: list[list[str]], error_rate: float, seed: int) -> list[list[str]]:
    """Gold tags, each replaced by a random tag with probability `error_rate` (makes I after O too)."""
    rng = random.Random(seed)
    return [[rng.choice(TAGS) if rng.random() < error_rate else t for t in sent] for sent in gold]


def document(task: str, metrics: dict, items: list[dict], name: str) -> dict:
    """A metrics.json as `train` writes it, with every behavioural sentence right."""
    rows = [
        {"text": c["text"], "expected": c["expected"], "predicted": c["expected"], "passed": True}
        for c in CASES[task]
    ]
    return {
        "schema": 1,
        "task": task,
        "split": "test",
        "data_version": "real-test",
        "model": name,
        "gate_metric": "macro_f1" if task == "classifier" else "entity_f1",
        "metrics": metrics,
        "items": items,
        "behaviour": rows,
    }


CLASSIFIER_RUNS = {"c85": (0.85, 1), "c93": (0.93, 2), "c70": (0.70, 3), "c86": (0.86, 7)}
NER_RUNS = {"n05": (0.05, 4), "n03": (0.03, 5), "n15": (0.15, 6)}


@pytest.fixture(scope="module")
def classifier_docs(imported_data: Path) -> dict[str, dict]:
    split = read_split("classifier", imported_data, "test")
    docs = {}
    for name, (accuracy, seed) in CLASSIFIER_RUNS.items():
        pred = pseudo_labels(split.labels, accuracy, seed)
        items = [
            {"id": i, "gold": g, "pred": p} for i, g, p in zip(split.ids, split.labels, pred, strict=True)
        ]
        docs[name] = document("classifier", classifier_metrics(split.labels, pred), items, name)
    return docs


@pytest.fixture(scope="module")
def ner_docs(imported_data: Path) -> dict[str, dict]:
    import seqeval  # noqa: F401  (dev group: installed in both envs)

    from tasks.metrics import ner_metrics

    split = read_split("ner", imported_data, "test")
    docs = {}
    for name, (error_rate, seed) in NER_RUNS.items():
        metrics, items = ner_metrics(split.labels, pseudo_tags(split.labels, error_rate, seed))
        for it, sid in zip(items, split.ids, strict=True):
            it["id"] = sid
        docs[name] = document("ner", metrics, items, name)
    return docs


@pytest.mark.parametrize("name", list(CLASSIFIER_RUNS))
def test_classifier_metrics_reproduce_the_hand_written_ones(classifier_docs, name: str) -> None:
    got, want = classifier_docs[name]["metrics"], CLASSIFIER[name]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=TOL)
    assert got["macro_f1"] == pytest.approx(want["macro_f1"], abs=TOL)
    for label, (precision, recall, f1, support) in want["per_class"].items():
        row = got["per_class"][label]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1), abs=TOL)
        assert row["support"] == support
    assert got["confusion_matrix"] == want["confusion_matrix"]


@pytest.mark.parametrize("name", list(NER_RUNS))
def test_ner_metrics_reproduce_the_hand_written_ones(ner_docs, name: str) -> None:
    doc, want = ner_docs[name], NER[name]
    got = doc["metrics"]
    for key in ("entity_precision", "entity_recall", "entity_f1", "token_accuracy", "token_macro_f1"):
        assert got[key] == pytest.approx(want[key], abs=TOL), key
    assert got["token_f1"] == pytest.approx(want["token_f1"], abs=TOL)
    for key in ("token_confusion_matrix", "entities_gold", "entities_pred", "i_after_o"):
        assert got[key] == want[key], key
    assert [sum(it[k] for it in doc["items"]) for k in ("tp", "fp", "fn")] == want["tp_fp_fn"]


@pytest.mark.parametrize("task", ["classifier", "ner"])
def test_vectorised_gate_metrics_equal_scikit_learn_and_seqeval(request, task: str) -> None:
    """The bootstrap's numpy statistics score exactly what scikit-learn and seqeval report."""
    for doc in request.getfixturevalue(f"{task}_docs").values():
        metric = doc["gate_metric"]
        value = stats.gate_metric(doc["task"], *stats.outcomes(doc["task"], doc["items"]))
        assert float(value) == pytest.approx(doc["metrics"][metric], abs=1e-12)
        if doc["task"] == "classifier":
            gold, pred = stats.outcomes("classifier", doc["items"])
            f1 = [doc["metrics"]["per_class"][str(c)]["f1"] for c in (0, 1, 2)]
            assert stats.per_class_f1(gold, pred).tolist() == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize("case", list(GATES), ids=lambda case: ":".join(map(str, case)))
def test_gate_decisions_are_identical_to_before(request, case) -> None:
    task, cand, champ, profile = case
    docs = request.getfixturevalue(f"{task}_docs")
    want = GATES[case]
    d = decide(task, docs[cand], docs[champ] if champ else None, profile)
    assert d.passed is want["passed"]
    assert {c.name: c.passed for c in d.checks} == want["checks"]
    assert d.candidate_value == pytest.approx(want["candidate_value"], abs=TOL)
    assert (d.champion_value is None) is (want["champion_value"] is None)
    if champ:
        assert d.champion_value == pytest.approx(want["champion_value"], abs=TOL)
        boot = next(c for c in d.checks if c.name.startswith("bootstrap_")).numbers
        for key, value in want["bootstrap"].items():
            assert boot[key] == pytest.approx(value, abs=TOL), key
    assert d.reason == want["reason"]


def test_train_evaluate_and_gate_share_one_bootstrap(classifier_docs) -> None:
    """Challenger minus champion resamples exactly what each model's own CI resamples."""
    policy = load_policy("classifier")
    settings = {"resamples": policy.resamples, "seed": policy.seed, "confidence": policy.confidence}
    cand, champ = classifier_docs["c86"]["items"], classifier_docs["c85"]["items"]
    a = stats.metric_interval("classifier", cand, **settings)
    b = stats.metric_interval("classifier", champ, **settings)
    diff = stats.difference_interval("classifier", cand, champ, **settings)
    np.testing.assert_allclose(diff.distribution, a.distribution - b.distribution, rtol=0, atol=1e-15)
    assert a.low <= a.observed <= a.high
    assert a.observed == pytest.approx(CLASSIFIER["c86"]["macro_f1"], abs=TOL)
    assert diff.observed == pytest.approx(a.observed - b.observed, abs=1e-15)
