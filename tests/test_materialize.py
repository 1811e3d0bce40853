"""Per-run immutable data: `materialize` puts the data version of a git revision into its own read-only
folder, from the DVC cache or remote, and never touches the checkout (data.dvc, data/, git status)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_helpers import (
    TwoVersions,
    cache_object,
    checkout_state,
    git,
    md5_of,
    tree_bytes,
    two_versions_fixture,  # noqa: F401  (a fixture)
    write_small_data,
)

from tasks.cli import run
from tasks.errors import UsageError
from tasks.versioning import discard, materialize

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    """`ncbi-retrain ARGS` in a fresh process of this environment (its stdout/stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tasks.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def expected_tree(tmp_path: Path, variant: str) -> dict[str, bytes]:
    write_small_data(tmp_path / f"expected-{variant}", variant)
    return tree_bytes(tmp_path / f"expected-{variant}")


def test_two_revisions_at_once_into_two_folders_leave_the_checkout_alone(
    two_versions: TwoVersions, tmp_path: Path
) -> None:
    repo = two_versions.repo
    shutil.rmtree(repo / ".dvc" / "cache")  # everything comes from the remote
    before = checkout_state(repo)
    runs = tmp_path / "runs"
    procs = {}
    for rev, name in (("HEAD~1", "a"), ("HEAD", "b")):
        args = ["data", "materialize", "--repo", str(repo), "--rev", rev, "--out", str(runs / name), "--json"]
        procs[rev] = cli(*args, cwd=tmp_path)
    results = {}
    for rev, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results[rev] = json.loads(out)
    assert results["HEAD~1"]["data_version"] == two_versions.v1
    assert results["HEAD"]["data_version"] == two_versions.v2
    assert results["HEAD"]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert tree_bytes(runs / "a") == expected_tree(tmp_path, "v1")
    assert tree_bytes(runs / "b") == expected_tree(tmp_path, "v2")
    assert checkout_state(repo) == before  # git status, data.dvc and data/ byte for byte
    assert sorted(p.name for p in runs.iterdir()) == ["a", "b"]  # no staging folder left behind


def test_files_are_hard_links_to_the_cache_and_read_only(two_versions: TwoVersions, tmp_path: Path) -> None:
    m = materialize(two_versions.repo, None, tmp_path / "run" / "data")
    dest = Path(m.path)
    assert (m.data_version, m.files, m.linked, m.reused) == (two_versions.v2, 10, 10, False)
    cache = two_versions.repo / ".dvc" / "cache"
    for path in (p for p in dest.rglob("*") if p.is_file()):
        obj = cache_object(cache, md5_of(path))
        assert path.stat().st_ino == obj.stat().st_ino  # a link, not a copy
        assert path.stat().st_mode & 0o777 == 0o444
    for folder in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        assert folder.stat().st_mode & 0o777 == 0o555

    again = materialize(two_versions.repo, "HEAD", dest)  # a retried task: the same version is reused
    assert (again.reused, again.linked, again.data_version) == (True, 10, two_versions.v2)
    with pytest.raises(UsageError, match="exists and does not hold data version"):
        materialize(two_versions.repo, "HEAD~1", dest)
    copied = materialize(two_versions.repo, "HEAD~1", tmp_path / "copied", link=False)
    assert copied.linked == 0 and tree_bytes(tmp_path / "copied") == expected_tree(tmp_path, "v1")
    discard(dest)
    assert not dest.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root and runuser")
def test_another_user_can_neither_write_nor_chmod(two_versions: TwoVersions, tmp_path: Path) -> None:
    base = tmp_path / "shared"
    base.mkdir()
    base.chmod(0o755)
    tmp_path.chmod(0o755)
    dest = Path(materialize(two_versions.repo, None, base / "data").path)
    target = dest / "tc3" / "train.tsv"

    def as_nobody(script: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "nobody", "--", "sh", "-c", script], capture_output=True, text=True, check=False
        )

    for script in (f"echo x >> {target}", f"chmod u+w {target}", f"touch {dest}/tc3/new.tsv"):
        proc = as_nobody(script)
        assert proc.returncode != 0, script
        assert "Permission denied" in proc.stderr or "Operation not permitted" in proc.stderr
    assert tree_bytes(dest) == expected_tree(tmp_path, "v2")


def test_an_owner_writing_through_a_link_is_caught_at_the_next_materialise(
    two_versions: TwoVersions, tmp_path: Path
) -> None:
    """The documented limit of hard links: the owner can chmod u+w and write, which changes the cache
    object too; the next materialise finds the object corrupt and fetches it again (DVC notices the new
    mtime; bit rot that keeps size and mtime is caught by our md5 check, tests/test_versioning.py)."""
    first = Path(materialize(two_versions.repo, None, tmp_path / "first").path)
    target = first / "tc3" / "dev.tsv"
    obj = cache_object(two_versions.repo / ".dvc" / "cache", md5_of(target))
    target.chmod(0o644)  # POSIX lets the owner do this
    target.write_text("edited\n")
    assert obj.read_text() == "edited\n"  # one inode: the cache object changed with it
    second = Path(materialize(two_versions.repo, None, tmp_path / "second").path)
    assert tree_bytes(second) == expected_tree(tmp_path, "v2")
    assert md5_of(obj) == obj.parent.name + obj.name  # the cache is healthy again
    with pytest.raises(UsageError, match="does not hold data version"):  # the edited folder is not reused
        materialize(two_versions.repo, None, first)


def test_other_filesystem_gets_verified_copies(two_versions: TwoVersions, tmp_path: Path) -> None:
    mnt = tmp_path / "other-fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        m = materialize(two_versions.repo, "HEAD~1", mnt / "data")
        assert (m.files, m.linked) == (10, 0)
        assert tree_bytes(mnt / "data") == expected_tree(tmp_path, "v1")
        assert all(p.stat().st_mode & 0o777 == 0o444 for p in (mnt / "data").rglob("*") if p.is_file())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_bad_revisions_and_destinations_are_one_sentence(
    two_versions: TwoVersions, tmp_path: Path, capsys
) -> None:
    repo = two_versions.repo
    before = checkout_state(repo)
    out = tmp_path / "out"
    cases = [
        (["--rev", "no-such-rev"], "git revision 'no-such-rev' does not exist"),
        (["--rev", "HEAD~2"], "git has no data.dvc at revision 'HEAD~2'"),  # the commit before any data
    ]
    for extra, message in cases:
        assert run(["data", "materialize", "--repo", str(repo), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert not out.exists()
    assert run(["data", "materialize", "--repo", str(repo), "--out", str(repo / "data" / "x")]) == 2
    assert "must not be, contain or lie inside the checkout's" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    assert run(["data", "materialize", "--repo", str(plain), "--out", str(out)]) == 2
    assert "not a git repository" in capsys.readouterr().err
    assert checkout_state(repo) == before and not out.exists()
