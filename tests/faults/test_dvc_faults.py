"""DVC remote faults: an object missing on the remote, or corrupt there, while a run materialises its data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc_helpers import (
    TwoVersions,
    cache_object,
    checkout_state,
    corrupt_keeping_size_and_mtime,
    md5_of,
    tree_bytes,
    two_versions_fixture,  # noqa: F401  (a fixture)
)

from tasks.cli import run
from tasks.versioning import materialize


@pytest.mark.parametrize(
    ("fault", "exit_code", "says"), [("missing", 2, "does not hold"), ("corrupt", 1, "is corrupt")]
)
def test_remote_fault_stops_materialise_naming_the_file(
    fault: str, exit_code: int, says: str, two_versions: TwoVersions, tmp_path: Path, capsys
) -> None:
    """The first revision's MANIFEST.json (the one file that differs between the two versions) is lost or
    damaged on the remote and absent from the cache: materialising that revision stops naming the file,
    leaves no folder and no staging folder, the checkout is untouched, and the other revision is fine."""
    repo, runs = two_versions.repo, tmp_path / "runs"
    shutil.rmtree(repo / ".dvc" / "cache")
    manifest = tmp_path / "v1-manifest.json"
    manifest.write_text('{"variant": "v1"}\n')  # what data v1's MANIFEST.json holds
    obj = cache_object(two_versions.remote, md5_of(manifest))
    if fault == "missing":
        obj.unlink()
    else:
        corrupt_keeping_size_and_mtime(obj)
    before = checkout_state(repo)

    code = run(["data", "materialize", "--repo", str(repo), "--rev", "HEAD~1", "--out", str(runs / "old")])
    err = capsys.readouterr().err
    assert code == exit_code, err
    assert err.count("\n") == 1 and err.startswith("error: data/MANIFEST.json: ") and says in err, err
    assert "remote 'local'" in err and str(two_versions.remote) in err
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-written
    assert checkout_state(repo) == before

    new = materialize(repo, "HEAD", runs / "new")  # a run on the other revision is not affected
    assert new.data_version == two_versions.v2 and tree_bytes(runs / "new") == tree_bytes(repo / "data")
    assert checkout_state(repo) == before
