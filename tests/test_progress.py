"""Progress a person can see (tasks/training/progress.py, no torch): the trainer's reporter as a bar on a
terminal and as plain lines otherwise, its progress.json, and the live table `make demo` shows while the
DAG runs (read from the run folder's progress files)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.training.progress import Reporter, read_snapshot, watch


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(reporter: Reporter) -> None:
    reporter.stage("prepare", "5424 training items")
    reporter.stage("train", "2 epochs")
    reporter.start_training(epochs=2, steps=80)
    for step in range(1, 81):
        reporter.step(1 + (step - 1) // 40, step, loss=0.5)
        if step % 40 == 0:
            reporter.epoch_end(step // 40, 0.7 + step / 1000, step // 40, 0.7 + step / 1000, 0.3, 12.0, 0.4)
    reporter.stage("save")
    reporter.finish(True)


def test_plain_lines_when_not_a_terminal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    caplog.set_level(logging.INFO, logger="ncbi_retrain.train")
    drive(Reporter("ner", "entity_f1", file=tmp_path / "progress.json", stream=stream, lines=8))
    assert stream.getvalue() == ""  # no bar, no escape codes: everything goes through logging
    lines = [r.getMessage() for r in caplog.records]
    steps = [line for line in lines if " step " in line]
    assert 8 <= len(steps) <= 10  # about `lines` step lines per run, not one per step
    assert steps[0].startswith("ner epoch 1/2 step 10/80 loss 0.5000 elapsed") and "ETA" in steps[0]
    assert any("ner epoch 2/2 done: train_loss 0.3000 dev entity_f1 0.7800 (best 0.7800 at epoch 2" in m
               for m in lines)  # fmt: skip
    assert "ner: preparing (data, encoder, tokenisation): 5424 training items" in lines
    assert lines[-1] == "ner: done"


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_a_bar_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    stream = Terminal()
    reporter = Reporter("ner", "entity_f1", stream=stream)
    assert reporter.bar
    drive(reporter)
    out = plain(stream.getvalue())
    assert "\x1b[" in stream.getvalue()
    assert "━" in out  # rich's bar
    assert "ner epoch 2/2" in out and "80/80" in out and "ETA" in out
    assert "dev entity_f1 0.7800 (best 0.7800 @2)" in out


def test_progress_json_follows_the_job(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    reporter = Reporter("classifier", "macro_f1", file=path, stream=io.StringIO())
    assert read_snapshot(path)["stage"] == "prepare"
    reporter.stage("train")
    reporter.start_training(epochs=4, steps=148, done_steps=74, resumed_from=2)
    snap = read_snapshot(path)
    where = (snap["stage"], snap["epoch"], snap["epochs"], snap["step"], snap["steps"])
    assert where == ("train", 3, 4, 74, 148)
    assert snap["resumed_from"] == 2 and snap["pid"] == os.getpid()
    reporter.epoch_end(3, 0.9, 3, 0.9, 0.2, 30.0, 1.0)
    assert read_snapshot(path)["dev"] == 0.9
    reporter.finish(False, "RuntimeError: boom")
    snap = read_snapshot(path)
    assert snap["stage"] == "failed" and snap["detail"] == "RuntimeError: boom"
    assert set(snap["timings"]) == {"prepare", "train"}


def write_progress(run: Path, model: str, **fields) -> None:
    folder = run / model / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    snap = {"model": model, "stage": "train", "detail": "", "epoch": 2, "epochs": 5, "step": 300,
            "steps": 850, "eta_s": 250.0, "metric": "entity_f1", "dev": 0.8, "best_epoch": 1, "best": 0.81,
            "resumed_from": None, "timings": {}, "pid": 1, "updated": time.time(), **fields}  # fmt: skip
    (folder / "progress.json").write_text(json.dumps(snap))


def test_demo_watch_prints_each_models_progress_until_the_dag_ends(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    since = time.time() - 1
    run = runs / "manual__2026-12-02T10_00_00_00_00"
    write_progress(run, "classifier", stage="done", epoch=4, epochs=4, step=148, steps=148, eta_s=0.0,
                   metric="macro_f1", dev=0.93, best=0.93, best_epoch=4)  # fmt: skip
    (run / "classifier" / "decision.json").write_text(json.dumps({"gate": "passed"}))
    write_progress(run, "ner", resumed_from=1)
    dag = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])  # stands in for airflow
    out = io.StringIO()
    assert watch(runs, since, dag.pid, stream=out) == run
    assert dag.wait() == 0
    text = out.getvalue()
    assert "classifier | done | 4/4 | 148/148 | macro_f1 0.9300 (best 0.9300 @4) | passed" in text
    ner = "ner | training (resumed after epoch 1) | 2/5 | 300/850 | 4m10s | entity_f1 0.8000 (best 0.8100 @1)"
    assert ner in text


def test_demo_watch_renders_a_live_table_on_a_terminal(tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    write_progress(runs / "r1", "ner")
    monkeypatch.setenv("COLUMNS", "160")
    out = Terminal()
    assert watch(runs, time.time() - 5, pid=None, stream=out) == runs / "r1"  # no pid: one frame
    assert "\x1b[" in out.getvalue()
    text = plain(out.getvalue())
    assert "last dev score" in text and "waiting" in text  # the classifier has no progress file yet
