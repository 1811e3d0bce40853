"""`data add`: newly annotated abstracts (a PubTator file) appended to a split of an existing data directory.

What it writes, in the layout `data import` made (docs/architecture.md):

- tc3 rows by the same MeSH label rule, merged into the split and sorted by PMID as strings, `.ids` aligned;
- ner3 sentences derived from the documents (`tasks.segment`), appended after the split's existing ones
  (so existing sentence indices, the NER item ids, do not move), the new documents in PMID string order;
- MANIFEST.json: the split's new counts, the new file digests, the source under `added` (base name, bytes,
  sha256, split, counts, PMIDs), its accepted quirks under `warnings`.

Refused, with the PubTator file's line: a document whose PMID or title + abstract is already in any split
(or twice in the file with different content), a mention outside or unlike its document, an unknown
category or concept ID format. The test split is frozen (champions are only comparable on one test split)
unless `unfreeze_test` is given with split `test`. The MeSH tree must be the one the directory was imported
with (its sha256 is in MANIFEST.json). The new directory is built beside DATA, validated with the GX suites
and swapped in: on any error DATA is left exactly as it was.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.corpus import Document, document_label, read_lines, read_mesh_tree, read_pubtator, unique_documents
from tasks.datasets import (
    file_digests,
    manifest_bytes,
    ner3_lines,
    source_path,
    split_counts,
    split_files,
)
from tasks.errors import DataError, UsageError
from tasks.files import staged_dir
from tasks.provenance import sha256_file
from tasks.segment import document_sentences
from tasks.vocab import CLASS_LABELS, SPLITS

MANIFEST = "MANIFEST.json"
FROZEN_SPLIT = "test"


@dataclass
class _Split:
    """One split as it is on disk: tc3 rows (pmid, text, label) and the ner3 lines."""

    rows: list[tuple[str, str, int]]
    text: list[str]
    labels: list[str]
    tc3_line: dict[str, int]  # PMID -> line in tc3/{split}.tsv and .ids


def add_documents(
    data: Path,
    pubtator: str,
    *,
    split: str = "train",
    mesh: str | None = None,
    shared_mesh_dir: Path | None = None,
    unfreeze_test: bool = False,
) -> dict:
    """Append the documents of one PubTator file to `split` of the data directory `data`.

    Args:
        data: a data directory written by `data import` (and maybe earlier `data add`s).
        pubtator: the PubTator file (a path or URL) holding the new documents and their mentions.
        split: train (default) or dev; test only with `unfreeze_test`.
        mesh: the MeSH tree file; default: the file MANIFEST.json records, looked up in `shared_mesh_dir`.
        shared_mesh_dir: where to look for the recorded MeSH file when `mesh` is not given.
        unfreeze_test: allow `split="test"` (scores on the old and new test split are then not comparable).

    Returns:
        A summary: `data`, `split`, `added` (the MANIFEST entry), `splits` (all counts), `warnings` (new).

    Raises:
        DataError: the PubTator file is malformed, or a document is already present (message: file:line).
        UsageError: bad arguments, a frozen test split, a missing or different MeSH file, no data directory.
    """
    data = Path(data)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}.")
    if split == FROZEN_SPLIT and not unfreeze_test:
        raise UsageError(
            "the test split is frozen (champions are only comparable on one test split); "
            "pass --split test --unfreeze-test to add to it anyway."
        )
    if unfreeze_test and split != FROZEN_SPLIT:
        raise UsageError("--unfreeze-test goes with --split test only.")
    manifest_path = data / MANIFEST
    if not manifest_path.is_file():
        raise UsageError(f"{data}: no {MANIFEST} (expected a data directory written by `data import`).")
    manifest_raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(manifest_raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{manifest_path}:{getattr(exc, 'lineno', 1)}: not valid JSON.") from exc
    splits = {s: _read_split(data, s) for s in SPLITS}

    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ncbi-add-") as tmp_s:
        tmp = Path(tmp_s)
        path, where = source_path(pubtator, None, tmp)
        name = path.name
        source = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        docs = sorted(
            unique_documents(read_pubtator(path, where, warnings), where, warnings), key=lambda d: d.pmid
        )
        _refuse_present(docs, splits, where)
        tree = read_mesh_tree(*_mesh(manifest, mesh, shared_mesh_dir, tmp))

    new_rows = [(d.pmid, d.text, document_label(d, tree)) for d in docs]
    sentences = [s for d in docs for s in document_sentences(d, name, warnings)]
    text, labels = ner3_lines(sentences)
    old = splits[split]
    files = split_files(split, old.rows + new_rows, (old.text + text, old.labels + labels))
    rows = old.rows + new_rows
    try:
        mentions = int(manifest["splits"][split]["pubtator"]["mentions"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{manifest_path}: no splits.{split}.pubtator.mentions count.") from exc
    mentions += sum(len(d.mentions) for d in docs)
    manifest["splits"][split] = split_counts([y for _, _, y in rows], old.labels + labels, mentions)
    manifest["files"] = {**manifest.get("files", {}), **file_digests(files)}
    per_class = {str(c): sum(y == c for _, _, y in new_rows) for c in CLASS_LABELS}
    entry = {
        "source": name,
        **source,
        "split": split,
        "documents": len(docs),
        "mentions": sum(len(d.mentions) for d in docs),
        "per_class": per_class,
        "sentences": len(sentences),
        "entities": sum(s.entities for s in sentences),
        "pmids": [d.pmid for d in docs],
    }
    if split == FROZEN_SPLIT:
        entry["unfroze_test"] = True
        warnings.append(
            f"{name}: added to the test split (--unfreeze-test); scores on earlier test splits are not "
            "comparable with scores on this one."
        )
    manifest["added"] = [*manifest.get("added", []), entry]
    manifest["warnings"] = [*manifest.get("warnings", []), *warnings]
    files[MANIFEST] = manifest_bytes(manifest)
    _write_staged(data, files, manifest_raw, where)
    return {
        "data": str(data),
        "split": split,
        "added": entry,
        "splits": manifest["splits"],
        "warnings": warnings,
    }


def _read_split(data: Path, split: str) -> _Split:
    """tc3 rows with their PMIDs and the ner3 lines of one split, checked for the shape import writes."""
    tsv, ids = data / "tc3" / f"{split}.tsv", data / "tc3" / f"{split}.ids"
    text, labels = data / "ner3" / f"text_{split}.txt", data / "ner3" / f"labels_{split}.txt"
    for path in (tsv, ids, text, labels):
        if not path.is_file():
            raise UsageError(f"{path}: not found (expected a data directory written by `data import`).")
    rows_raw, pmids = read_lines(tsv, str(tsv)), read_lines(ids, str(ids))
    if len(rows_raw) != len(pmids):
        raise DataError(
            f"{ids}:{min(len(rows_raw), len(pmids)) + 1}: {len(pmids)} ids for {len(rows_raw)} rows."
        )
    rows = []
    for n, (row, pmid) in enumerate(zip(rows_raw, pmids, strict=True), 1):
        body, tab, label = row.rpartition("\t")
        if not tab or label not in {str(c) for c in CLASS_LABELS}:
            raise DataError(f"{tsv}:{n}: expected 'text<TAB>label' with a label in {list(CLASS_LABELS)}.")
        rows.append((pmid, body, int(label)))
    text_lines, label_lines = read_lines(text, str(text)), read_lines(labels, str(labels))
    if len(text_lines) != len(label_lines):
        raise DataError(f"{labels}: {len(label_lines)} lines for the {len(text_lines)} sentences of {text}.")
    return _Split(rows, text_lines, label_lines, {p: n for n, p in enumerate(pmids, 1)})


def _refuse_present(docs: list[Document], splits: dict[str, _Split], where: str) -> None:
    """A document already in the data (by PMID or by its text), or twice in the file, is refused."""
    by_text: dict[str, tuple[str, str]] = {}
    for s, part in splits.items():
        for n, (pmid, text, _) in enumerate(part.rows, 1):
            by_text.setdefault(text, (pmid, f"the {s} split as PMID {pmid} (tc3/{s}.tsv:{n})"))
    for doc in sorted(docs, key=lambda d: d.line):
        for s, part in splits.items():
            if (n := part.tc3_line.get(doc.pmid)) is not None:
                raise DataError(
                    f"{where}:{doc.line}: PMID {doc.pmid} is already in the {s} split (tc3/{s}.ids:{n})."
                )
        if (seen := by_text.get(doc.text)) is not None:
            raise DataError(
                f"{where}:{doc.line}: PMID {doc.pmid}'s title and abstract are already in {seen[1]}."
            )
        by_text[doc.text] = (doc.pmid, f"this file as PMID {doc.pmid} (line {doc.line})")


def _mesh(manifest: dict, mesh: str | None, shared_mesh_dir: Path | None, tmp: Path) -> tuple[Path, str]:
    """The MeSH tree file to label with: the one the data was imported with, checked by its sha256."""
    recorded = manifest.get("sources", {}).get("mesh", {})
    if len(recorded) != 1:
        if mesh is None:
            raise UsageError(f"{MANIFEST} records no MeSH tree file; pass --mesh.")
        return source_path(mesh, None, tmp)
    ((name, described),) = recorded.items()
    if mesh is None:
        if shared_mesh_dir is None or not (shared_mesh_dir / name).is_file():
            raise UsageError(
                f"{MANIFEST} records the MeSH tree file {name}, not found in {shared_mesh_dir}; pass --mesh."
            )
        mesh = str(shared_mesh_dir / name)
    path, where = source_path(mesh, None, tmp)
    if sha256_file(path) != described.get("sha256"):
        raise UsageError(
            f"{where}: not the MeSH tree file this data was labelled with ({name}, sha256 in {MANIFEST} "
            "sources.mesh); new labels must follow the same tree."
        )
    return path, where


def _write_staged(data: Path, files: dict[str, bytes], manifest_raw: bytes, where: str) -> None:
    """Copy DATA beside itself, write the changed files, validate, and swap it in; DATA stays as it was
    on any error (including a validation failure)."""
    from tasks.validation import validate_dir  # GX: imported only when something is about to be written

    with staged_dir(data, replace=True) as stage:
        shutil.copytree(data, stage, dirs_exist_ok=True, symlinks=True)
        for rel, content in files.items():
            target = stage / rel
            target.unlink(missing_ok=True)  # DVC may have left the copy read-only
            target.write_bytes(content)
        report = validate_dir(stage)
        if not report.valid:
            first = report.failures[0].line_text()
            more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
            raise DataError(f"{where}: with these documents {data} would not validate: {first}{more}.")
        if (data / MANIFEST).read_bytes() != manifest_raw:
            raise UsageError(f"{data}: changed while the documents were being added; nothing was written.")
