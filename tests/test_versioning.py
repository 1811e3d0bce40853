"""DVC versioning on a temporary git + DVC repository: local and S3 (moto on 127.0.0.1) round trips, pull of
an older revision, a fresh clone, and corrupt cache / remote / workspace copies."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvc_helpers import cache_object, corrupt_keeping_size_and_mtime, git, md5_of, tree_bytes

from tasks.cli import run
from tasks.errors import DataError
from tasks.settings import get_settings
from tasks.versioning import data_version, publish, pull

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def remote_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The settings' default remote pointed at a temp directory (outside the repo)."""
    remote = tmp_path / "remote"
    monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", str(remote))
    monkeypatch.delenv("NCBI_RETRAIN_DVC_REMOTE", raising=False)
    get_settings.cache_clear()
    yield remote
    get_settings.cache_clear()


@pytest.fixture
def repo(tmp_path: Path, imported_data: Path, remote_dir: Path) -> Path:
    """A fresh git + DVC repository holding a copy of the imported corpus in data/."""
    from dvc.repo import Repo

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.org")
    git(repo, "config", "user.name", "test")
    git(repo, "config", "commit.gpgsign", "false")
    (repo / ".gitignore").write_text("/data\n")
    Repo.init(str(repo)).close()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    shutil.copytree(imported_data, repo / "data")
    return repo


def commit_data_dvc(repo: Path, message: str) -> None:
    git(repo, "add", "data.dvc")
    git(repo, "commit", "-qm", message)


def test_local_round_trip_and_fresh_clone(
    repo: Path, imported_data: Path, remote_dir: Path, tmp_path: Path
) -> None:
    version = publish(repo, None)
    assert version == data_version(repo) and version.endswith(".dir")
    # the committed data.dvc on main is exactly the import of the shared release
    assert version == data_version(ROOT)
    assert cache_object(remote_dir, version).is_file()
    assert str(remote_dir) in (repo / ".dvc" / "config.local").read_text()
    assert str(remote_dir) not in (repo / ".dvc" / "config").read_text()  # machine paths stay out of git
    commit_data_dvc(repo, "data v1")

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert pull(repo) == version
    assert tree_bytes(repo / "data") == tree_bytes(imported_data)

    clone = tmp_path / "clone"  # data.dvc committed, data/ absent, cache empty, no config.local
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "data").exists() and not (clone / ".dvc" / "config.local").exists()
    assert pull(clone) == version
    assert tree_bytes(clone / "data") == tree_bytes(imported_data)


def test_pull_rev_restores_an_older_version(
    repo: Path, imported_data: Path, remote_dir: Path, capsys
) -> None:
    assert run(["data", "publish", "--repo", str(repo), "--json"]) == 0
    v1 = json.loads(capsys.readouterr().out)["data_version"]  # stdout is the JSON object only
    commit_data_dvc(repo, "data v1")
    dev = repo / "data" / "tc3" / "dev.tsv"
    dev.write_bytes(b"".join(dev.read_bytes().splitlines(keepends=True)[:-1]))  # a changed release
    v2 = publish(repo, None)
    commit_data_dvc(repo, "data v2")
    assert v1 != v2

    assert run(["data", "pull", "--rev", "HEAD~1", "--repo", str(repo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"data_version": v1, "rev": "HEAD~1"}
    assert tree_bytes(repo / "data") == tree_bytes(imported_data)
    assert data_version(repo) == v1  # data.dvc describes what is in data/

    assert pull(repo, "HEAD") == v2
    assert dev.read_bytes() == b"".join(
        (imported_data / "tc3" / "dev.tsv").read_bytes().splitlines(True)[:-1]
    )
    assert run(["data", "version", "--repo", str(repo)]) == 0
    assert capsys.readouterr().out.strip() == v2

    shutil.rmtree(remote_dir)  # a failed pull --rev leaves data.dvc as it was
    shutil.rmtree(repo / ".dvc" / "cache")
    assert run(["data", "pull", "--rev", "HEAD~1", "--repo", str(repo)]) == 2
    assert data_version(repo) == v2 and not git(repo, "status", "--porcelain")


def test_corrupt_local_cache_is_detected_and_fetched_again(
    repo: Path, imported_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(repo, None)
    shutil.rmtree(repo / "data")
    obj = cache_object(repo / ".dvc" / "cache", md5_of(imported_data / "tc3" / "train.tsv"))
    corrupt_keeping_size_and_mtime(obj)
    pull(repo)
    assert tree_bytes(repo / "data") == tree_bytes(imported_data)
    assert "data/tc3/train.tsv: cache object" in caplog.text and "corrupt" in caplog.text
    assert md5_of(obj) == obj.parent.name + obj.name  # the cache is healthy again


def test_corrupt_remote_is_refused_naming_the_file(
    repo: Path, imported_data: Path, remote_dir: Path, capsys
) -> None:
    publish(repo, None)
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    corrupt_keeping_size_and_mtime(cache_object(remote_dir, md5_of(imported_data / "tc3" / "train.tsv")))
    assert run(["data", "pull", "--repo", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "error: data/tc3/train.tsv: the copy on DVC remote 'local'" in err and "is corrupt" in err
    assert not (repo / "data" / "tc3" / "train.tsv").exists()  # nothing corrupt was checked out


def test_pull_from_a_remote_without_the_version_is_refused(repo: Path, remote_dir: Path, capsys) -> None:
    publish(repo, None)
    for path in (repo / "data", repo / ".dvc" / "cache", remote_dir):
        shutil.rmtree(path)
    assert run(["data", "pull", "--repo", str(repo)]) == 2
    assert "does not hold data version" in capsys.readouterr().err


def test_edited_workspace_file_with_old_mtime_is_restored(
    repo: Path, imported_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(repo, None)
    corrupt_keeping_size_and_mtime(repo / "data" / "ner3" / "labels_dev.txt")  # DVC's state still trusts it
    (repo / "data" / "extra.txt").write_text("not in this version\n")
    pull(repo)
    assert tree_bytes(repo / "data") == tree_bytes(imported_data)
    assert "data/ner3/labels_dev.txt: differs from version" in caplog.text


def test_publish_and_pull_refuse_bad_setups(repo: Path, tmp_path: Path, capsys) -> None:
    assert run(["data", "publish", "--remote", "nowhere", "--repo", str(repo)]) == 2
    assert "no DVC remote named 'nowhere'" in capsys.readouterr().err
    assert run(["data", "pull", "--repo", str(repo)]) == 2  # nothing published yet
    assert "data.dvc: not found" in capsys.readouterr().err
    assert run(["data", "pull", "--rev", "no-such-rev", "--repo", str(repo)]) == 2
    assert "no data.dvc at revision 'no-such-rev'" in capsys.readouterr().err
    plain = tmp_path / "plain"
    (plain / "data").mkdir(parents=True)
    (plain / "data" / "x").write_text("x")
    assert run(["data", "publish", "--repo", str(plain)]) == 2
    assert "not a DVC repository" in capsys.readouterr().err
    shutil.rmtree(repo / "data")
    assert run(["data", "publish", "--repo", str(repo)]) == 2
    assert "missing or empty" in capsys.readouterr().err


def test_data_version_reads_yaml_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NCBI_RETRAIN_DATA_VERSION", raising=False)
    assert data_version(tmp_path) is None
    monkeypatch.setenv("NCBI_RETRAIN_DATA_VERSION", "abc.dir")  # a container without the repository
    assert data_version(tmp_path) == "abc.dir"
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123.dir\n  path: data\n")
    assert data_version(tmp_path) == "0123.dir"
    (tmp_path / "data.dvc").write_text("outs: []\n")
    with pytest.raises(DataError, match=r"data\.dvc:1: not a DVC file"):
        data_version(tmp_path)
    # the training env has no DVC: reading the version must not import it
    code = (
        "import sys, tasks.versioning as v; v.data_version(); assert 'dvc' not in sys.modules, 'dvc imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- S3, served by moto on 127.0.0.1 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port for this module; stopped by its PID."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip("moto[server] is not installed in this environment")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # readiness, not timing: poll until it answers (or died)
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited {proc.returncode}: {log_path.read_text()}")
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_endpoint(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint, with throwaway credentials in the environment only."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_url


@pytest.mark.parametrize("configured_by", ["dvc-config", "settings"])
def test_s3_round_trip(
    repo: Path, imported_data: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, configured_by: str
) -> None:
    import boto3
    from dvc.repo import Repo

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"ncbi-retrain-{configured_by}"
    s3.create_bucket(Bucket=bucket)
    if configured_by == "dvc-config":  # as documented: the S3 remote in .dvc/config, the endpoint per machine
        with Repo(str(repo)) as dvc:
            with dvc.config.edit("repo") as conf:
                conf["remote"]["s3"] = {"url": f"s3://{bucket}/dvc"}
                conf["core"]["remote"] = "s3"
            with dvc.config.edit("local") as conf:
                conf["remote"]["s3"] = {"endpointurl": s3_endpoint}
    else:  # no DVC config at all: Settings name the remote, boto's own variable names the endpoint
        monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE", "s3")
        monkeypatch.setenv("NCBI_RETRAIN_DVC_REMOTE_URL", f"s3://{bucket}/dvc")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        get_settings.cache_clear()
    assert "testing" not in (repo / ".dvc" / "config").read_text()

    version = publish(repo, None)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    md5 = version.removesuffix(".dir")
    assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}.dir" in keys
    assert len(keys) == 1 + len(tree_bytes(imported_data))

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert pull(repo, remote="s3") == version
    assert tree_bytes(repo / "data") == tree_bytes(imported_data)
