"""Pipeline step helpers that need no training: the Params form, failure summaries and the webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tasks.errors import UsageError
from tasks.pipeline import post_json, record_task_failure, report_run_failure, run_dir
from tasks.vocab import RunParams


@pytest.mark.parametrize(
    ("params", "overrides"),
    [
        ({}, []),
        ({"epochs": None, "learning_rate": None, "encoder": "", "max_seq_length": None}, []),
        ({"epochs": 4}, ["trainer.max_epochs=4"]),
        ({"learning_rate": 5e-5}, ["model.optim.lr=5e-05"]),
        (
            {"encoder": "minilm", "max_seq_length": 64},
            ["model.language_model.pretrained_model_name=minilm", "model.dataset.max_seq_length=64"],
        ),
    ],
)
def test_params_become_training_overrides(params, overrides):
    assert RunParams.from_params(params).overrides() == overrides


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"models": "both-ish"}, "param models is 'both-ish'"),
        ({"profile": "huge"}, "param profile is 'huge'"),
        ({"promote": "maybe"}, "param promote is 'maybe'"),
        ({"epochs": 0}, "param epochs is 0"),
        ({"learning_rate": 3}, "param learning_rate is 3"),
    ],
)
def test_bad_params_are_usage_errors(params, message):
    with pytest.raises(UsageError, match=message):
        RunParams.from_params(params)


def test_model_selection():
    both, ner = RunParams.from_params({}), RunParams.from_params({"models": "ner"})
    assert both.selected("classifier") and both.selected("ner")
    assert ner.selected("ner") and not ner.selected("classifier")


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    from tasks.settings import get_settings

    monkeypatch.setenv("NCBI_RETRAIN_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("NCBI_RETRAIN_WEBHOOK_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_failure_summary_collects_task_errors_and_posts_once(project_dir, monkeypatch):
    got: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from tasks.settings import get_settings

        monkeypatch.setenv("NCBI_RETRAIN_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/")
        get_settings.cache_clear()
        record_task_failure("ncbi_retrain", "manual__1", "ner.train", 3, "JobFailed: train-ner exited 137")
        path = report_run_failure("ncbi_retrain", "manual__1", "task_failure", "ner.train")
    finally:
        server.shutdown()
        server.server_close()
    assert path == run_dir("manual__1") / "failure.md"
    text = path.read_text()
    assert (
        "failed task: `ner.train`" in text and "`ner.train` (try 3): JobFailed: train-ner exited 137" in text
    )
    (doc,) = got
    assert doc["failed_task"] == "ner.train" and doc["error"] == "JobFailed: train-ner exited 137"
    assert json.loads((run_dir("manual__1") / "failure.json").read_text()) == doc


def test_a_webhook_that_is_down_is_logged_not_raised(caplog):
    assert post_json("http://127.0.0.1:9/nothing-listens-here", {"x": 1}, timeout_s=2) is False
    assert "webhook http://127.0.0.1:9/nothing-listens-here: post failed" in caplog.text
