"""The registry on a real MLflow SQLite store: idempotent registration, promotion, rollback, lineage."""

from __future__ import annotations

import json
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
from tasks.errors import DataError, GateFailed, UsageError
from tasks.gates import decide, load_metrics
from tasks.registry import register as registering
from tasks.registry.aliases import record
from tasks.registry.service import client

GOLD = [i % 3 for i in range(150)]
GOOD = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD, model="good")
WORSE = classifier_metrics(noisy_preds(GOLD, 0.55, 2), GOLD, model="worse")
NAME = "ncbi-disease-classifier"


@pytest.fixture
def store(empty_sqlite_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store per test (a copy of a migrated empty one: migrating takes ~5 s)."""
    shutil.copy(empty_sqlite_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)  # the run artifacts of a SQLite store land in ./mlruns
    return use_store(f"sqlite:///{tmp_path}/mlflow.db", monkeypatch)


def aliases() -> dict[str, str]:
    return {a: str(v) for a, v in client().get_registered_model(NAME).aliases.items()}


def test_register_twice_gives_one_version_with_all_tags(store):
    run_id = log_candidate(metrics=GOOD)
    first = registry.register_run("classifier", run_id, decide("classifier", GOOD, None, "cpu"))
    again = registry.register_run("classifier", run_id, decide("classifier", GOOD, None, "cpu"))
    assert (first.version, first.created) == ("1", True)
    assert (again.version, again.created) == ("1", False)
    assert [v["version"] for v in registry.list_versions("classifier")] == ["1"]
    for key in (
        "data_version",
        "git_commit",
        "image",
        "dag_run_id",
        "config_fingerprint",
        "gate",
        "gate_reason",
    ):
        assert first.tags.get(key), key
    assert first.tags["gate"] == "passed" and float(first.tags["test_f1"]) == pytest.approx(
        GOOD["metrics"]["macro_f1"]
    )
    assert first.tags["nemo_sha256"] and first.aliases == ["challenger"]
    assert "champion" not in aliases()  # registration never makes a champion


def test_acceptance_promote_worse_candidate_rollback_lineage_history(store, tmp_path: Path):
    r1 = log_candidate(metrics=GOOD)
    v1 = registry.register_run("classifier", r1, decide("classifier", GOOD, None, "cpu"))
    assert registry.champion_version("classifier") is None
    assert registry.champion_metrics("classifier", tmp_path / "none.json") is None
    promoted = registry.promote("classifier", v1.version, "first model", actor="alice")
    assert promoted["moved"] and promoted["from"] is None and aliases() == {"champion": "1"}

    # A worse candidate: the gate compares against the champion's own metrics.json from MLflow.
    champ_file = registry.champion_metrics("classifier", tmp_path / "champ.json")
    assert champ_file == tmp_path / "champ.json"
    decision = decide("classifier", WORSE, load_metrics(champ_file), "cpu")
    assert not decision.passed and decision.reason
    v2 = registry.register_run("classifier", log_candidate(metrics=WORSE), decision)
    assert v2.tags["gate"] == "failed" and v2.tags["gate_reason"] == decision.reason
    assert aliases() == {"champion": "1", "challenger": "2"}  # challenger moved, champion stayed
    with pytest.raises(GateFailed, match="failed its gate"):
        registry.promote("classifier", "2", "try anyway")
    assert aliases()["champion"] == "1"

    # A better third candidate is promoted, then rolled back to the previous champion.
    better = classifier_metrics(noisy_preds(GOLD, 0.97, 3), GOLD, model="better")
    v3 = registry.register_run(
        "classifier", log_candidate(metrics=better), decide("classifier", better, GOOD, "cpu")
    )
    registry.promote(NAME, v3.version, "gate passed", actor="airflow")
    assert aliases() == {"champion": "3"}  # assigning champion drops challenger from that version
    back = registry.rollback("classifier", None, "regression in production", actor="bob")
    assert (back["from"], back["version"]) == ("3", "1") and aliases()["champion"] == "1"

    moves = registry.history("classifier")
    champion_moves = [(m["from"], m["to"], m["who"]) for m in moves if m["alias"] == "champion"]
    assert champion_moves == [(None, "1", "alice"), ("1", "3", "airflow"), ("3", "1", "bob")]
    assert all({"when", "who", "alias", "from", "to", "why"} <= set(m) for m in moves)
    assert moves[-1]["why"] == "rollback: regression in production"

    info = registry.lineage("classifier@champion")
    assert info["version"] == "1" and info["run"]["run_id"] == r1
    assert info["data_version"] == "d1" and info["git_commit"] == "abc1234" and info["image"] == "local"
    assert info["gate"]["gate"] == "passed" and [c["name"] for c in info["gate"]["checks"]] == [
        "floor",
        "behaviour",
    ]
    assert info["chain"][0] == "data d1" and info["chain"][3] == f"run {r1}"
    champ = registry.champion_version("classifier")
    assert (
        champ["version"] == "1"
        and champ["run_id"] == r1
        and champ["tags"]["config_fingerprint"] == "fp-classifier"
    )


@pytest.mark.parametrize(
    ("nemo", "message"),
    [("missing", "has no .nemo artifact"), ("corrupt", "not a readable tar"), ("tampered", "differs from")],
)
def test_missing_or_corrupt_nemo_cannot_be_promoted(store, nemo, message):
    good = registry.register_run("classifier", log_candidate(metrics=GOOD), None)
    registry.promote("classifier", good.version, "baseline")
    bad = registry.register_run("classifier", log_candidate(metrics=GOOD, nemo=nemo), None)
    with pytest.raises(DataError, match=message):
        registry.promote("classifier", bad.version, "by hand", force=True)
    assert aliases()["champion"] == good.version


def test_a_retry_after_a_crash_finds_the_version_and_finishes_the_alias(store, monkeypatch):
    run_id = log_candidate(metrics=GOOD)
    real = registering.move_alias

    def crash(*args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(registering, "move_alias", crash)
    with pytest.raises(RuntimeError):
        registry.register_run("classifier", run_id, None)
    monkeypatch.setattr(registering, "move_alias", real)
    version = registry.register_run("classifier", run_id, None)
    assert version.version == "1" and not version.created and aliases() == {"challenger": "1"}
    # The version that existed before the alias already had every tag.
    assert version.tags["gate"] == "none" and version.tags["data_version"] == "d1"


def test_racing_registration_keeps_the_lowest_version(store, monkeypatch):
    """The other process's version committed while we were not looking: ours is deleted, theirs returned."""
    run_id = log_candidate(metrics=GOOD)
    theirs = registry.register_run("classifier", run_id, None)
    real = registering._versions_of_run
    calls = {"n": 0}

    def blind_first(*args):
        calls["n"] += 1
        return [] if calls["n"] == 1 else real(*args)

    monkeypatch.setattr(registering, "_versions_of_run", blind_first)
    ours = registry.register_run("classifier", run_id, None)
    assert ours.version == theirs.version == "1" and not ours.created
    assert [v["version"] for v in registry.list_versions("classifier")] == ["1"]


def test_history_spills_into_pages_without_losing_moves(store):
    registry.register_run("classifier", log_candidate(metrics=GOOD), None)
    mlflow_client = client()
    for i in range(40):
        entry = {"when": "t", "who": "w", "alias": "x", "from": str(i), "to": str(i + 1), "why": "y" * 250}
        record(mlflow_client, NAME, entry)
    tags = mlflow_client.get_registered_model(NAME).tags
    assert all(len(v) <= 5000 for k, v in tags.items() if k.startswith("alias_history"))
    assert len([k for k in tags if k.startswith("alias_history.")]) >= 2
    moves = [m for m in registry.history("classifier") if m["alias"] == "x"]
    assert [m["to"] for m in moves] == [str(i + 1) for i in range(40)]


def test_bad_input_is_a_clear_error(store):
    with pytest.raises(UsageError, match="find run nope"):
        registry.register_run("classifier", "nope", None)
    version = registry.register_run("classifier", log_candidate(metrics=GOOD), None)
    with pytest.raises(UsageError, match="has no champion to roll back"):
        registry.rollback("classifier", None, "why")
    registry.promote("classifier", version.version, "first")
    with pytest.raises(UsageError, match="no champion before version 1"):
        registry.rollback("classifier", None, "why")
    with pytest.raises(UsageError, match="needs a reason"):
        registry.promote("classifier", version.version, " ")
    with pytest.raises(UsageError, match="read version 9"):
        registry.promote("classifier", "9", "no such version")
    with pytest.raises(UsageError, match="decision: field model"):
        registry.register_run(
            "ner", "x", json.loads(json.dumps(decide("classifier", GOOD, None, "cpu").to_dict()))
        )
