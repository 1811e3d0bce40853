"""The gate on crafted per-item outcomes whose answer is known by construction."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
from registry_helpers import BEHAVIOUR_OK, classifier_metrics, ner_metrics, noisy_preds

from tasks.cli import run
from tasks.errors import DataError, UsageError
from tasks.gates import decide, load_decision, load_policy, write_decision

GOLD = [i % 3 for i in range(300)]


def flip(
    preds: list[int], gold: list[int], right_to_wrong: int, wrong_to_right: int, seed: int = 0
) -> list[int]:
    """Copy of `preds` with a few items changed: exactly that many right->wrong and wrong->right."""
    out = list(preds)
    rng = random.Random(seed)
    right = [i for i, (p, g) in enumerate(zip(out, gold, strict=True)) if p == g]
    wrong = [i for i, (p, g) in enumerate(zip(out, gold, strict=True)) if p != g]
    for i in rng.sample(right, right_to_wrong):
        out[i] = (gold[i] + 1) % 3
    for i in rng.sample(wrong, wrong_to_right):
        out[i] = gold[i]
    return out


def check(decision, name):
    return next(c for c in decision.checks if c.name == name)


def test_clearly_better_candidate_passes_both_modes():
    champ = classifier_metrics(noisy_preds(GOLD, 0.6, 1), GOLD, model="champ")
    cand = classifier_metrics(noisy_preds(GOLD, 0.95, 2), GOLD)
    d = decide("classifier", cand, champ, "cpu")
    assert d.passed, d.reason
    boot = check(d, "bootstrap_non_inferior").numbers
    assert boot["ci_low"] > 0.2 and boot["observed_diff"] > 0.25
    assert boot["resamples"] >= 1000 and boot["confidence"] == 0.95
    superior = dataclasses.replace(load_policy("classifier"), mode="superior")
    assert decide("classifier", cand, champ, "cpu", superior).passed


def test_clearly_worse_candidate_fails_the_bootstrap_with_a_reason():
    champ = classifier_metrics(noisy_preds(GOLD, 0.95, 1), GOLD, model="champ")
    cand = classifier_metrics(noisy_preds(GOLD, 0.75, 2), GOLD)
    d = decide("classifier", cand, champ, "tiny")
    assert not d.passed
    boot = check(d, "bootstrap_non_inferior")
    assert not boot.passed and boot.numbers["ci_high"] < 0
    assert check(d, "floor").passed  # tiny floor 0.0: the comparison is what fails
    assert d.reason.startswith("Failed ") and "bootstrap_non_inferior" in d.reason
    assert d.reason.count(".") >= 1 and "\n" not in d.reason


def test_noise_level_difference_is_non_inferior_but_not_superior():
    base = noisy_preds(GOLD, 0.85, 3)
    champ = classifier_metrics(base, GOLD, model="champ")
    cand = classifier_metrics(flip(base, GOLD, right_to_wrong=4, wrong_to_right=3), GOLD)
    d = decide("classifier", cand, champ, "tiny")
    boot = check(d, "bootstrap_non_inferior").numbers
    assert boot["ci_low"] < 0 < boot["ci_high"]  # the difference is noise
    assert boot["ci_low"] >= -0.03 and d.passed
    superior = dataclasses.replace(load_policy("classifier"), mode="superior")
    ds = decide("classifier", cand, champ, "tiny", superior)
    assert not ds.passed and not check(ds, "bootstrap_superior").passed


def test_per_class_regression_fails_even_when_macro_f1_holds():
    # Champion perfect; candidate trades class 1 away: most class-1 items predicted 0 or 2.
    champ = classifier_metrics(list(GOLD), GOLD, model="champ")
    preds = [g if g != 1 or i % 10 < 6 else 0 for i, g in enumerate(GOLD)]
    cand = classifier_metrics(preds, GOLD)
    policy = dataclasses.replace(load_policy("classifier"), margin=0.5)  # isolate the per-class check
    d = decide("classifier", cand, champ, "tiny", policy)
    per_class = check(d, "per_class_f1")
    assert check(d, "bootstrap_non_inferior").passed
    assert not per_class.passed and per_class.numbers["worst_class"] == "1"
    assert per_class.numbers["drops"]["1"] > policy.max_class_f1_drop
    assert not d.passed and "per_class_f1" in d.reason


def test_no_champion_the_floor_decides():
    good = classifier_metrics(noisy_preds(GOLD, 0.95, 4), GOLD)
    poor = classifier_metrics(noisy_preds(GOLD, 0.40, 5), GOLD)
    d = decide("classifier", good, None, "cpu")
    assert d.passed and "No champion yet" in d.reason
    assert [c.name for c in d.checks] == ["floor", "behaviour"]
    d = decide("classifier", poor, None, "cpu")
    assert not d.passed and not check(d, "floor").passed
    # The tiny profile's floor is 0: the tiny DAG demo promotes a random-init model.
    assert decide("classifier", poor, None, "tiny").passed


def test_behavioural_checks_on_for_cpu_off_for_tiny():
    wrong = [dict(b) for b in BEHAVIOUR_OK]
    wrong[1] = {**wrong[1], "predicted": 2, "passed": False}
    cand = classifier_metrics(list(GOLD), GOLD, behaviour=wrong)
    d = decide("classifier", cand, None, "cpu")
    b = check(d, "behaviour")
    assert not d.passed and not b.passed and b.numbers["failed"] == 1 and "expected 1, got 2" in b.detail
    assert decide("classifier", cand, None, "tiny").passed
    # Not scoring the configured sentences is a failure, not a pass.
    missing = classifier_metrics(list(GOLD), GOLD, behaviour=[])
    assert not check(decide("classifier", missing, None, "gpu"), "behaviour").passed


def test_champion_on_another_data_version_must_be_rescored():
    champ = classifier_metrics(list(GOLD), GOLD, data_version="old")
    cand = classifier_metrics(list(GOLD), GOLD, data_version="new")
    with pytest.raises(DataError, match=r"re-score the champion.*models:/NAME@champion"):
        decide("classifier", cand, champ, "cpu")


def test_items_are_paired_by_id_not_by_position():
    champ = classifier_metrics(noisy_preds(GOLD, 0.8, 6), GOLD, model="champ")
    cand = classifier_metrics(noisy_preds(GOLD, 0.9, 7), GOLD)
    shuffled = dict(champ, items=random.Random(0).sample(champ["items"], len(champ["items"])))
    a = check(decide("classifier", cand, champ, "tiny"), "bootstrap_non_inferior").numbers
    b = check(decide("classifier", cand, shuffled, "tiny"), "bootstrap_non_inferior").numbers
    assert a == b  # same pairs, same seed: identical numbers
    partial = dict(champ, items=champ["items"][:-1])
    with pytest.raises(DataError, match="lacks the candidate's item 'pmid299'"):
        decide("classifier", cand, partial, "tiny")
    relabelled = dict(
        champ,
        items=[dict(it, gold=(it["gold"] + 1) % 3) if it["id"] == "pmid7" else it for it in champ["items"]],
    )
    with pytest.raises(DataError, match=r"items\[id=pmid7\].gold differs"):
        decide("classifier", cand, relabelled, "tiny")


def test_ner_entity_counts():
    rng = random.Random(8)
    strong = [(rng.randint(1, 3), rng.randint(0, 1) // 2, 0) for _ in range(500)]
    weak = [(tp, fp + 1, 1) for tp, fp, _ in strong]
    assert decide("ner", ner_metrics(strong), ner_metrics(weak, model="champ"), "tiny").passed
    d = decide("ner", ner_metrics(weak), ner_metrics(strong, model="champ"), "tiny")
    assert not d.passed and check(d, "bootstrap_non_inferior").numbers["ci_high"] < 0
    assert "per_class_f1" not in [c.name for c in d.checks]


def test_policy_validation_names_file_line_and_field(tmp_path: Path):
    policy = load_policy("classifier")
    assert policy.floor_for("tiny") == 0.0 and policy.mode == "non_inferior" and policy.resamples >= 1000
    assert load_policy("ner").metric == "entity_f1"
    text = (Path(__file__).parents[1] / "tasks" / "gates.yaml").read_text()
    bad = tmp_path / "gates.yaml"
    bad.write_text(text.replace("resamples: 2000", "resamples: 50", 1))
    line = next(i for i, s in enumerate(bad.read_text().splitlines(), 1) if "resamples: 50" in s)
    with pytest.raises(DataError, match=rf"gates.yaml:{line}: field classifier.bootstrap.resamples must be"):
        load_policy("classifier", bad)
    with pytest.raises(UsageError, match="unknown profile"):
        decide("classifier", classifier_metrics(GOLD, GOLD), None, "laptop")
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("  margin: 0.03", "  margn: 0.03", 1))
    line = next(i for i, s in enumerate(typo.read_text().splitlines(), 1) if "margn" in s)
    with pytest.raises(DataError, match=rf"typo.yaml:{line}: field classifier.margn is not a known field"):
        load_policy("classifier", typo)


def test_malformed_metrics_name_the_file_and_field(tmp_path: Path, capsys):
    cand = classifier_metrics(noisy_preds(GOLD, 0.9, 11), GOLD)
    cand["items"][3]["gold"] = "0"
    path = tmp_path / "cand.json"
    path.write_text(json.dumps(cand))
    base = [
        "gate",
        "classifier",
        "--profile",
        "tiny",
        "--champion",
        "none",
        "--out",
        str(tmp_path / "d.json"),
    ]
    assert run([*base, "--candidate", str(path)]) == 1
    assert f"{path}: field items[3].gold must be a valid integer, got '0'" in capsys.readouterr().err
    ner = ner_metrics([(1, 0, 0)] * 3)
    ner["metrics"]["entity_f1"] = True
    with pytest.raises(DataError, match=r"candidate metrics: field metrics.entity_f1 must be a valid number"):
        decide("ner", ner, None, "tiny")
    with pytest.raises(DataError, match=r"field task must be classifier or ner, got 'parser'"):
        decide("ner", dict(ner, task="parser"), None, "tiny")
    one = ner_metrics([(1, 0, 0)])
    with pytest.raises(DataError, match="needs at least 2 test items"):
        decide("ner", one, ner_metrics([(0, 1, 1)], model="champ"), "tiny")


def test_write_decision_json_report_and_plots(tmp_path: Path):
    champ = classifier_metrics(noisy_preds(GOLD, 0.8, 9), GOLD, model="champ")
    cand = classifier_metrics(noisy_preds(GOLD, 0.9, 10), GOLD)
    d = decide("classifier", cand, champ, "cpu")
    out = write_decision(d, tmp_path / "gate" / "classifier.json")
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == [
        "classifier.bootstrap.png",
        "classifier.confusion.png",
        "classifier.json",
        "classifier.md",
        "classifier.per_class_f1.png",
    ]  # and no temp folder left behind
    for png in out.parent.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out.parent / "classifier.md").read_text()
    assert d.reason in report and "bootstrap_non_inferior" in report and "classifier.bootstrap.png" in report
    back = load_decision(out)
    assert back.passed == d.passed and back.reason == d.reason and len(back.checks) == len(d.checks)
    assert json.loads(out.read_text())["gate"] == d.gate


def test_gate_cli_exit_codes_and_json(tmp_path: Path, capsys):
    champ = tmp_path / "champ.json"
    cand = tmp_path / "cand.json"
    champ.write_text(json.dumps(classifier_metrics(noisy_preds(GOLD, 0.95, 1), GOLD)))
    cand.write_text(json.dumps(classifier_metrics(noisy_preds(GOLD, 0.6, 2), GOLD)))
    base = ["gate", "classifier", "--profile", "tiny", "--json"]
    assert (
        run([*base, "--candidate", str(champ), "--champion", "none", "--out", str(tmp_path / "a.json")]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["gate"] == "passed" and doc["checks"][0]["name"] == "floor"
    code = run([*base, "--candidate", str(cand), "--champion", str(champ), "--out", str(tmp_path / "b.json")])
    captured = capsys.readouterr()
    assert code == 4 and json.loads(captured.out)["passed"] is False
    assert captured.err.startswith(f"error: gate failed for classifier (decision {tmp_path / 'b.json'}")
    assert (tmp_path / "b.json").exists() and (tmp_path / "b.md").exists()
    broken = tmp_path / "broken.json"
    broken.write_text('{"task": "classifier",\n "metrics": }')
    code = run([*base, "--candidate", str(broken), "--champion", "none", "--out", str(tmp_path / "c.json")])
    assert code == 1 and f"{broken}:2: not valid JSON" in capsys.readouterr().err
