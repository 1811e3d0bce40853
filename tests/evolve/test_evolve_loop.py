"""The loop this system exists for, end to end with the tiny profile (`ncbi-retrain evolve`, marker `evolve`):
v1 (half of train) becomes champion, v2 (+ the other half through `data add`) is decided by the gate's CI,
v3 (30% of the train entity spans dropped or shifted, 30% of the abstracts relabelled) is refused and no
champion moves. Real components throughout: git, DVC, GX, `airflow dags test`, NeMo in the training env,
MLflow on SQLite.

Settings (docs/data.md, "The loop"): the whole release (a tiny classifier trained on half of train stays at
the majority class; on all of it, it learns), the tiny profile's 3 epochs, and the gate policy
`gates-tiny.yaml`: the shipped one with NER in `superior` mode. Measured beforehand: the classifier's label
noise is refused beyond doubt under the shipped rule (the whole 95% CI of the difference is below zero,
which the test asserts); the tiny NER model barely feels the span noise (-0.015, CI straddling zero), so
under the shipped margin its refusal would rest on the interval's width; under `superior` no version made
worse by noise can replace the champion, whatever the seed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tasks.evolve.loop import Loop, VersionOutcome, run_loop, settings_applied, verdict
from tasks.vocab import Profile

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3  # the tiny profile's own default
SEED = 20261202
POLICY = Path(__file__).with_name("gates-tiny.yaml")

pytestmark = [
    pytest.mark.evolve,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ROOT / ".venv-train" / "bin" / "ncbi-retrain").exists(), reason="needs the training env"
    ),
]


@pytest.fixture(scope="module")
def loop(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Loop, dict[str, VersionOutcome]]:
    cfg = Loop(
        root=tmp_path_factory.mktemp("evolve") / "loop",
        profile=Profile.tiny,
        release=shared_data / "ncbi_disease" / "original",
        mesh=shared_data / "mesh" / "2017MeshTree.txt",
        seed=SEED,
        epochs=EPOCHS,
        policy=POLICY,
    )
    outcomes = run_loop(cfg, echo=print)
    return cfg, {o.tag: o for o in outcomes}


def test_three_published_versions_each_trained_through_the_dag(loop):
    cfg, by_tag = loop
    assert list(by_tag) == ["v1", "v2", "v3"]
    assert len({o.data_version for o in by_tag.values()}) == 3
    tags = subprocess.run(["git", "tag"], cwd=cfg.repo, capture_output=True, text=True, check=True).stdout
    assert tags.split() == ["v1", "v2", "v3"]
    for tag, o in by_tag.items():
        summary = json.loads((Path(o.run_dir) / "summary.json").read_text())
        assert summary["data_version"] == o.data_version, tag
        assert all(m.trained for m in o.models.values()), tag


def test_v1_becomes_the_champion_of_both_models(loop):
    _, by_tag = loop
    for name, m in by_tag["v1"].models.items():
        assert m.gate == "passed" and m.champion_before is None, name
        assert m.champion_after == m.registered == "1", name


def test_v2_reproduces_the_release_and_the_gate_decides_with_its_ci(loop):
    _, by_tag = loop
    v2 = by_tag["v2"]
    assert v2.checks and "reproduces the release" in v2.checks[0]
    for name, m in v2.models.items():
        assert m.diff_ci is not None and m.diff_ci[0] <= m.diff <= m.diff_ci[1], name
        assert m.champion_value is not None and m.champion_ci is not None, name  # re-scored on v2's split
        expected = m.registered if m.gate == "passed" else m.champion_before
        assert m.champion_after == expected, (name, m.gate, m.reason)


def test_v3_is_refused_beyond_doubt_and_no_champion_moves(loop):
    cfg, by_tag = loop
    v3 = by_tag["v3"]
    assert "dropped" in v3.made and "relabelled" in v3.made
    for name, m in v3.models.items():
        assert m.gate == "failed", (name, m.reason)
        assert m.champion_after == m.champion_before == by_tag["v2"].models[name].champion_after, name
        assert m.diff_ci is not None, name
    # The classifier, under the shipped rule: not an inconclusive interval, the whole 95% CI is below zero.
    classifier = v3.models["classifier"]
    assert classifier.diff_ci[1] < 0, (classifier.diff, classifier.diff_ci)
    assert "not superior" in v3.models["ner"].reason
    from tasks.registry import list_versions, registered_name

    with settings_applied(cfg.settings_env()):
        for name, m in v3.models.items():
            rows = {r["version"]: r for r in list_versions(registered_name(name))}
            assert rows[m.registered]["gate"] == "failed" and "challenger" in rows[m.registered]["aliases"]
            assert "champion" in rows[m.champion_after]["aliases"]
    assert verdict(list(by_tag.values()))[0]


def test_drift_is_in_the_validation_and_gate_reports(loop):
    _, by_tag = loop
    v2_drift = json.loads((Path(by_tag["v2"].run_dir) / "validation" / "drift.json").read_text())
    for comparison in v2_drift["comparisons"]:
        train, test = comparison["splits"]["train"], comparison["splits"]["test"]
        assert train["pmids"]["added"] > 0 and train["pmids"]["removed"] == 0
        assert not test["changed"] and not any("test split" in w for w in comparison["warnings"])
    v3 = by_tag["v3"]
    for name in v3.models:
        report = (Path(v3.run_dir) / name / "decision.md").read_text()
        assert "## Data drift" in report and "entities per sentence moved" in report, name
    assert any("entities per sentence moved" in w for w in v3.drift_warnings)
    assert all(" (against data of the " in w for w in v3.drift_warnings)  # which champion's data


def test_the_outcome_files(loop):
    cfg, _ = loop
    doc = json.loads((cfg.root / "evolve.json").read_text())
    assert doc["passed"] and [v["tag"] for v in doc["versions"]] == ["v1", "v2", "v3"]
    text = (cfg.root / "evolve.md").read_text()
    assert text.count("| model | F1 [95% CI]") == 3 and "v3 refused by the gate" in text
