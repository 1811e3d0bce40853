"""Clear errors (one sentence: file, line, field; exit code) for missing/malformed data and bad overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from train_helpers import run_cli

from tasks.errors import DataError, UsageError
from tasks.training.data import read_all


def _copy(data_slice: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data_slice, dst)
    return dst


def test_missing_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_all("ner", tmp_path / "nope")


def test_data_dir_without_the_task_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="has no tc3/ folder"):
        read_all("classifier", tmp_path)


def test_bad_label_names_file_line_and_field(data_slice: Path, tmp_path: Path) -> None:
    data = _copy(data_slice, tmp_path)
    path = data / "tc3" / "dev.tsv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\t7"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: field label is '7'"):
        read_all("classifier", data)


def test_tag_count_mismatch_names_file_and_line(data_slice: Path, tmp_path: Path) -> None:
    data = _copy(data_slice, tmp_path)
    path = data / "ner3" / "labels_test.txt"
    lines = path.read_text().splitlines()
    lines[4] = lines[4] + " O"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels_test\.txt:5: \d+ tags for \d+ tokens"):
        read_all("ner", data)


def test_unknown_tag(data_slice: Path, tmp_path: Path) -> None:
    data = _copy(data_slice, tmp_path)
    path = data / "ner3" / "labels_train.txt"
    lines = path.read_text().splitlines()
    lines[0] = "B-Disease" + lines[0][1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels_train\.txt:1: tag 'B-Disease'"):
        read_all("ner", data)


def test_cli_exit_codes_and_nothing_half_written(
    train_python: Path, data_slice: Path, mlflow_env: dict, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    bad = run_cli(
        train_python,
        [
            "train",
            "ner",
            "--data",
            str(data_slice),
            "--out",
            str(out),
            "--profile",
            "tiny",
            "model.optim.lrr=1",
        ],
        mlflow_env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: override 'model.optim.lrr=1': unknown config key 'model.optim.lrr'"
    )
    missing = run_cli(
        train_python, ["train", "ner", "--data", str(tmp_path / "none"), "--out", str(out)], mlflow_env
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    data = _copy(data_slice, tmp_path)
    (data / "ner3" / "labels_dev.txt").write_text("O\n")
    malformed = run_cli(train_python, ["train", "ner", "--data", str(data), "--out", str(out)], mlflow_env)
    assert malformed.returncode == 1 and "labels_dev.txt" in malformed.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
