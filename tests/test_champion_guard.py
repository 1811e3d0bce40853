"""The champion guard (what `ncbi_champion` runs) on a real MLflow SQLite store: outside moves are
recorded once, an unverified champion is reverted with both moves in the history, a revert never loops,
and the pipeline's own moves get no second entry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from registry_helpers import (
    classifier_metrics,
    empty_sqlite_store_fixture,  # noqa: F401  (a fixture)
    log_candidate,
    noisy_preds,
    use_store,
)

from tasks import registry
from tasks.gates import decide
from tasks.registry import guard
from tasks.registry.aliases import HISTORY_MARKER, actor_name
from tasks.registry.service import client
from tasks.settings import get_settings

GOLD = [i % 3 for i in range(150)]
GOOD = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD, model="good")
WORSE = classifier_metrics(noisy_preds(GOLD, 0.55, 2), GOLD, model="worse")
NAME = "ncbi-disease-classifier"


@pytest.fixture
def store(empty_sqlite_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    shutil.copy(empty_sqlite_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    return use_store(f"sqlite:///{tmp_path}/mlflow.db", monkeypatch)


@pytest.fixture
def two_versions(store):
    """v1 champion (gate passed, promoted by the pipeline), v2 registered with a failed gate."""
    v1 = registry.register_run(
        "classifier", log_candidate(metrics=GOOD), decide("classifier", GOOD, None, "cpu")
    )
    registry.promote(NAME, v1.version, "gate passed", actor="airflow:ncbi_retrain")
    failed = decide("classifier", WORSE, GOOD, "cpu")
    assert not failed.passed
    v2 = registry.register_run("classifier", log_candidate(metrics=WORSE, payload=b"v2"), failed)
    return v1.version, v2.version


def champion() -> str:
    return str(client().get_registered_model(NAME).aliases["champion"])


def champion_moves() -> list[dict]:
    return [e for e in registry.history(NAME) if e["alias"] == "champion"]


def test_the_pipelines_own_promotion_gets_no_second_history_entry(two_versions):
    before = registry.history(NAME)
    plan = guard.inspect("classifier", [], grace_s=0)
    assert plan["action"] == "accept" and plan["outside"] is False and plan["failures"] == []
    assert registry.history(NAME) == before


def test_an_outside_move_onto_a_verified_version_is_recorded_once_and_accepted(two_versions):
    v1, _ = two_versions
    v3 = registry.register_run(
        "classifier", log_candidate(metrics=GOOD, payload=b"v3"), decide("classifier", GOOD, None, "cpu")
    )
    client().set_registered_model_alias(NAME, "champion", v3.version)  # as a person in MLflow's UI would
    reported = [{"version": v3.version, "delivery_id": "d-9", "timestamp": "2026-12-02T10:00:00+00:00"}]
    plan = guard.inspect("classifier", reported, grace_s=0)
    assert plan["action"] == "accept" and plan["outside"] is True
    outside = champion_moves()[-1]
    assert outside["source"] == "outside" and outside["who"] == guard.OUTSIDE_WHO
    assert (outside["from"], outside["to"], outside["delivery_id"]) == (v1, v3.version, "d-9")
    assert "2026-12-02T10:00:00" in outside["why"]
    count = len(registry.history(NAME))
    assert guard.inspect("classifier", reported, grace_s=0)["outside"] is False  # recorded once
    assert len(registry.history(NAME)) == count
    description = client().get_registered_model(NAME).description
    assert HISTORY_MARKER in description and "**(outside move)**" in description


def test_a_failed_gate_champion_is_reverted_and_both_moves_are_in_the_history(two_versions):
    v1, v2 = two_versions
    client().set_registered_model_alias(NAME, "champion", v2)
    plan = guard.inspect("classifier", [], grace_s=0)
    assert plan["action"] == "revert" and plan["target"] == v1
    assert any(f.startswith("gate is failed") for f in plan["failures"])
    guard.revert(plan)
    assert champion() == v1
    outside, back = champion_moves()[-2:]
    assert (outside["source"], outside["to"]) == ("outside", v2)
    assert (back["who"], back["from"], back["to"]) == (guard.GUARD_ACTOR, v2, v1)
    assert back["why"].startswith("revert: unverified champion v2: gate is failed")
    # The revert's own Asset event: verified, recorded, nothing more to do (no loop).
    count = len(registry.history(NAME))
    again = guard.inspect("classifier", [], grace_s=0)
    assert again["action"] == "accept" and again["outside"] is False
    assert len(registry.history(NAME)) == count


def test_a_revert_is_never_reverted(two_versions):
    v1, v2 = two_versions
    client().set_registered_model_alias(NAME, "champion", v2)
    guard.revert(guard.inspect("classifier", [], grace_s=0))
    client().set_model_version_tag(NAME, v1, "nemo_sha256", "0" * 64)  # v1's artifact now looks corrupt
    plan = guard.inspect("classifier", [], grace_s=0)
    assert plan["action"] == "alert" and "not reverted again" in plan["reason"]
    assert champion() == v1


def test_policy_alert_leaves_the_champion_and_says_why(two_versions, monkeypatch):
    _, v2 = two_versions
    monkeypatch.setenv("NCBI_RETRAIN_CHAMPION_GUARD", "alert")
    get_settings.cache_clear()
    try:
        client().set_registered_model_alias(NAME, "champion", v2)
        plan = guard.inspect("classifier", [], grace_s=0)
    finally:
        get_settings.cache_clear()
    assert plan["action"] == "alert" and "NCBI_RETRAIN_CHAMPION_GUARD=alert" in plan["reason"]
    assert champion() == v2


def test_missing_lineage_and_a_corrupt_artifact_fail_verification(store):
    rv = registry.register_run(
        "classifier", log_candidate(metrics=GOOD), decide("classifier", GOOD, None, "cpu")
    )
    client().delete_model_version_tag(NAME, rv.version, "git_commit")
    client().set_model_version_tag(NAME, rv.version, "nemo_sha256", "f" * 64)
    failures = guard.verify_version(NAME, rv.version)
    assert any("lineage tags missing: git_commit" in f for f in failures)
    assert any("corrupt" in f for f in failures)


def test_a_checked_move_is_skipped_the_second_time(two_versions):
    plan = guard.inspect("classifier", [], grace_s=0)
    guard.record_check(plan, "passed")
    assert guard.inspect("classifier", [], grace_s=0)["action"] == "skip"


def test_an_outside_deletion_of_champion_is_restored(two_versions):
    v1, _ = two_versions
    client().delete_registered_model_alias(NAME, "champion")
    plan = guard.inspect("classifier", [], grace_s=0)
    assert plan["outside"] and plan["action"] == "revert" and plan["target"] == v1
    guard.revert(plan)
    assert champion() == v1


def test_moves_inside_an_airflow_task_name_the_dag_not_the_os_user(monkeypatch):
    monkeypatch.delenv("NCBI_RETRAIN_ACTOR", raising=False)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "ncbi_retrain")
    assert actor_name(None) == "airflow:ncbi_retrain"
    assert actor_name("airflow:ncbi_promote:alice") == "airflow:ncbi_promote:alice"


def test_a_rollback_through_ncbi_promote_records_the_airflow_user(two_versions):
    from tasks.pipeline.manual import manual_promotion

    v1, _ = two_versions
    v3 = registry.register_run(
        "classifier", log_candidate(metrics=GOOD, payload=b"v3"), decide("classifier", GOOD, None, "cpu")
    )
    registry.promote(NAME, v3.version, "better", actor="airflow:ncbi_retrain")
    manual_promotion("classifier", "rollback", "previous", "bad in prod", "airflow:ncbi_promote:alice")
    last = champion_moves()[-1]
    assert (last["to"], last["who"]) == (v1, "airflow:ncbi_promote:alice")


def _predictions(labels: list[int]) -> str:
    import json

    rows = [
        {"label": lb, "name": "x", "probabilities": [0.1, 0.1, 0.1][:lb] + [0.8] + [0.1] * (2 - lb)}
        for lb in labels
    ]
    return json.dumps({"predictions": rows})


def test_smoke_judgement_requires_behaviour_only_where_the_gate_did():
    from tasks.pipeline.jobs import smoke_job
    from tasks.registry.card import judge_smoke, smoke_cases

    cases = smoke_cases("classifier")
    assert len(cases) >= 3  # the tutorial's three sentences first
    job = smoke_job("classifier", "manual__1")
    assert job.argv[:5] == [
        "predict",
        "classifier",
        "--model",
        "models:/ncbi-disease-classifier@champion",
        "--json",
    ]
    assert job.argv[5:] == [c["text"] for c in cases] and "MLFLOW_TRACKING_URI" in job.env
    right = _predictions([c["expected"] for c in cases])
    wrong = _predictions([(c["expected"] + 1) % 3 for c in cases])
    assert judge_smoke("classifier", right, "cpu")["passed"]
    assert not judge_smoke("classifier", wrong, "cpu")["passed"]  # cpu/gpu gates check behaviour
    assert judge_smoke("classifier", wrong, "tiny")["passed"]  # the tiny gate does not
    assert not judge_smoke("classifier", "Traceback ...", "tiny")["passed"]
    assert not judge_smoke("classifier", _predictions([0]), "tiny")["passed"]  # missing predictions


def test_the_model_card_is_logged_to_the_run_and_shown_on_the_version(two_versions):
    from mlflow.artifacts import download_artifacts

    from tasks.registry.card import CARD_TAG, judge_smoke, smoke_cases, write_model_card

    v1, _ = two_versions
    smoke = judge_smoke("classifier", _predictions([c["expected"] for c in smoke_cases("classifier")]), "cpu")
    card = write_model_card("classifier", v1, smoke)
    mv = client().get_model_version(NAME, v1)
    assert (
        mv.tags[CARD_TAG] == card["uri"] and "Model card" in mv.description and "macro_f1" in mv.description
    )
    text = Path(download_artifacts(card["uri"])).read_text()
    for needle in ("## Lineage", "data d1", "## Gate decision", "macro_f1", ".png)", "Smoke test", "passed"):
        assert needle in text, needle


def test_an_announced_move_that_is_never_recorded_ends_up_as_an_outside_move(two_versions):
    import json
    import time

    from tasks.registry.aliases import PENDING_TAG

    v3 = registry.register_run(
        "classifier", log_candidate(metrics=GOOD, payload=b"v3"), decide("classifier", GOOD, None, "cpu")
    )
    pending = {"alias": "champion", "to": v3.version, "who": "airflow:ncbi_retrain", "at": time.time()}
    client().set_registered_model_tag(NAME, PENDING_TAG, json.dumps(pending))
    client().set_registered_model_alias(NAME, "champion", v3.version)  # then the mover crashed
    plan = guard.inspect("classifier", [], grace_s=1)
    assert plan["outside"] and champion_moves()[-1]["to"] == v3.version
