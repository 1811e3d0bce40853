"""CLI commands: `data import|add|compare|publish|pull|materialize|version`."""

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
        None,
        "--iob",
        help="Directory or base URL with the CoNLL train.tsv, devel.tsv, test.tsv; without it ner3 is "
        "derived from the PubTator files alone (same sentences on the NCBI release, docs/data.md).",
    ),
    mesh: str = typer.Option(None, "--mesh", help="MeSH tree file (2017MeshTree.txt), a path or URL."),
    out: Path = typer.Option(None, "--out", help="Data directory to write (default: Settings.data_dir)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists and is not empty."),
    as_json: bool = _JSON,
) -> None:
    """Check the release; write tc3/ (3 classes, MeSH C04/C10 rule), ner3/ (B/I/O) and MANIFEST.json.

    --pubtator and --mesh default to Settings.shared_data (../shared/data). ner3 comes from --iob when
    given, else from the PubTator documents (tasks/segment.py). A source that is not what it claims (wrong
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
        iob=iob,
        mesh=mesh or str(shared / "mesh" / "2017MeshTree.txt"),
        out=out,
        force=force,
    )
    lines = [f"imported into {out}" + ("" if iob else " (ner3 derived from PubTator)")]
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


@data_app.command("add")
def add(
    pubtator: str = typer.Option(
        ..., "--pubtator", help="PubTator file with the new annotated documents (a path or URL)."
    ),
    split: str = typer.Option(
        "train", "--split", help="Split to add to: train or dev (test: --unfreeze-test)."
    ),
    unfreeze_test: bool = typer.Option(
        False,
        "--unfreeze-test",
        help="With --split test: change the frozen test split (scores before and after are not comparable).",
    ),
    mesh: str = typer.Option(
        None,
        "--mesh",
        help="MeSH tree file (default: the one MANIFEST.json records, under Settings.shared_data/mesh/); "
        "it must be the file the data was labelled with.",
    ),
    data: Path = typer.Option(None, "--data", help="Data directory to add to (default: Settings.data_dir)."),
    as_json: bool = _JSON,
) -> None:
    """Append newly annotated abstracts: tc3 rows by the MeSH label rule, ner3 sentences derived from them.

    Refused with file:line (exit 1): a document whose PMID or title + abstract is already in any split, a
    mention outside or unlike its document, an unknown concept ID format. The test split is frozen unless
    --split test --unfreeze-test. MANIFEST.json records the source (sha256) and the new counts. On any
    error DATA is left exactly as it was. Then `ncbi-retrain data publish` makes the new data version.
    """
    from tasks.data_add import add_documents
    from tasks.settings import get_settings

    s = get_settings()
    data = data or s.path(s.data_dir)
    summary = add_documents(
        data,
        pubtator,
        split=split,
        mesh=mesh,
        shared_mesh_dir=s.path(s.shared_data) / "mesh",
        unfreeze_test=unfreeze_test,
    )
    added, tc3, ner3 = summary["added"], summary["splits"][split]["tc3"], summary["splits"][split]["ner3"]
    per = tc3["per_class"]
    lines = [
        f"added {added['documents']} documents ({added['mentions']} mentions, {added['sentences']} "
        f"sentences) from {added['source']} to the {split} split of {data}",
        f"  {split:5}  tc3 {tc3['rows']} abstracts (cancer {per['0']}, neuro {per['1']}, other {per['2']})  "
        f"ner3 {ner3['sentences']} sentences, {ner3['entities']} entities",
    ]
    if summary["warnings"]:
        lines.append(f"  {len(summary['warnings'])} warning(s), listed under 'warnings' in MANIFEST.json")
    lines.append("run `ncbi-retrain data publish` to make the new data version")
    _emit(as_json, summary, lines)


@data_app.command("compare")
def compare(
    pubtator: str = typer.Option(
        None, "--pubtator", help="Directory or base URL with NCBI{train,develop,test}set_corpus.txt."
    ),
    iob: str = typer.Option(
        None, "--iob", help="Directory or base URL with the CoNLL split to compare with."
    ),
    as_json: bool = _JSON,
) -> None:
    """How closely ner3 derived from PubTator alone reproduces the CoNLL split (default: the shared release).

    Prints per split the sentences identical to the reference (tokens and tags), the differences by kind,
    and how many mentions become exactly one entity (and start and end on token boundaries).
    """
    from tasks.datasets import compare_release
    from tasks.settings import get_settings

    s = get_settings()
    shared = s.path(s.shared_data) / "ncbi_disease"
    result = compare_release(pubtator or str(shared / "original"), iob or str(shared / "iob"))
    lines = []
    for name, r in [*result["splits"].items(), ("all", result["total"])]:
        diff = ", ".join(f"{k} {v}" for k, v in r["differences"].items() if v) or "none"
        lines.append(
            f"{name:5}  sentences identical {r['identical']}/{r['sentences']} ({r['identical_share']:.2%}); "
            f"mentions as one entity {r['entities']}/{r['mentions']}, on token boundaries "
            f"{r['aligned']}/{r['mentions']}; differences: {diff}"
        )
    _emit(as_json, result, lines)


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


@data_app.command("materialize")
def materialize(
    out: Path = typer.Option(..., "--out", help="New (or empty) folder to hold the data version, read-only."),
    rev: str = typer.Option(
        "HEAD", "--rev", help="Git revision whose committed data.dvc names the version (default HEAD)."
    ),
    remote: str = typer.Option(
        None, "--remote", help="DVC remote name (default: the repo's, else Settings.dvc_remote)."
    ),
    copy: bool = typer.Option(
        False, "--copy", help="Copy every file instead of hard-linking it from the DVC cache."
    ),
    repo: Path = _REPO,
    as_json: bool = _JSON,
) -> None:
    """Put the data version of git revision REV into its own read-only folder OUT; the checkout's data/
    and data.dvc are neither read nor changed (what a pipeline run does; `data pull` is for people).

    The objects come from the DVC cache (fetched from the remote when missing), each checked against its
    md5; files are hard-linked from the cache when OUT is on its filesystem (else copied), then made
    0444 and folders 0555. OUT appears complete or not at all; an OUT that already holds exactly this
    version is reused. A file missing on the remote (exit 2) or corrupt there (exit 1) is named.
    """
    from tasks.versioning import materialize as _materialize

    m = _materialize(_repo(repo), rev, out, remote, link=not copy)
    how = "already there" if m.reused else f"{m.linked} hard-linked, {m.files - m.linked} copied"
    line = f"data version {m.data_version} (rev {m.rev}, commit {m.commit[:12]}) in {m.path}"
    _emit(as_json, m.to_dict(), [f"{line}: {m.files} files, {how}"])


@data_app.command("drift")
def drift(
    old: Path = typer.Argument(..., metavar="OLD", help="The earlier data directory (the reference)."),
    new: Path = typer.Argument(..., metavar="NEW", help="The later data directory."),
    out: Path = typer.Option(None, "--out", help="Also write the drift as Markdown to this file."),
    as_json: bool = _JSON,
) -> None:
    """What changed from OLD to NEW, per split: counts, class balance, entities per sentence, vocabulary
    overlap, added and removed PMIDs; warns when the test split changed.

    Two versions side by side: `ncbi-retrain data materialize --rev v1 --out /tmp/v1` (and v2), then
    `ncbi-retrain data drift /tmp/v1 /tmp/v2`. The DAG's validate step writes the same against the
    champions' data version (runs/<run id>/validation/drift.md), and each gate report shows it.
    """
    from tasks.drift import drift as compare_dirs
    from tasks.drift import summary_lines, to_markdown
    from tasks.errors import UsageError
    from tasks.files import atomic_write_text

    for path in (old, new):
        if not (path / "tc3").is_dir() and not (path / "ner3").is_dir():
            raise UsageError(f"{path}: not a data directory (no tc3/ or ner3/ folder).")
    doc = compare_dirs(old, new, reference={"path": str(old)}, current={"path": str(new)})
    if out is not None:
        atomic_write_text(out, to_markdown(doc, heading="#"))
    _emit(as_json, doc, summary_lines(doc))


@data_app.command("version")
def version(repo: Path = _REPO, as_json: bool = _JSON) -> None:
    """Print the data version (md5 in data.dvc), or `none` when nothing is tracked yet."""
    from tasks.versioning import data_version

    v = data_version(_repo(repo))
    _emit(as_json, {"data_version": v}, [v or "none"])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.add_typer(data_app, name="data")
