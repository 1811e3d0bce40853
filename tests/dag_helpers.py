"""A throwaway project for DAG runs (shared by tests/dags and tests/integration): a git + DVC
repository whose `data/` is a small valid slice of the real corpus, published to a local remote."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = {"train": 25, "dev": 6, "test": 8}  # abstracts per class and split
SENTENCES = {"train": 160, "dev": 40, "test": 40}  # NER sentences per split


def small_slice(
    src: Path, dst: Path, per_class: dict[str, int] = PER_CLASS, sentences: dict[str, int] = SENTENCES
) -> Path:
    """A valid data dir: the first N abstracts of each class per split and the first M sentences."""
    (dst / "tc3").mkdir(parents=True)
    (dst / "ner3").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        rows = (src / "tc3" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        ids_file = src / "tc3" / f"{split}.ids"
        ids = ids_file.read_text(encoding="utf-8").splitlines() if ids_file.exists() else None
        taken: dict[str, int] = defaultdict(int)
        keep = []
        for i, row in enumerate(rows):
            label = row.rsplit("\t", 1)[1]
            if taken[label] < per_class[split]:
                taken[label] += 1
                keep.append(i)
        (dst / "tc3" / f"{split}.tsv").write_text("".join(rows[i] + "\n" for i in keep), encoding="utf-8")
        if ids is not None:
            (dst / "tc3" / f"{split}.ids").write_text("".join(ids[i] + "\n" for i in keep), encoding="utf-8")
        for kind in ("text", "labels"):
            lines = (src / "ner3" / f"{kind}_{split}.txt").read_text(encoding="utf-8").splitlines()
            (dst / "ner3" / f"{kind}_{split}.txt").write_text(
                "".join(line + "\n" for line in lines[: sentences[split]]), encoding="utf-8"
            )
    (dst / "MANIFEST.json").write_text(
        json.dumps({"note": "test slice of the NCBI disease corpus import", "sources": {}}, indent=2) + "\n"
    )
    return dst


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def make_project(imported: Path, repo: Path) -> None:
    """git init + dvc init + the data slice in `repo/data` (publish it with the settings pointing here)."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    subprocess.run([str(ROOT / ".venv" / "bin" / "dvc"), "init", "-q"], cwd=repo, check=True)
    # As in this repository: run folders and a local MLflow store are never part of the checkout.
    (repo / ".gitignore").write_text("/runs/\n/mlruns/\n")
    small_slice(imported, repo / "data")


def commit_data(repo: Path, message: str) -> None:
    git(repo, "add", "data.dvc", ".gitignore", ".dvc")
    git(repo, "commit", "-q", "-m", message)
