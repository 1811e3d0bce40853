"""Bad input at the training env's front doors (train / evaluate / predict), in this env's own process:
one sentence on stderr naming what is wrong, a non-zero exit, nothing written (not even a staging folder).

The rows and their checks are `tests/test_front_door.py`'s; they run here, through `tasks.cli.run` as the
orchestration rows do, because a `.venv-train` CLI process per row paid NeMo's import (~20 s) ten times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import empty_sqlite_store_fixture, use_store  # noqa: F401  (a fixture)
from test_front_door import Case, check, fill

from tasks.cli import run

TRAINING = {
    "train-unknown-model": Case(("train", "regressor", "--data", "{data}", "--out", "{out}"), "regressor", 2),
    "train-missing-data": Case(
        ("train", "classifier", "--data", "{tmp}/nope", "--out", "{out}"), "{tmp}/nope", 2
    ),
    "train-negative-epochs": Case(
        ("train", "ner", "--data", "{data}", "--out", "{out}", "--profile", "tiny", "trainer.max_epochs=-1"),
        "trainer.max_epochs",
        2,
    ),
    "train-unknown-override-key": Case(
        (
            "train",
            "classifier",
            "--data",
            "{data}",
            "--out",
            "{out}",
            "--profile",
            "tiny",
            "model.optim.lrr=1",
        ),
        "model.optim.lrr",
        2,
    ),
    "evaluate-unknown-alias": Case(
        (
            "evaluate",
            "classifier",
            "--model",
            "models:/ncbi-disease-classifier@nope",
            "--data",
            "{data}",
            "--out",
            "{out}",
        ),
        "models:/ncbi-disease-classifier@nope",
        2,
    ),
    "evaluate-missing-model-file": Case(
        ("evaluate", "ner", "--model", "{tmp}/none.nemo", "--data", "{data}", "--out", "{out}"),
        "none.nemo",
        2,
    ),
    "evaluate-unknown-split": Case(
        (
            "evaluate",
            "ner",
            "--model",
            "{tmp}/none.nemo",
            "--data",
            "{data}",
            "--out",
            "{out}",
            "--split",
            "val",
        ),
        "'val'",
        2,
    ),
    "predict-unknown-version": Case(
        ("predict", "ner", "--model", "models:/ncbi-disease-ner/7", "a sentence"),
        "models:/ncbi-disease-ner/7",
        2,
    ),
    "predict-missing-model-file": Case(
        ("predict", "classifier", "--model", "{tmp}/none.nemo", "text"), "none.nemo", 2
    ),
}


@pytest.mark.parametrize("row", list(TRAINING))
def test_training_commands_refuse_bad_input(
    row: str, data_slice: Path, empty_sqlite_store: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    case = TRAINING[row]
    db = tmp_path.parent / f"{tmp_path.name}-mlflow.db"  # outside the row's folder, which must stay empty
    db.write_bytes(empty_sqlite_store.read_bytes())
    use_store(f"sqlite:///{db}", monkeypatch)
    monkeypatch.chdir(tmp_path)
    argv, names, _ = fill(case, tmp_path, {"data": str(data_slice)})
    capsys.readouterr()
    code = run(argv)
    check(case, code, capsys.readouterr().err, names)
    assert not list(tmp_path.iterdir())  # nothing written (not even a staging folder)
