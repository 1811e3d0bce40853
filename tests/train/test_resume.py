"""Crash-safe training: a run SIGKILLed mid-epoch resumes from its last complete checkpoint with the same
dev history and best epoch; a corrupt or cut-off last checkpoint falls back to the one before; progress
is a bar on a terminal and plain lines otherwise. Tiny profile on the full corpus (epochs of seconds)."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from train_helpers import ROOT, run_cli

EPOCHS = 4
KILL_IN_EPOCH = 3  # after two complete checkpoints


def train_args(data: Path, out: Path, ckpt: Path) -> list[str]:
    return [
        "train", "ner", "--data", str(data), "--out", str(out), "--profile", "tiny",
        "--checkpoints", str(ckpt), "--json", f"trainer.max_epochs={EPOCHS}",
    ]  # fmt: skip


def progress(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def dev_lines(stderr: str) -> dict[int, float]:
    """{epoch: dev entity F1} from the trainer's per-epoch lines."""
    found = re.findall(r"epoch (\d+)/\d+ done: .* dev entity_f1 ([0-9.]+)", stderr)
    return {int(e): float(v) for e, v in found}


@pytest.fixture(scope="module")
def killed(train_python: Path, imported_data: Path, mlflow_env: dict, tmp_path_factory) -> dict:
    """One run SIGKILLed a third into epoch 3, and two copies of what it left in its checkpoint folder."""
    base = tmp_path_factory.mktemp("killed")
    ckpt, log = base / "checkpoints", base / "try-1.log"
    cmd = [str(train_python), "-m", "tasks.cli", *train_args(imported_data, base / "try-1", ckpt)]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=mlflow_env, cwd=ROOT)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            p = progress(ckpt)
            if p.get("stage") == "train" and p.get("epoch", 0) >= KILL_IN_EPOCH and p.get("steps"):
                per_epoch = p["steps"] // p["epochs"]
                if p["step"] - (p["epoch"] - 1) * per_epoch >= per_epoch // 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.02)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert not (base / "try-1").exists()  # OUT is staged: a killed try leaves none
    left = sorted(p.name for p in ckpt.iterdir())
    assert left == [
        "epoch-001.ckpt", "epoch-001.ckpt.json", "epoch-002.ckpt", "epoch-002.ckpt.json", "progress.json"
    ], left  # fmt: skip
    copies = {}
    for name in ("resume", "corrupt", "partial"):
        copies[name] = base / f"checkpoints-{name}"
        shutil.copytree(ckpt, copies[name])
    return {"base": base, "copies": copies, "stderr": log.read_text()}


def test_killed_run_resumes_from_its_last_complete_checkpoint(
    killed: dict, train_python: Path, imported_data: Path, mlflow_env: dict
) -> None:
    ckpt, out = killed["copies"]["resume"], killed["base"] / "try-2"
    marker = json.loads((ckpt / "epoch-002.ckpt.json").read_text())
    proc = run_cli(train_python, train_args(imported_data, out, ckpt), mlflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from epoch 2 of {EPOCHS} (checkpoint {ckpt / 'epoch-002.ckpt'})" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["resumed_from_epoch"] == 2 and result["epochs"] == EPOCHS
    # The dev history continues the killed run's: its two epochs restored, two more trained.
    hist = json.loads((out / "dev_history.json").read_text())
    rows = hist["history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    before = dev_lines(killed["stderr"])
    assert {1, 2} <= set(before)
    assert [round(r["val_entity_f1"], 4) for r in rows[:2]] == [round(before[e], 4) for e in (1, 2)]
    after = dev_lines(proc.stderr)
    assert set(after) == {3, 4}  # epochs 1-2 were not trained again
    values = [r["val_entity_f1"] for r in rows]
    assert hist["best_epoch"] == result["best_epoch"] == values.index(max(values)) + 1
    # Only this process's epochs count for speed; the checkpoints are gone once the run is complete.
    assert [p.name for p in ckpt.iterdir()] == ["progress.json"]
    assert progress(ckpt)["stage"] == "done" and progress(ckpt)["resumed_from"] == 2
    # One MLflow run holds the model; it is linked to the killed try's run, and its curve is whole.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.data.tags["resumed_from_epoch"] == "2"
    assert run.data.tags["resumed_from_run_id"] == marker["run_id"] == run.data.tags["first_run_id"]
    assert marker["run_id"] != result["run_id"]
    curve = client.get_metric_history(result["run_id"], "val_entity_f1")
    assert sorted(m.step for m in curve) == [1, 2, 3, 4]
    # Plain progress lines when stderr is not a terminal (CI, Airflow logs): no escape codes.
    assert "\x1b[" not in proc.stderr and re.search(r"ner epoch 3/4 step \d+/\d+ .*ETA", proc.stderr)


def run_in_pty(cmd: list[str], env: dict) -> tuple[int, str]:
    """Run `cmd` with stderr on a pseudo-terminal (stdout a pipe); its exit code and terminal output."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=ROOT, timeout=600)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("damage", ["corrupt", "partial"])
def test_damaged_last_checkpoint_falls_back_to_the_one_before(
    killed: dict, train_python: Path, imported_data: Path, mlflow_env: dict, damage: str
) -> None:
    ckpt, out = killed["copies"][damage], killed["base"] / f"try-{damage}"
    last = ckpt / "epoch-002.ckpt"
    if damage == "corrupt":  # same size, flipped bytes: only the sha256 in the marker tells
        data = bytearray(last.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
        last.write_bytes(bytes(data))
        why = "does not match the sha256 in its marker (corrupt)"
    else:  # killed while writing: the marker is written only after the file
        (ckpt / "epoch-002.ckpt.json").unlink()
        last.write_bytes(last.read_bytes()[:1000])
        why = "has no completion marker"
    cmd = [str(train_python), "-m", "tasks.cli", *train_args(imported_data, out, ckpt)]
    if damage == "corrupt":  # also: on a terminal, a progress bar instead of log lines
        code, text = run_in_pty(cmd, {**mlflow_env, "COLUMNS": "160"})
        assert code == 0, text[-3000:]
        assert "\x1b[" in text and "━" in text and "ETA" in text  # rich's bar, with its ETA column
        assert re.search(r"ner epoch [34]/4", text) and "dev entity_f1" in text
    else:
        proc = run_cli(train_python, cmd[3:], mlflow_env)
        code, text = proc.returncode, proc.stderr
        assert code == 0, text[-3000:]
    flat = " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).split())  # no colours, no line wraps
    assert f"{last.name} {why}" in flat.replace(f"{ckpt}/", "") or why in flat
    assert f"resuming from epoch 1 of {EPOCHS}" in flat
    hist = json.loads((out / "dev_history.json").read_text())
    assert [r["epoch"] for r in hist["history"]] == [1, 2, 3, 4] and hist["resumed_from_epoch"] == 1
    assert round(hist["history"][0]["val_entity_f1"], 4) == round(dev_lines(killed["stderr"])[1], 4)
