"""Temporary git + DVC repositories and DVC cache/remote helpers (shared by the versioning, materialise and
fault tests; imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cache_object(root: Path, md5: str) -> Path:
    """Where DVC 3 keeps the object with this md5, under a cache or remote directory."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def corrupt_keeping_size_and_mtime(path: Path) -> None:
    """Flip the first byte in place, as bit rot does: DVC's own size/mtime state cannot notice it."""
    st = path.stat()
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x20
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def init_repo(repo: Path) -> Path:
    """`git init` + `dvc init` with `/data` ignored by git, committed."""
    from dvc.repo import Repo

    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.org")
    git(repo, "config", "user.name", "test")
    git(repo, "config", "commit.gpgsign", "false")
    (repo / ".gitignore").write_text("/data\n")
    Repo.init(str(repo)).close()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def write_small_data(data: Path, variant: str) -> None:
    """A small data folder in the project's layout; `variant` changes one file's content."""
    (data / "tc3").mkdir(parents=True, exist_ok=True)
    (data / "ner3").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (data / "tc3" / f"{split}.tsv").write_text(f"an abstract about {split}\t{len(split) % 3}\n")
        (data / "ner3" / f"text_{split}.txt").write_text(f"a {split} sentence\n")
        (data / "ner3" / f"labels_{split}.txt").write_text("O O O\n")
    (data / "MANIFEST.json").write_text(f'{{"variant": "{variant}"}}\n')


@dataclass
class TwoVersions:
    """A git + DVC repository with two committed data versions, both pushed to `remote`."""

    repo: Path
    remote: Path
    v1: str  # md5 in data.dvc at HEAD~1
    v2: str  # md5 in data.dvc at HEAD (also what data/ holds)


@pytest.fixture(name="two_versions")
def two_versions_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoVersions]:
    """Two data versions (commits `data v1`, `data v2`) published to a local remote outside the repo.

    Import it into a test module to use it (`from dvc_helpers import two_versions_fixture  # noqa: F401`).
    """
    from tasks.settings import get_settings
    from tasks.versioning import publish

    remote = tmp_path / "remote"
    monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(remote))
    monkeypatch.delenv("NCBI_RETRAIN_DVC_REMOTE", raising=False)
    get_settings.cache_clear()
    repo = init_repo(tmp_path / "repo")
    versions = []
    for variant in ("v1", "v2"):
        write_small_data(repo / "data", variant)
        versions.append(publish(repo, None))
        git(repo, "add", "data.dvc")
        git(repo, "commit", "-qm", f"data {variant}")
    yield TwoVersions(repo, remote, *versions)
    get_settings.cache_clear()


def checkout_state(repo: Path) -> tuple[str, bytes, dict[str, bytes]]:
    """What a run must never change: `git status`, data.dvc's bytes, data/'s files and bytes."""
    return git(repo, "status", "--porcelain"), (repo / "data.dvc").read_bytes(), tree_bytes(repo / "data")
