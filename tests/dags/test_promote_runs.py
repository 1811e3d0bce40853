"""`ncbi_promote` with `dag.test()`: manual promotion, rollback to the previous champion, and the refusal
of a version whose gate failed, on a real MLflow SQLite store (runs logged like `train` does)."""

from __future__ import annotations

import pytest
from registry_helpers import log_candidate, use_store

PASSED = {
    "model": "classifier",
    "passed": True,
    "reason": "clears the floor.",
    "metric": "macro_f1",
    "candidate_value": 1.0,
}
FAILED = PASSED | {"passed": False, "reason": "Failed floor (macro_f1 0.2 < floor 0.8)."}


@pytest.fixture
def store(tmp_path, monkeypatch, airflow_db):
    from tasks import registry
    from tasks.settings import get_settings

    use_store(f"sqlite:///{tmp_path / 'mlflow.db'}", monkeypatch)
    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(tmp_path))
    get_settings.cache_clear()
    versions = []
    for decision in (PASSED, PASSED, FAILED):
        rv = registry.register_run("classifier", log_candidate("classifier"), decision, {"dag_run_id": "t"})
        versions.append(rv.version)
    registry.promote("classifier", versions[0], "first champion", actor="test")
    yield versions
    get_settings.cache_clear()


def run(dagbag, conf):
    dr = dagbag.get_dag("ncbi_promote").test(run_conf=conf)
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_promote_then_roll_back_to_the_previous_champion(dagbag, store):
    from tasks import registry

    v1, v2, _ = store
    dr, states = run(
        dagbag, {"model": "classifier", "action": "promote", "version": v2, "reason": "better on X"}
    )
    assert str(dr.state) == "success"
    assert states == {"move_classifier_champion": "success", "move_ner_champion": "skipped"}
    assert registry.champion_version("classifier")["version"] == v2
    last = registry.history("classifier")[-1]
    assert last["to"] == v2 and last["from"] == v1 and "better on X" in last["why"]
    assert last["who"].startswith("airflow:ncbi_promote")
    promoter = last["who"]

    dr, states = run(
        dagbag,
        {
            "model": "classifier",
            "action": "rollback",
            "version": "previous",
            "reason": "regression seen in production",
        },
    )
    assert str(dr.state) == "success"
    assert registry.champion_version("classifier")["version"] == v1
    last = registry.history("classifier")[-1]
    assert "regression seen in production" in last["why"]
    assert last["who"] == promoter  # the Airflow user who triggered it, as for promote; never the OS account


def test_a_failed_gate_version_is_refused(dagbag, store):
    from tasks import registry

    v1, _, v3 = store
    dr, states = run(dagbag, {"model": "classifier", "action": "promote", "version": v3, "reason": "please"})
    assert str(dr.state) == "failed" and states["move_classifier_champion"] == "failed"
    assert registry.champion_version("classifier")["version"] == v1
