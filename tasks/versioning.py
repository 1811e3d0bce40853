"""Data versioning with DVC: `data/` is tracked by `data.dvc` at the repository root; its md5 = data version.

Remotes. The repository's DVC config decides when it names a remote (`.dvc/config` for a shared one, e.g.
S3, with credentials only in the environment or `.dvc/config.local`); otherwise the remote named by
`Settings.dvc_remote` (default `local`) is added to `.dvc/config.local` with `Settings.dvc_remote_url`
(default `~/.cache/ncbi-retrain/dvc-remote`, outside git) and made the default. An S3 remote, e.g.:

    dvc remote add -d s3 s3://BUCKET/ncbi-retrain            # committed in .dvc/config
    dvc remote modify --local s3 endpointurl https://...     # only for a non-AWS endpoint (MinIO, moto)
    export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...   # never in .dvc/config

or with no DVC config at all: `NCBI_RETRAIN_DVC_REMOTE=s3 NCBI_RETRAIN_DVC_REMOTE_URL=s3://BUCKET/path`
(plus `AWS_ENDPOINT_URL` for a non-AWS endpoint). Both are tested against moto on 127.0.0.1.

`data_version()` reads `data.dvc` with PyYAML only (the training env has no DVC); the DVC imports live inside
the other functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tasks.errors import DataError, ServiceError, UsageError
from tasks.files import atomic_write_bytes, atomic_write_text
from tasks.settings import get_settings

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)

DATA = "data"
DVC_FILE = "data.dvc"
MISSING = "missing"


def data_version(repo: Path | None = None) -> str | None:
    """The md5 recorded in `REPO/data.dvc` (e.g. `3f2a...e1.dir`), or `NCBI_RETRAIN_DATA_VERSION`, or None.

    Containers have no repository: the launcher passes the version in the environment instead.
    """
    path = Path(repo or Path.cwd()) / DVC_FILE
    if not path.is_file():
        return os.environ.get("NCBI_RETRAIN_DATA_VERSION") or None
    return _read_dvc_file(path.read_text(encoding="utf-8"), str(path))["md5"]


def _read_dvc_file(text: str, where: str) -> dict:
    try:
        doc = yaml.safe_load(text)
        out = doc["outs"][0]
        if not isinstance(out.get("md5"), str) or out.get("path") != DATA:
            raise TypeError
    except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{where}:1: not a DVC file tracking '{DATA}' (expected outs[0] with md5 and path)."
        ) from exc
    return out


def publish(repo: Path, remote: str | None = None) -> str:
    """`dvc add data` + `dvc push`; returns the data version (the md5 now in data.dvc).

    Raises:
        UsageError: REPO is not a DVC repository, `data/` is missing or empty, or the remote is unknown.
        ServiceError: the remote refused or could not be reached.
    """
    from dvc.exceptions import DvcException

    repo = Path(repo).resolve()
    data = repo / DATA
    if not data.is_dir() or not any(data.iterdir()):
        raise UsageError(f"{data}: missing or empty; run `ncbi-retrain data import --out {data}` first.")
    with _dvc(repo) as dvc:
        name = _remote(dvc, remote)
        try:
            dvc.add(str(data))
        except DvcException as exc:
            raise DataError(f"{data}: dvc add failed ({exc}).") from exc
        try:
            dvc.push(targets=[str(repo / DVC_FILE)], remote=name)
        except DvcException as exc:
            raise ServiceError(f"DVC remote {name!r} ({_url(dvc, name)}): push failed ({exc}).") from exc
    version = data_version(repo)
    assert version is not None  # dvc add has just written data.dvc
    return version


def pull(repo: Path, rev: str | None = None, remote: str | None = None) -> str:
    """Restore `data/` to the version in data.dvc (as of git revision REV if given); returns that version.

    With REV, `data.dvc` is first replaced by its content at REV (the DVC way: data.dvc then describes what
    is in data/). Every file is checked against the md5s recorded for the version, in the cache before it is
    checked out and in data/ after: a corrupt local cache object is dropped and fetched again once; a corrupt
    copy on the remote raises DataError naming the file. Local edits in data/ are overwritten. On failure
    data.dvc is put back as it was.
    """
    repo = Path(repo).resolve()
    dvc_file = repo / DVC_FILE
    before = dvc_file.read_bytes() if dvc_file.is_file() else None
    if rev is not None:
        _restore_dvc_file(repo, rev)
    try:
        return _pull(repo, remote)
    except BaseException:
        if rev is not None and before is not None:
            atomic_write_bytes(dvc_file, before)
        raise


def _pull(repo: Path, remote: str | None) -> str:
    from dvc.exceptions import DvcException

    dvc_file = repo / DVC_FILE
    if not dvc_file.is_file():
        raise UsageError(
            f"{dvc_file}: not found; publish a data version first (`ncbi-retrain data publish`)."
        )
    version = _read_dvc_file(dvc_file.read_text(encoding="utf-8"), str(dvc_file))["md5"]
    with _dvc(repo) as dvc:
        name = _remote(dvc, remote)

        def fetch() -> None:
            try:
                dvc.fetch(targets=[str(repo / DVC_FILE)], remote=name)
            except DvcException as exc:
                raise ServiceError(f"DVC remote {name!r} ({_url(dvc, name)}): fetch failed ({exc}).") from exc

        fetch()
        bad = _corrupt_cache_objects(dvc, version)
        if corrupt := [b for b in bad if b[2] != MISSING]:
            for relpath, path, _, _ in corrupt:
                log.warning("%s: cache object %s is corrupt; fetching it again", f"{DATA}/{relpath}", path)
                path.unlink()
            fetch()
            bad = _corrupt_cache_objects(dvc, version)
        if missing := [b for b in bad if b[2] == MISSING]:
            raise UsageError(
                f"{DATA}/{missing[0][0]}: DVC remote {name!r} ({_url(dvc, name)}) does not hold data "
                f"version {version} ({len(missing)} object(s) missing); publish it first (`data publish`)."
            )
        if bad:
            relpath, _, got, want = bad[0]
            raise DataError(
                f"{DATA}/{relpath}: the copy on DVC remote {name!r} ({_url(dvc, name)}) is corrupt: "
                f"md5 {got}, expected {want} ({len(bad)} corrupt object(s) in all)."
            )
        entries = _dir_entries(dvc, version)
        for attempt in range(2):
            try:
                dvc.checkout(targets=[str(repo / DVC_FILE)], force=True)
            except DvcException as exc:
                raise DataError(f"{repo / DATA}: dvc checkout failed ({exc}).") from exc
            bad_files = _corrupt_workspace_files(repo, entries)
            if not bad_files:
                break
            if attempt:  # pragma: no cover (the cache was just verified, so a second checkout should fix it)
                relpath, got, want = bad_files[0]
                raise DataError(f"{DATA}/{relpath}: md5 {got} after checkout, expected {want}.")
            for relpath, _, _ in bad_files:  # DVC's state trusted an edited file with an old mtime
                log.warning(
                    "%s: differs from version %s; checking it out again", f"{DATA}/{relpath}", version
                )
                (repo / DATA / relpath).unlink(missing_ok=True)
    return version


@contextlib.contextmanager
def _dvc(repo: Path) -> Iterator[Repo]:
    """An open DVC repo that keeps stdout for `--json`: DVC's INFO hints (its logger writes them to stdout)
    are silenced, its warnings still reach stderr, and anything it prints goes to stderr."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        handle = Repo(str(repo))
    except NotDvcRepoError as exc:
        raise UsageError(f"{repo}: not a DVC repository (run `dvc init` there).") from exc
    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with handle, contextlib.redirect_stdout(sys.stderr):
            yield handle
    finally:
        dvc_log.setLevel(level)


def _remote(dvc: Repo, name: str | None) -> str:
    """The remote to use; adds the settings' default remote to `.dvc/config.local` when none is configured."""
    settings = get_settings()
    remotes = dvc.config["remote"]
    name = name or dvc.config["core"].get("remote") or settings.dvc_remote
    if name in remotes:
        return name
    if name != settings.dvc_remote:
        known = ", ".join(sorted(remotes)) or "none"
        raise UsageError(f"{dvc.root_dir}/.dvc/config: no DVC remote named {name!r} (configured: {known}).")
    url = settings.dvc_remote_url
    if "://" not in url:
        url = str(Path(url).expanduser().absolute())
    with dvc.config.edit("local") as conf:
        conf["remote"][name] = {"url": url}
        conf["core"].setdefault("remote", name)
    log.info("DVC remote %r -> %s (in .dvc/config.local)", name, url)
    return name


def _url(dvc: Repo, name: str) -> str:
    return str(dvc.config["remote"].get(name, {}).get("url", "?"))


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _dir_entries(dvc: Repo, version: str) -> list[dict]:
    if not version.endswith(".dir"):
        raise DataError(f"{DVC_FILE}:1: md5 {version} does not describe a directory.")
    return json.loads(Path(dvc.cache.local.oid_to_path(version)).read_text(encoding="utf-8"))


def _corrupt_cache_objects(dvc: Repo, version: str) -> list[tuple[str, Path, str, str]]:
    """(data-relative path, cache object, md5 found, md5 expected) for each object not hashing to its name."""
    listing = Path(dvc.cache.local.oid_to_path(version))
    want = version.removesuffix(".dir")
    if not listing.is_file() or (got := _md5(listing)) != want:
        return [("", listing, got if listing.is_file() else MISSING, want)]
    bad = []
    for entry in json.loads(listing.read_text(encoding="utf-8")):
        obj = Path(dvc.cache.local.oid_to_path(entry["md5"]))
        got = _md5(obj) if obj.is_file() else MISSING
        if got != entry["md5"]:
            bad.append((entry["relpath"], obj, got, entry["md5"]))
    return bad


def _corrupt_workspace_files(repo: Path, entries: list[dict]) -> list[tuple[str, str, str]]:
    bad = []
    for entry in entries:
        path = repo / DATA / entry["relpath"]
        got = _md5(path) if path.is_file() else "missing"
        if got != entry["md5"]:
            bad.append((entry["relpath"], got, entry["md5"]))
    listed = {e["relpath"] for e in entries}
    extra = sorted(p.relative_to(repo / DATA).as_posix() for p in (repo / DATA).rglob("*") if p.is_file())
    bad += [(rel, "present", "absent") for rel in extra if rel not in listed]
    return bad


def _restore_dvc_file(repo: Path, rev: str) -> None:
    """Replace data.dvc by its content at git revision REV (atomically)."""
    try:
        text = subprocess.run(
            ["git", "show", f"{rev}:{DVC_FILE}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise UsageError(
            f"{repo}: git has no {DVC_FILE} at revision {rev!r} ({exc.stderr.strip()})."
        ) from exc
    _read_dvc_file(text, f"{rev}:{DVC_FILE}")
    atomic_write_text(repo / DVC_FILE, text)
