"""The approval step (promote=approve) without Airflow: reading the HITL operator's answer, the request the
approver sees, the promote step acting on approve / reject / timeout on a real MLflow SQLite store, the run
summary, and the `approve` command's errors when Airflow cannot be asked (the REST path itself runs against
the real api-server in tests/integration/test_approval_stack.py)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
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
from tasks.cli import run as cli
from tasks.gates import decide, write_decision
from tasks.pipeline import steps
from tasks.pipeline.approval import approval_request
from tasks.pipeline.summary import ModelOutcome, model_summary, result_table, summarize
from tasks.registry.service import client
from tasks.vocab import (
    Approval,
    ApprovalOutcome,
    DataRef,
    GateResult,
    Registration,
    RunParams,
    TrainResult,
)

GOLD = [i % 3 for i in range(150)]
CHAMP = classifier_metrics(noisy_preds(GOLD, 0.85, 1), GOLD, model="champ")
BETTER = classifier_metrics(noisy_preds(GOLD, 0.97, 2), GOLD, model="better")
NAME = "ncbi-disease-classifier"
AT = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
RUN = "manual__2026-12-01T02:00:00+00:00"


# ------------------------------------------------------------------------ the HITL operator's answer
@pytest.mark.parametrize(
    ("response", "outcome", "by", "reason"),
    [
        (
            {
                "chosen_options": ["Approve"],
                "params_input": {"reason": " looks right "},
                "responded_at": AT,
                "responded_by_user": {"id": "alice", "name": "alice"},
            },
            ApprovalOutcome.approved,
            "alice",
            "looks right",
        ),
        (
            {
                "chosen_options": ["Reject"],
                "params_input": {"reason": "per-class drop"},
                "responded_at": AT.isoformat(),
                "responded_by_user": {"id": "7", "name": "bob"},
            },
            ApprovalOutcome.rejected,
            "bob",
            "per-class drop",
        ),
        (  # the scheduler's answer when nobody answered in time: the default, by nobody
            {
                "chosen_options": ["Reject"],
                "params_input": {"reason": None},
                "responded_at": AT,
                "responded_by_user": None,
            },
            ApprovalOutcome.timed_out,
            None,
            None,
        ),
    ],
    ids=["approved", "rejected", "timed-out"],
)
def test_the_answer_is_read_from_the_hitl_result(response, outcome, by, reason):
    got = Approval.from_response(response)
    assert (got.outcome, got.by, got.reason, got.at) == (outcome, by, reason, "2026-12-01T02:30:00+00:00")


def test_no_answer_when_the_approval_did_not_run():
    assert Approval.from_response(None) is None and Approval.from_response({}) is None


@pytest.mark.parametrize(
    ("span", "text"),
    [(timedelta(hours=24), "24 h"), (timedelta(minutes=90), "90 min"), (timedelta(seconds=45), "45 s")],
)
def test_timeouts_read_as_people_say_them(span, text):
    from tasks.pipeline.approval import duration_text

    assert duration_text(span) == text


def test_answers_describe_themselves_for_the_summary():
    assert Approval(outcome="approved", by="alice", reason="ok").describe() == "approved by alice: ok"
    assert Approval(outcome="rejected", by="bob").describe() == "rejected by bob (no reason given)"
    late = Approval(outcome="timed_out", at="2026-12-02T02:00:00+00:00")
    assert "timed out" in late.describe() and "counts as rejected" in late.describe()
    assert late.short() == "timed out" and Approval(outcome="rejected", by="bob").short() == "rejected by bob"


# ------------------------------------------------------------------------------ the registry side
@pytest.fixture
def store(empty_sqlite_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store and a work dir; champion v1 (CHAMP) and a better challenger v2 (BETTER)."""
    shutil.copy(empty_sqlite_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCBI_RETRAIN_WORK_DIR", str(tmp_path / "runs"))
    from tasks.settings import get_settings

    get_settings.cache_clear()
    uri = use_store(f"sqlite:///{tmp_path}/mlflow.db", monkeypatch)
    v1 = registry.register_run(
        "classifier", log_candidate(metrics=CHAMP), decide("classifier", CHAMP, None, "cpu")
    )
    registry.promote("classifier", v1.version, "first model", actor="airflow:ncbi_retrain")
    yield uri
    get_settings.cache_clear()


def _candidate(tmp_path: Path) -> tuple[Registration, GateResult, TrainResult]:
    """v2 registered after a passed gate, with its decision and metrics files as the DAG writes them."""
    decision = decide("classifier", BETTER, CHAMP, "cpu")
    assert decision.passed, decision.reason
    run_id = log_candidate(metrics=BETTER)
    v2 = registry.register_run("classifier", run_id, decision)
    path = write_decision(decision, tmp_path / "runs" / RUN / "classifier" / "decision.json")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(BETTER))
    gated = GateResult(
        passed=True,
        gate="passed",
        reason=decision.reason,
        decision=str(path),
        metric="macro_f1",
        value=decision.candidate_value,
        champion_value=decision.champion_value,
    )
    trained = TrainResult(
        run_id=run_id,
        metrics={"test_macro_f1_ci_low": 0.91, "test_macro_f1_ci_high": 0.97},
        artifacts={"metrics": str(metrics)},
    )
    return Registration(name=NAME, version=v2.version, gate="passed"), gated, trained


def _aliases() -> dict[str, str]:
    return {a: str(v) for a, v in client().get_registered_model(NAME).aliases.items()}


APPROVE_MODE = RunParams.from_params({"promote": "approve"})


@pytest.mark.parametrize("mode", ["auto", "never"])
def test_no_approval_is_asked_unless_promote_is_approve(store, tmp_path, mode):
    registered, gated, trained = _candidate(tmp_path)
    options = RunParams.from_params({"promote": mode})
    request = approval_request("classifier", registered, gated, trained, options, RUN, timedelta(hours=24))
    assert not request.needed and f"promote={mode}" in request.reason and request.body == ""


def test_no_approval_is_asked_for_a_failed_gate(store, tmp_path):
    registered, gated, trained = _candidate(tmp_path)
    failed = gated.model_copy(update={"passed": False, "gate": "failed", "reason": "Failed floor."})
    request = approval_request("classifier", registered, failed, trained, APPROVE_MODE, RUN, timedelta(1))
    assert not request.needed and "failed its gate" in request.reason


def test_the_request_shows_the_decision_and_where_the_report_is(store, tmp_path):
    registered, gated, trained = _candidate(tmp_path)
    request = approval_request(
        "classifier", registered, gated, trained, APPROVE_MODE, RUN, timedelta(hours=24)
    )
    assert request.needed and request.version == "2"
    assert request.subject.startswith(f"Make {NAME} v2 the champion?") and "champion v1" in request.subject
    body = request.body
    assert f"| challenger v2 | **{gated.value:.4f}** | [0.9100, 0.9700] |" in body  # the metric and its CI
    assert f"| champion v1 | {gated.champion_value:.4f} |" in body
    assert "| difference (paired bootstrap) |" in body  # the difference's CI
    for name in ("cancer", "neurological", "other"):  # per-class changes
        assert f"| {name} |" in body
    assert "`bootstrap_non_inferior`" in body and "`behaviour`" in body  # every check
    assert "sentences as expected" in body  # the behavioural results
    assert str(Path(gated.decision).with_suffix(".md")) in body and trained.run_id in body
    assert f"ncbi-retrain approve classifier --run '{RUN}'" in body
    assert "No answer within 24 h" in body and "counts as a reject" in body


def test_approved_the_champion_moves_as_the_approvers_move(store, tmp_path):
    registered, gated, _ = _candidate(tmp_path)
    answer = Approval(outcome="approved", by="alice", reason="F1 up, per class fine", at=AT.isoformat())
    result = steps.promote(registered, gated, APPROVE_MODE, "ncbi_retrain", RUN, answer)
    assert result.promoted and "approved by alice: F1 up, per class fine" in result.reason
    assert _aliases() == {"champion": "2"}
    last = registry.history("classifier")[-1]  # challenger dropped from v2 after the champion move
    move = next(m for m in reversed(registry.history("classifier")) if m["alias"] == "champion")
    assert (move["from"], move["to"], move["who"]) == ("1", "2", "airflow:ncbi_retrain:alice")
    assert "approved by alice: F1 up, per class fine" in move["why"] and last["alias"] == "challenger"
    tags = client().get_model_version(NAME, "2").tags
    assert (tags["approval"], tags["approval_by"], tags["approval_reason"]) == (
        "approved",
        "alice",
        "F1 up, per class fine",
    )


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (Approval(outcome="rejected", by="bob", reason="wait for the new annotations"), "rejected by bob"),
        (Approval(outcome="timed_out", at=AT.isoformat()), "timed out"),
    ],
    ids=["rejected", "timed-out"],
)
def test_rejected_or_timed_out_the_champion_stays_and_the_reason_is_on_the_version(
    store, tmp_path, answer, said
):
    registered, gated, _ = _candidate(tmp_path)
    moves = registry.history("classifier")
    result = steps.promote(registered, gated, APPROVE_MODE, "ncbi_retrain", RUN, answer)
    assert not result.promoted and said in result.reason and result.approval == answer
    assert _aliases() == {"champion": "1", "challenger": "2"}
    assert registry.history("classifier") == moves  # nothing moved, nothing recorded as a move
    tags = client().get_model_version(NAME, "2").tags
    assert tags["approval"] == answer.outcome.value and tags["approval_by"] == (answer.by or "")
    assert tags["approval_reason"] == (answer.reason or "")


def test_approve_mode_without_an_answer_never_moves_the_champion(store, tmp_path):
    registered, gated, _ = _candidate(tmp_path)
    result = steps.promote(registered, gated, APPROVE_MODE, "ncbi_retrain", RUN, None)
    assert not result.promoted and "nobody approved" in result.reason
    assert _aliases() == {"champion": "1", "challenger": "2"}


def test_the_summary_and_the_demo_table_say_what_the_approver_did(store, tmp_path):
    registered, gated, trained = _candidate(tmp_path)
    rejected = {
        "chosen_options": ["Reject"],
        "params_input": {"reason": "wait for the new annotations"},
        "responded_at": AT,
        "responded_by_user": {"id": "bob", "name": "bob"},
    }
    outcome = ModelOutcome.from_xcom(
        {"train": trained.dump(), "gate": gated.dump(), "register": registered.dump(), "approval": rejected}
    )
    line = model_summary(outcome)
    assert not line.promoted and line.approval.outcome == ApprovalOutcome.rejected
    assert line.reason == "v2 passed the gate, not promoted: rejected by bob: wait for the new annotations"
    summary = summarize(RUN, DataRef(data_dir="data", data_version="d1"), {"classifier": outcome})
    table = result_table(Path(summary.path))
    assert "approval" in table.splitlines()[0] and "rejected by bob" in table.splitlines()[2]
    assert "rejected by bob: wait for the new annotations" in table
    saved = json.loads(Path(summary.path).read_text())
    assert saved["models"]["classifier"]["approval"]["by"] == "bob"
    assert "The DAG run took" not in table  # no start given (a summary written before it was recorded)


def test_the_demo_table_says_how_long_the_dag_run_took(store, tmp_path):
    started = datetime.now(UTC) - timedelta(seconds=125)
    summary = summarize(RUN, DataRef(data_dir="data", data_version="d1"), {}, started)
    assert json.loads(Path(summary.path).read_text())["started_at"] == summary.started_at
    last = result_table(Path(summary.path)).splitlines()[-1]
    assert last.startswith("The DAG run took ") and last.endswith(" s (from its start to this summary).")
    assert 124 <= int(last.split()[4]) <= 126  # the run's start and the summary's time, to the second


# ------------------------------------------------------------------------- the approve command
def test_approve_without_a_password_says_which_setting(monkeypatch, capsys):
    from tasks.settings import get_settings

    monkeypatch.delenv("NCBI_RETRAIN_AIRFLOW_PASSWORD", raising=False)
    get_settings.cache_clear()
    assert cli(["approve", "classifier", "--run", RUN, "--reason", "ok"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Airflow password") and "NCBI_RETRAIN_AIRFLOW_PASSWORD" in err
    assert len(err.splitlines()) == 1
    get_settings.cache_clear()


def test_approve_with_airflow_down_is_one_sentence(monkeypatch, capsys):
    import socket

    from tasks.settings import get_settings

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NCBI_RETRAIN_AIRFLOW_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NCBI_RETRAIN_AIRFLOW_PASSWORD", "x")
    get_settings.cache_clear()
    assert cli(["approve", "ner", "--run", RUN, "--reject", "--reason", "no"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: Airflow at http://127.0.0.1:{port} is unreachable (connection refused): start it "
        "(`make up`) or set NCBI_RETRAIN_AIRFLOW_URL"
    )
    get_settings.cache_clear()


def test_approve_refuses_an_empty_reason(monkeypatch, capsys):
    monkeypatch.setenv("NCBI_RETRAIN_AIRFLOW_PASSWORD", "x")
    assert cli(["approve", "classifier", "--run", RUN, "--reason", "  "]) == 2
    assert "--reason is empty" in capsys.readouterr().err
