"""The run's data drift as the DAG's validate and gate steps use it (`tasks.pipeline.datadrift`): the
reference is each model's champion's data version (found in git, materialised from DVC), else the previous
published version; the gate's decision report shows the section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvc_helpers import (
    TwoVersions,
    git,
    two_versions_fixture,  # noqa: F401  (a fixture)
)
from registry_helpers import (
    classifier_metrics,
    empty_sqlite_store_fixture,  # noqa: F401  (a fixture)
    log_candidate,
    use_store,
)

from tasks.pipeline.datadrift import PREVIOUS, drift_for, references, run_drift
from tasks.pipeline.rundir import run_dir
from tasks.vocab import DataRef


@pytest.fixture
def project(two_versions: TwoVersions, empty_sqlite_store: Path, tmp_path: Path, monkeypatch) -> TwoVersions:
    """Two published data versions (HEAD~1 = v1, HEAD = v2), an empty registry, runs under tmp_path."""
    import shutil

    from tasks.settings import get_settings

    shutil.copy(empty_sqlite_store, tmp_path / "mlflow.db")
    use_store(f"sqlite:///{tmp_path}/mlflow.db", monkeypatch)
    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(two_versions.repo))
    monkeypatch.setenv("NCBI_RETRAIN_WORK_DIR", str(tmp_path / "runs"))
    get_settings.cache_clear()
    yield two_versions
    get_settings.cache_clear()


def run_data(project: TwoVersions, tmp_path: Path) -> DataRef:
    """The run's own data: v2 materialised as pull_data does."""
    from tasks.versioning import materialize

    got = materialize(project.repo, "HEAD", tmp_path / "run-data")
    return DataRef(data_dir=got.path, data_version=got.data_version, revision="HEAD", commit=got.commit)


def champion_on(version: str, model: str = "classifier") -> str:
    """A registered, promoted version of `model` whose lineage says it was trained on data `version`."""
    from tasks import registry
    from tasks.gates import decide

    good = classifier_metrics([0, 1, 2, 0], [0, 1, 2, 0], data_version=version)
    rv = registry.register_run(
        model, log_candidate(metrics=good, data_version=version), decide(model, good, None, "tiny"),
        {"data_version": version},
    )  # fmt: skip
    registry.promote(model, rv.version, "test champion", actor="test")
    return str(rv.version)


def test_without_a_champion_the_previous_version_is_the_reference(project, tmp_path: Path):
    data = run_data(project, tmp_path)
    refs, _ = references(data, project.repo)
    assert [r["data_version"] for r in refs] == [project.v1] and refs[0]["why"] == PREVIOUS
    assert (
        refs[0]["models"] == ["classifier", "ner"]
        and refs[0]["commit"] == git(project.repo, "rev-parse", "HEAD~1").strip()
    )
    path = run_drift(data, "manual__drift")
    doc = json.loads(path.read_text())
    (comparison,) = doc["comparisons"]
    assert comparison["from"]["data_version"] == project.v1 and comparison["to"]["data_version"] == project.v2
    assert comparison["splits"]["train"]["changed"] is False  # write_small_data varies MANIFEST.json only
    folder = run_dir("manual__drift") / "validation"
    assert (folder / "drift.md").read_text().startswith("# Data drift of this run")
    assert not list(folder.glob("reference-*"))  # the materialised reference is discarded
    assert drift_for("ner", "manual__drift") == comparison


def test_the_champions_data_version_is_the_reference(project, tmp_path: Path):
    # v2's test split differs from v1's: the champion (on v1) is only comparable after a warning.
    write_test = project.repo / "data" / "tc3" / "test.tsv"
    write_test.write_text("another test abstract\t1\n")
    from tasks.versioning import publish

    v3 = publish(project.repo)
    git(project.repo, "add", "data.dvc")
    git(project.repo, "commit", "-qm", "data v3")
    number = champion_on(project.v1)
    data = run_data(project, tmp_path)
    assert data.data_version == v3
    refs, _ = references(data, project.repo)
    by_version = {r["data_version"]: r for r in refs}
    assert by_version[project.v1]["models"] == ["classifier"]
    assert by_version[project.v1]["why"] == f"data of the classifier champion v{number}"
    assert by_version[project.v2]["models"] == ["ner"] and by_version[project.v2]["why"] == PREVIOUS
    run_drift(data, "manual__champ")
    mine = drift_for("classifier", "manual__champ")
    assert mine["from"]["data_version"] == project.v1
    assert mine["splits"]["test"]["changed"] and "test split changed" in mine["warnings"][0]
    assert drift_for("ner", "manual__champ")["from"]["data_version"] == project.v2


def test_a_champion_on_this_data_needs_no_reference_but_validation_still_compares(project, tmp_path: Path):
    champion_on(project.v2)
    data = run_data(project, tmp_path)
    refs, notes = references(data, project.repo)
    assert any("trained on this run's data version" in n for n in notes)
    assert [(r["data_version"], r["models"]) for r in refs] == [(project.v1, ["ner"])]
    run_drift(data, "manual__same")
    assert drift_for("classifier", "manual__same") is None


def test_the_gate_report_shows_the_drift_section(project, tmp_path: Path):
    from tasks.gates import decide, write_decision

    data = run_data(project, tmp_path)
    run_drift(data, "manual__gate")
    good = classifier_metrics([0, 1, 2], [0, 1, 2], data_version=data.data_version)
    decision = decide("classifier", good, None, "tiny").model_copy(
        update={"drift": drift_for("classifier", "manual__gate")}
    )
    out = write_decision(decision, tmp_path / "decision.json")
    md = (tmp_path / "decision.md").read_text()
    assert "## Data drift" in md and f"From `{project.v1}` ({PREVIOUS})" in md
    assert json.loads(out.read_text())["drift"]["from"]["data_version"] == project.v1
