"""CLI commands: `data import`, `data publish`, `data pull`, `data version`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(
    name="data",
    help="Import the NCBI release into NeMo's formats; version data/ with DVC (data.dvc md5 = data version).",
    no_args_is_help=True,
)

_JSON = typer.Option(False, "--json", help="Print one JSON object instead of the human summary.")
_REPO = typer.Option(
    None, "--repo", help="Git + DVC repository holding data/ and data.dvc (default: Settings.project_dir)."
)


def _emit(as_json: bool, obj: dict, lines: list[str]) -> None:
    typer.echo(json.dumps(obj, sort_keys=True) if as_json else "\n".join(lines))


def _repo(repo: Path | None) -> Path:
    from tasks.settings import get_settings

    return repo or get_settings().project_dir


@data_app.command("import")
def import_(
    pubtator: str = typer.Option(
        None,
        "--pubtator",
        help="Directory or base URL with NCBI{train,develop,test}set_corpus.txt (PubTator).",
    ),
    iob: str = typer.Option(
        None, "--iob", help="Directory or base URL with the CoNLL train.tsv, devel.tsv, test.tsv."
    ),
    mesh: str = typer.Option(None, "--mesh", help="MeSH tree file (2017MeshTree.txt), a path or URL."),
    out: Path = typer.Option(None, "--out", help="Data directory to write (default: Settings.data_dir)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists and is not empty."),
    as_json: bool = _JSON,
) -> None:
    """Check the release; write tc3/ (3 classes, MeSH C04/C10 rule), ner3/ (B/I/O) and MANIFEST.json.

    Defaults come from Settings.shared_data (../shared/data). A source that is not what it claims (wrong
    format, truncated, a mention outside or unlike its document) is refused with file:line and OUT is left
    as it was; the output is byte-identical for the same sources.
    """
    from tasks.datasets import import_corpus
    from tasks.settings import get_settings

    s = get_settings()
    shared = s.path(s.shared_data)
    out = out or s.path(s.data_dir)
    manifest = import_corpus(
        pubtator=pubtator or str(shared / "ncbi_disease" / "original"),
        iob=iob or str(shared / "ncbi_disease" / "iob"),
        mesh=mesh or str(shared / "mesh" / "2017MeshTree.txt"),
        out=out,
        force=force,
    )
    lines = [f"imported into {out}"]
    for split, c in manifest["splits"].items():
        per = c["tc3"]["per_class"]
        lines.append(
            f"  {split:5}  tc3 {c['tc3']['rows']} abstracts "
            f"(cancer {per['0']}, neuro {per['1']}, other {per['2']})  "
            f"ner3 {c['ner3']['sentences']} sentences, {c['ner3']['entities']} entities"
        )
    if manifest["warnings"]:  # each was also logged to stderr
        lines.append(
            f"  {len(manifest['warnings'])} accepted quirk(s), listed under 'warnings' in MANIFEST.json"
        )
    _emit(as_json, {"out": str(out), **manifest}, lines)


@data_app.command("publish")
def publish(
    remote: str = typer.Option(
        None, "--remote", help="DVC remote name (default: the repo's, else Settings.dvc_remote)."
    ),
    repo: Path = _REPO,
    as_json: bool = _JSON,
) -> None:
    """`dvc add data` + `dvc push`; prints the data version (md5 in data.dvc). Commit data.dvc afterwards.

    The remote: the repo's DVC default if configured (e.g. S3 in .dvc/config, credentials from the
    environment), else Settings.dvc_remote / NCBI_RETRAIN_DVC_REMOTE_URL (a local directory outside git by
    default, ~/.cache/ncbi-retrain/dvc-remote), written to .dvc/config.local.
    """
    from tasks.versioning import publish as _publish

    version = _publish(_repo(repo), remote)
    _emit(
        as_json, {"data_version": version}, [f"data version {version} pushed; commit data.dvc to record it"]
    )


@data_app.command("pull")
def pull(
    rev: str = typer.Option(
        None, "--rev", help="Git revision whose data.dvc to restore (default: the working one)."
    ),
    remote: str = typer.Option(
        None, "--remote", help="DVC remote name (default: the repo's, else Settings.dvc_remote)."
    ),
    repo: Path = _REPO,
    as_json: bool = _JSON,
) -> None:
    """Restore data/ from the DVC remote; every file is checked against the md5s of its version.

    With --rev, data.dvc is first set to its content at that git revision (the DVC way: data.dvc then
    describes what is in data/; `git checkout data.dvc` undoes it). A corrupt local cache object is fetched
    again; a corrupt copy on the remote is refused naming the file (exit 1). A fresh clone works: the
    default remote (Settings.dvc_remote_url) is written to .dvc/config.local when no remote is configured.
    """
    from tasks.versioning import pull as _pull

    version = _pull(_repo(repo), rev, remote)
    _emit(as_json, {"data_version": version, "rev": rev}, [f"data/ restored to version {version}"])


@data_app.command("version")
def version(repo: Path = _REPO, as_json: bool = _JSON) -> None:
    """Print the data version (md5 in data.dvc), or `none` when nothing is tracked yet."""
    from tasks.versioning import data_version

    v = data_version(_repo(repo))
    _emit(as_json, {"data_version": v}, [v or "none"])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(data_app, name="data")
