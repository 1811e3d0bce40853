"""The registry CLI end to end on a SQLite store: JSON shapes, human output, exit codes."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from registry_helpers import (
    classifier_metrics,
    empty_sqlite_store_fixture,  # noqa: F401  (a fixture)
    log_candidate,
    noisy_preds,
    use_store,
)

from tasks.cli import run

GOLD = [i % 3 for i in range(150)]


@pytest.fixture
def store(empty_sqlite_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    shutil.copy(empty_sqlite_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCBI_RETRAIN_ACTOR", "tester")
    return use_store(f"sqlite:///{tmp_path}/mlflow.db", monkeypatch)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gate_register_promote_rollback_list_history_lineage(store, tmp_path: Path, capsys):
    good = classifier_metrics(noisy_preds(GOLD, 0.92, 1), GOLD)
    worse = classifier_metrics(noisy_preds(GOLD, 0.55, 2), GOLD)
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    r1, r2 = log_candidate(metrics=good), log_candidate(metrics=worse)

    code, out, _ = cli(
        capsys, "gate", "classifier", "--candidate", "good.json", "--champion", "none", "--out", "g1.json"
    )
    assert code == 0 and out.startswith("gate passed: No champion yet")
    code, out, _ = cli(capsys, "register", "classifier", "--run-id", r1, "--decision", "g1.json", "--json")
    first = json.loads(out)
    assert code == 0 and (first["name"], first["version"]) == ("ncbi-disease-classifier", "1")
    code, out, _ = cli(capsys, "register", "classifier", "--run-id", r1, "--decision", "g1.json")
    assert code == 0 and out.startswith("already registered: ncbi-disease-classifier version 1")
    code, out, _ = cli(capsys, "promote", "ncbi-disease-classifier", "1", "--reason", "first", "--json")
    assert code == 0 and json.loads(out)["moved"] is True

    code, _, err = cli(
        capsys,
        "gate",
        "classifier",
        "--candidate",
        "worse.json",
        "--champion",
        "good.json",
        "--out",
        "g2.json",
    )
    assert code == 4 and "gate failed" in err
    code, out, _ = cli(capsys, "register", "classifier", "--run-id", r2, "--decision", "g2.json", "--json")
    assert json.loads(out)["tags"]["gate"] == "failed"
    code, _, err = cli(capsys, "promote", "classifier", "2", "--reason", "try")
    assert code == 4 and err.startswith("error: version 2 of ncbi-disease-classifier failed its gate")

    code, out, _ = cli(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["version"], r["aliases"], r["gate"]) for r in rows] == [
        ("1", ["champion"], "passed"),
        ("2", ["challenger"], "failed"),
    ]
    assert all(r["data_version"] == "d1" and isinstance(r["test_f1"], float) for r in rows)
    code, out, _ = cli(capsys, "models", "list", "classifier")
    assert code == 0 and "champion" in out.splitlines()[1] and "challenger" in out.splitlines()[2]

    # Forced by hand, then rolled back to the previous champion.
    code, out, _ = cli(capsys, "promote", "classifier", "2", "--reason", "forced", "--force", "--json")
    assert code == 0 and json.loads(out)["forced"] is True
    code, out, _ = cli(capsys, "rollback", "classifier", "--reason", "bad idea", "--json")
    assert code == 0 and (json.loads(out)["from"], json.loads(out)["version"]) == ("2", "1")

    code, out, _ = cli(capsys, "models", "history", "classifier", "--json")
    moves = json.loads(out)
    assert [(m["alias"], m["from"], m["to"]) for m in moves if m["alias"] == "champion"] == [
        ("champion", None, "1"),
        ("champion", "1", "2"),
        ("champion", "2", "1"),
    ]
    assert {m["who"] for m in moves} == {"tester"}
    code, out, _ = cli(capsys, "models", "history", "classifier")
    assert code == 0 and "rollback: bad idea" in out and "forced over a failed gate" in out

    code, out, _ = cli(capsys, "lineage", "classifier@champion")
    assert code == 0 and out.splitlines()[0] == "ncbi-disease-classifier version 1 (champion)"
    assert "data d1" in out and "git abc1234" in out and f"run {r1}" in out and "gate passed" in out
    code, out, _ = cli(capsys, "lineage", "ncbi-disease-classifier@champion", "--json")
    assert json.loads(out)["run"]["run_id"] == r1


def test_usage_errors_exit_2(store, capsys):
    code, _, err = cli(capsys, "lineage", "classifier")
    assert code == 2 and "expected NAME@ALIAS" in err
    code, _, err = cli(capsys, "register", "classifier", "--run-id", "0" * 32, "--tag", "novalue")
    assert code == 2 and "--tag 'novalue' is not KEY=VALUE" in err
    code, _, err = cli(capsys, "promote", "classifier", "3", "--reason", "x")
    assert code == 2 and err.startswith("error: read version 3 of ncbi-disease-classifier")


def test_unreachable_server_fails_in_seconds_with_exit_3(monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    use_store(f"http://127.0.0.1:{port}", monkeypatch)
    start = time.monotonic()
    code, _, err = cli(capsys, "models", "list", "--json")
    elapsed = time.monotonic() - start
    assert code == 3 and f"MLflow at http://127.0.0.1:{port} is unreachable" in err
    assert elapsed < 20, elapsed
