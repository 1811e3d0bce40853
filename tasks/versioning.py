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

Two ways to get a data version onto disk:

- `pull(repo, rev)` (`ncbi-retrain data pull [--rev REV]`, for people): restores the checkout's own `data/`
  and, with REV, sets `data.dvc` to its content at REV, the DVC way (`git checkout data.dvc` undoes it).
- `materialize(repo, rev, dest)` (`ncbi-retrain data materialize`, for runs): builds a separate, read-only
  folder DEST holding the version recorded in `data.dvc` at git revision REV (default HEAD: the committed
  file, never the working one). It reads git and the DVC cache/remote only: the checkout's `data/` and
  `data.dvc` are neither read nor written, so runs with different revisions can materialise at once.

`data_version()` reads `data.dvc` with PyYAML only (the training env has no DVC); the DVC imports live inside
the other functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tasks.errors import DataError, ServiceError, UsageError
from tasks.files import atomic_write_bytes, atomic_write_text, staged_dir
from tasks.settings import get_settings

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger(__name__)

DATA = "data"
DVC_FILE = "data.dvc"
MISSING = "missing"
LINKS = ("reflink", "hardlink", "copy")  # DVC's own link types, safest first: a reflink shares no writes


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
        entries = _fetch_verified(dvc, version, name, targets=[str(repo / DVC_FILE)])
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


@dataclass(frozen=True)
class Materialized:
    """A data version materialised into its own folder (`materialize`'s result; JSON-able via to_dict)."""

    path: str  # the folder: tc3/, ner3/, MANIFEST.json, read-only
    data_version: str  # the md5 in data.dvc at `commit` (`<32 hex>.dir`)
    rev: str  # the revision asked for (HEAD when none was given)
    commit: str  # the full git commit it resolved to
    files: int
    linked: int  # files hard-linked to the DVC cache (the rest are reflinks or copies)
    reused: bool  # DEST already held exactly this version (a retried task): left as it was

    def to_dict(self) -> dict[str, str | int | bool]:
        return asdict(self)


def materialize(
    repo: Path, rev: str | None, dest: Path, remote: str | None = None, *, link: bool = True
) -> Materialized:
    """Materialise the data version recorded in `data.dvc` at git revision REV into DEST, read-only.

    REV None means HEAD, i.e. the committed `data.dvc`: the working file may have been rewritten by a
    person's `data pull --rev` or by a `data publish` not yet committed, and a run must be reproducible
    from the commit it records. The checkout's `data/` and `data.dvc` are never read or written; DVC's own
    API fetches the version's objects from the remote into the repository's cache (`Repo.fetch(revs=...)`),
    each object is checked against its md5 (a corrupt cache object is dropped and fetched again once),
    and DEST is built in a hidden sibling and renamed into place (`tasks.files.staged_dir`), so it is
    either complete or absent. Files are linked from the cache with DVC's link types, safest first
    (reflink, hardlink, then copy: a hard link needs DEST on the cache's filesystem; `link=False` always
    copies), copies are verified again, then files are made 0444 and folders 0555.

    A hard link shares its inode with the cache object, which DVC keeps 0444 too: a process that is not
    the owner cannot write it nor chmod it (EPERM); the owner or root can `chmod u+w` and write, which
    changes the cache object as well. The next `materialize` or `pull` detects that object by its md5 and
    fetches it again; use `link=False` (`--copy`) where runs must not share inodes with the cache.

    A DEST that already holds exactly this version (every file and md5) is reused as is, so a retried
    task succeeds; any other non-empty DEST is refused.

    Raises:
        UsageError: REV is not a commit, it has no data.dvc, DEST is inside the checkout's data/, DEST is
            not empty, or the remote lacks an object (named: `data/<file>`).
        DataError: the remote's copy of a file is corrupt (named), or data.dvc at REV is malformed.
        ServiceError: the remote cannot be reached.
    """
    repo = Path(repo).resolve()
    dest = Path(dest).absolute()
    checkout_data = repo / DATA
    if dest == checkout_data or checkout_data in dest.parents or dest in checkout_data.parents:
        raise UsageError(f"{dest}: must not be, contain or lie inside the checkout's {checkout_data}.")
    rev = rev or "HEAD"
    commit = _resolve_commit(repo, rev)
    version = _read_dvc_file(_git_show(repo, commit, DVC_FILE, rev), f"{rev}:{DVC_FILE}")["md5"]
    with _dvc(repo) as dvc:
        name = _remote(dvc, remote)
        entries = _fetch_verified(dvc, version, name, targets=[DVC_FILE], revs=[commit], workspace=False)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            if not _holds(dest, entries):
                raise UsageError(
                    f"{dest}: exists and does not hold data version {version} (rev {rev}); "
                    "materialise into a new folder."
                )
            log.info("%s already holds data version %s: reused", dest, version)
            linked = sum(_same_inode(dvc, e, dest) for e in entries)
            return Materialized(str(dest), version, rev, commit, len(entries), linked, True)
        with staged_dir(dest) as stage:
            linked = _place(dvc, entries, stage, link)
            _make_read_only(stage)
    log.info(
        "data version %s (rev %s, commit %s) materialised into %s: %d files, %d hard-linked",
        version, rev, commit[:12], dest, len(entries), linked,
    )  # fmt: skip
    return Materialized(str(dest), version, rev, commit, len(entries), linked, False)


def published_versions(repo: Path, rev: str | None = None) -> list[tuple[str, str]]:
    """(commit, data version) of each commit that changed `data.dvc`, newest first: those reachable from
    git revision REV, or from every ref when REV is None. Reads git only (what a drift report needs to
    find an earlier version, or the commit recording a champion's version, to materialise it)."""
    repo = Path(repo).resolve()
    commits = _resolve_commit(repo, rev) if rev else "--all"
    proc = subprocess.run(
        ["git", "log", "--format=%H", commits, "--", DVC_FILE],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise UsageError(f"{repo}: git log of {DVC_FILE} failed ({proc.stderr.strip()}).")
    out = []
    for commit in proc.stdout.split():
        text = _git_show(repo, commit, DVC_FILE, commit)
        out.append((commit, _read_dvc_file(text, f"{commit[:12]}:{DVC_FILE}")["md5"]))
    return out


def discard(path: Path) -> None:
    """Remove a materialised folder (its folders are read-only, so `shutil.rmtree` alone fails)."""
    path = Path(path)
    if not path.exists():
        return
    for folder in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(path)


def _fetch_verified(dvc: Repo, version: str, name: str, **fetch_args) -> list[dict]:
    """`dvc.fetch(**fetch_args)` VERSION's objects into the local cache and check each against its md5;
    returns the listing.

    A corrupt cache object is dropped and fetched once more. An object the remote lacks is a UsageError
    naming the file, a corrupt copy on the remote a DataError naming the file.
    """
    from dvc.exceptions import DownloadError, DvcException

    def fetch() -> None:
        try:
            dvc.fetch(remote=name, **fetch_args)
        except DownloadError:
            pass  # what is missing or corrupt is found and named file by file below
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
        relpath = missing[0][0]
        if not relpath:  # the listing itself is not in the cache: name a file from the remote's listing
            relpath = _first_missing_from_remote(dvc, name, version)
        raise UsageError(
            f"{DATA}/{relpath}: DVC remote {name!r} ({_url(dvc, name)}) does not hold data "
            f"version {version} ({len(missing)} object(s) missing); publish it first (`data publish`)."
        )
    if bad:
        relpath, _, got, want = bad[0]
        raise DataError(
            f"{DATA}/{relpath}: the copy on DVC remote {name!r} ({_url(dvc, name)}) is corrupt: "
            f"md5 {got}, expected {want} ({len(bad)} corrupt object(s) in all)."
        )
    return _dir_entries(dvc, version)


def _first_missing_from_remote(dvc: Repo, name: str, version: str) -> str:
    """The first file of VERSION whose object is in neither the cache nor the remote ('' if unknown).

    DVC keeps a directory's listing out of the cache until all its files are fetched, so the remote's copy
    of the listing says which file is missing."""
    try:
        odb = dvc.cloud.get_remote_odb(name)
        listing = odb.oid_to_path(version)
        if not odb.fs.exists(listing):
            return ""
        entries = json.loads(odb.fs.cat_file(listing))
        for entry in entries:
            local = Path(dvc.cache.local.oid_to_path(entry["md5"]))
            if not local.is_file() and not odb.exists(entry["md5"]):
                return entry["relpath"]
    except Exception as exc:  # any remote filesystem error: the remote is unusable
        raise ServiceError(f"DVC remote {name!r} ({_url(dvc, name)}): cannot be read ({exc}).") from exc
    return ""


def _place(dvc: Repo, entries: list[dict], stage: Path, link: bool) -> int:
    """Link (or copy) each entry's cache object to STAGE/relpath; copies are verified; returns #hard links."""
    from dvc_objects.fs.generic import transfer
    from dvc_objects.fs.local import LocalFileSystem

    sources, targets = [], []
    for entry in entries:
        rel = Path(entry["relpath"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{DATA}/{rel}: path in the version's listing leaves the data folder.")
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        sources.append(dvc.cache.local.oid_to_path(entry["md5"]))
        targets.append(str(target))
    links = list(LINKS) if link else ["copy"]
    transfer(dvc.cache.local.fs, sources, LocalFileSystem(), targets, links=links)
    linked = 0
    for entry in entries:
        if _same_inode(dvc, entry, stage):
            linked += 1
        elif (got := _md5(stage / entry["relpath"])) != entry["md5"]:
            raise DataError(f"{DATA}/{entry['relpath']}: md5 {got} after copying, expected {entry['md5']}.")
    return linked


def _same_inode(dvc: Repo, entry: dict, root: Path) -> bool:
    """Whether ROOT/relpath is a hard link to the entry's cache object."""
    a, b = os.stat(dvc.cache.local.oid_to_path(entry["md5"])), os.stat(root / entry["relpath"])
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _make_read_only(root: Path) -> None:
    """Files 0444, folders 0555 (deepest first, the root last)."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    root.chmod(0o555)


def _holds(dest: Path, entries: list[dict]) -> bool:
    """Whether DEST holds exactly the listed files with their md5s (and nothing else)."""
    files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    if files != {e["relpath"] for e in entries}:
        return False
    return all(_md5(dest / e["relpath"]) == e["md5"] for e in entries)


def _resolve_commit(repo: Path, rev: str) -> str:
    """The full commit id of git revision REV in REPO; one sentence when there is none."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode == 0:
        return proc.stdout.strip()
    if "not a git repository" in proc.stderr:
        raise UsageError(f"{repo}: not a git repository, so no revision {rev!r} can be materialised.")
    raise UsageError(f"{repo}: git revision {rev!r} does not exist (no commit, branch or tag of that name).")


def _git_show(repo: Path, commit: str, path: str, rev: str) -> str:
    try:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"{repo}: git has no {path} at revision {rev!r} ({exc.stderr.strip()}).") from exc


@contextlib.contextmanager
def _dvc(repo: Path) -> Iterator[Repo]:
    """An open DVC repo that keeps stdout for `--json`: DVC's INFO hints (its logger writes them to stdout)
    are silenced, its warnings still reach stderr, and anything it prints goes to stderr."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        # Wait for DVC's repository lock (fcntl: freed when its holder dies) instead of failing after 3 s:
        # runs materialising at once, and a person's pull, share the repository's cache.
        handle = Repo(str(repo), _wait_for_lock=True)
    except NotDvcRepoError as exc:
        raise UsageError(f"{repo}: not a DVC repository (run `dvc init` there).") from exc
    # DVC's data layer logs each failed transfer with a traceback; the caller names the file instead.
    levels = {"dvc": logging.WARNING, "dvc_data": logging.CRITICAL, "dvc_objects": logging.CRITICAL}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        with handle, contextlib.redirect_stdout(sys.stderr):
            yield handle
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


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
    text = _git_show(repo, rev, DVC_FILE, rev)
    _read_dvc_file(text, f"{rev}:{DVC_FILE}")
    atomic_write_text(repo / DVC_FILE, text)
