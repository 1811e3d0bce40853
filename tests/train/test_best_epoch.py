"""Best-epoch selection: a run whose last epoch scores worse on dev than an earlier one saves, tests and
logs the earlier epoch's weights (so a longer schedule cannot make the model worse), proved with the dev
history and by re-scoring the logged model on dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import run_cli

# A schedule that ends badly on purpose: the LR rises over the whole run (warmup 100%) while a heavy
# decoupled weight decay shrinks the weights faster the higher it gets, so the last epoch falls back.
# Seeded: dev entity F1 0.30, 0.33, 0.27 on this machine.
SPOILED_END = [
    "trainer.max_epochs=3",
    "model.optim.lr=0.003",
    "model.optim.sched.warmup_ratio=1.0",
    "model.optim.weight_decay=3.0",
]


def test_a_worse_last_epoch_never_reaches_the_model(
    train_python: Path, imported_data: Path, mlflow_env: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["train", "ner", "--data", str(imported_data), "--out", str(out), "--profile", "tiny", "--json"]
    proc = run_cli(train_python, [*args, *SPOILED_END], mlflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    hist = json.loads((out / "dev_history.json").read_text())
    dev = [row["val_entity_f1"] for row in hist["history"]]
    assert len(dev) == 3 and dev[-1] < max(dev) - 0.01, f"precondition: the last epoch must be worse: {dev}"
    best = dev.index(max(dev)) + 1
    assert hist["best_epoch"] == result["best_epoch"] == best < 3
    assert f"best dev epoch {best} of 3" in proc.stderr

    # What was logged (and would be registered) is the best epoch's model: re-scored on dev, it gives
    # the best epoch's dev value, not the last epoch's.
    scored = tmp_path / "dev.json"
    uri = result["model_uri"]
    rescore = ["evaluate", "ner", "--model", uri, "--data", str(imported_data), "--split", "dev"]
    proc = run_cli(train_python, [*rescore, "--out", str(scored)], mlflow_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(scored.read_text())["metrics"]["entity_f1"] == pytest.approx(dev[best - 1], abs=1e-12)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.data.metrics["best_epoch"] == best
    assert run.data.metrics["best_val_entity_f1"] == pytest.approx(max(dev))
    curve = sorted(client.get_metric_history(result["run_id"], "val_entity_f1"), key=lambda m: m.step)
    assert [m.value for m in curve] == pytest.approx(dev)
