"""`data import`: the NCBI release + MeSH 2017 -> NeMo's formats in one data directory, with MANIFEST.json.

ner3 comes from the CoNLL IOB split when one is given (`iob`), else from the PubTator documents alone
(`tasks.segment`, which reproduces that split sentence for sentence on the release; docs/data.md).

Layout written (all UTF-8, LF, no header, byte-identical for the same sources):

    tc3/{train,dev,test}.tsv      text<TAB>label, one row per unique PMID, sorted by PMID as strings (the
                                  order of the tagged release and of the IOB files); text = title " " abstract
    tc3/{train,dev,test}.ids      the PMID of each tc3 row, same line order (evaluation items are keyed by it)
    ner3/text_{split}.txt         one sentence per line, space-separated tokens (the CoNLL 5424/923/940 split)
    ner3/labels_{split}.txt       as many space-separated B/I/O tags as tokens
    MANIFEST.json                 sources (base name, bytes, sha256), counts, label rule, tool version,
                                  output sha256s, accepted quirks; no paths, URLs or timestamps, so the DVC
                                  md5 of the directory depends on the sources and the code only.

The directory is built next to OUT and renamed into place: a refused source leaves OUT as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

from tasks import __version__
from tasks.corpus import (
    LABEL_NAMES,
    LABEL_RULE,
    Document,
    Sentence,
    document_label,
    read_iob,
    read_mesh_tree,
    read_pubtator,
    unique_documents,
)
from tasks.errors import DataError, UsageError
from tasks.files import staged_dir
from tasks.provenance import sha256_file
from tasks.segment import DIFFERENCE_KINDS, compare, document_sentences, mention_coverage
from tasks.vocab import SPLITS, TAGS

PUBTATOR_FILES = {
    "train": "NCBItrainset_corpus.txt",
    "dev": "NCBIdevelopset_corpus.txt",
    "test": "NCBItestset_corpus.txt",
}
IOB_FILES = {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}
MANIFEST_SCHEMA = 1
FETCH_TIMEOUT_S = 60
TC3_ORDER = "rows sorted by PMID compared as strings; tc3/{split}.ids gives each row's PMID"
NER3_RULE = (
    "ner3 derived from the PubTator documents alone (tasks/segment.py), standoff2conll's conventions: title "
    "and abstract split apart; a sentence ends after . ! ? and white space unless a GeniaSS-style rule keeps "
    "it together (brackets, a lowercase word or a conjunction/preposition next, e.g./i.e./vs./initials) or "
    "the break would cut a mention; tokens are runs of ASCII letters and digits or single other "
    "characters; every token a mention touches is tagged (B first, then I); documents in PMID string order."
)


def is_url(src: str) -> bool:
    return src.split("://", 1)[0].lower() in {"http", "https", "file"} and "://" in src


def source_path(src: str, name: str | None, tmp: Path) -> tuple[Path, str]:
    """A local path for `src` (a directory holding `name`, a file, or a URL fetched into `tmp`) and how to
    name it in messages."""
    if is_url(src):
        url = f"{src.rstrip('/')}/{name}" if name else src
        dest = (
            tmp / str(len(list(tmp.iterdir()))) / (name or src.rstrip("/").rsplit("/", 1)[-1] or "download")
        )
        dest.parent.mkdir()  # one folder per download keeps the file's own name (messages use it)
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp, dest.open("wb") as f:
                shutil.copyfileobj(resp, f)
        except (urllib.error.URLError, OSError) as exc:
            raise UsageError(f"{url}: cannot fetch the source ({getattr(exc, 'reason', exc)}).") from exc
        return dest, url
    path = Path(src) / name if name else Path(src)
    if not path.is_file():
        what = f"a directory holding {name}" if name else "a file"
        raise UsageError(f"{path}: not found (the source must be {what}, or an http(s) URL).")
    return path, str(path)


def import_corpus(pubtator: str, iob: str | None, mesh: str, out: Path, *, force: bool = False) -> dict:
    """Read and check the release, derive the tc3 labels, write OUT atomically; return the manifest.

    Args:
        pubtator: directory or base URL holding the three NCBI*set_corpus.txt PubTator files.
        iob: directory or base URL holding the CoNLL split train.tsv, devel.tsv, test.tsv; None derives
            ner3 from the PubTator documents alone (`tasks.segment`).
        mesh: the MeSH tree file (Tree Number, Desc Ui, Term), a path or URL.
        out: the data directory to create; an existing non-empty one is replaced only with `force`.

    Raises:
        DataError: a source is not what it claims to be (message: file:line: what is wrong).
        UsageError: a source is missing or cannot be fetched, or OUT exists and `force` is off.
    """
    out = Path(out)
    _check_target(out, force)
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ncbi-import-") as tmp_s:
        tmp = Path(tmp_s)
        sources: dict[str, dict[str, dict]] = {"pubtator": {}, **({"iob": {}} if iob else {}), "mesh": {}}
        docs: dict[str, list[Document]] = {}
        sentences: dict[str, list[Sentence]] = {}
        where_iob: dict[str, str] = {}
        first_seen: dict[str, tuple[str, str, int]] = {}
        for split in SPLITS:
            path, where = source_path(pubtator, PUBTATOR_FILES[split], tmp)
            sources["pubtator"][PUBTATOR_FILES[split]] = _describe(path)
            listed = read_pubtator(path, where, warnings)
            docs[split] = sorted(unique_documents(listed, where, warnings), key=lambda d: d.pmid)
            for doc in docs[split]:  # leakage across splits would make every test score meaningless
                if (prev := first_seen.get(doc.pmid)) and prev[0] != split:
                    raise DataError(
                        f"{where}:{doc.line}: PMID {doc.pmid} is also in the {prev[0]} split "
                        f"({prev[1]}:{prev[2]})."
                    )
                first_seen[doc.pmid] = (split, where, doc.line)
            if iob:
                path, where_iob[split] = source_path(iob, IOB_FILES[split], tmp)
                sources["iob"][IOB_FILES[split]] = _describe(path)
                sentences[split] = read_iob(path, where_iob[split])
            else:
                name = PUBTATOR_FILES[split]
                sentences[split] = [s for d in docs[split] for s in document_sentences(d, name, warnings)]
        mesh_path, mesh_where = source_path(mesh, None, tmp)
        sources["mesh"][mesh.rstrip("/").rsplit("/", 1)[-1]] = _describe(mesh_path)
        tree = read_mesh_tree(mesh_path, mesh_where)

    for split in (
        SPLITS if iob else ()
    ):  # the CoNLL split was made from these documents: one entity per mention
        mentions = sum(len(d.mentions) for d in docs[split])
        entities = sum(s.entities for s in sentences[split])
        if mentions != entities:
            last = sentences[split][-1]
            raise DataError(
                f"{where_iob[split]}:{last.line + len(last.tokens)}: {entities} entities, but the PubTator "
                f"{split} file has {mentions} mentions (truncated file, or sources from different releases?)."
            )

    files: dict[str, bytes] = {}
    splits: dict[str, dict] = {}
    for split in SPLITS:
        rows = [(d.pmid, d.text, document_label(d, tree)) for d in docs[split]]
        files.update(split_files(split, rows, ner3_lines(sentences[split])))
        splits[split] = split_counts(
            [y for _, _, y in rows], labels_lines(files, split), sum(len(d.mentions) for d in docs[split])
        )

    manifest = {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "ncbi-retrain", "version": __version__},
        "sources": sources,
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "label_rule": LABEL_RULE,
        **({} if iob else {"ner3_rule": NER3_RULE}),
        "tc3_order": TC3_ORDER,
        "splits": splits,
        "files": file_digests(files),
        "warnings": warnings,
    }
    files["MANIFEST.json"] = manifest_bytes(manifest)
    _write_atomically(out, files, force)
    return manifest


def compare_release(pubtator: str, iob: str) -> dict:
    """How closely ner3 derived from the PubTator files alone reproduces a CoNLL split of them.

    Returns per split and in `total`: `sentences` (reference), `derived`, `identical` (same tokens and
    tags, in order), `identical_share`, `differences` by kind (`tasks.segment.DIFFERENCE_KINDS`),
    `mentions`, `entities` (mentions that become exactly one entity), `aligned` (mentions on token
    boundaries); per split also the first differing blocks under `examples`.
    """
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ncbi-compare-") as tmp_s:
        tmp = Path(tmp_s)
        for split in SPLITS:
            path, where = source_path(pubtator, PUBTATOR_FILES[split], tmp)
            docs = sorted(unique_documents(read_pubtator(path, where, []), where, []), key=lambda d: d.pmid)
            path, where = source_path(iob, IOB_FILES[split], tmp)
            r = compare([s for d in docs for s in document_sentences(d)], read_iob(path, where))
            result[split] = {
                "sentences": r.sentences,
                "derived": r.derived,
                "identical": r.identical,
                "identical_share": r.identical_share,
                "differences": r.differences,
                **mention_coverage(docs),
                "examples": r.examples,
            }
    total: dict = {k: sum(r[k] for r in result.values()) for k in ("sentences", "derived", "identical")}
    total["identical_share"] = total["identical"] / total["sentences"] if total["sentences"] else 1.0
    total["differences"] = {k: sum(r["differences"][k] for r in result.values()) for k in DIFFERENCE_KINDS}
    for k in ("mentions", "entities", "aligned"):
        total[k] = sum(r[k] for r in result.values())
    return {"splits": result, "total": total}


def ner3_lines(sentences: list[Sentence]) -> tuple[list[str], list[str]]:
    """The text and labels lines of ner3 (space-separated tokens / tags, no line end)."""
    return [" ".join(s.tokens) for s in sentences], [" ".join(s.tags) for s in sentences]


def split_files(
    split: str, rows: list[tuple[str, str, int]], ner3: tuple[list[str], list[str]]
) -> dict[str, bytes]:
    """The four files of one split: tc3 rows (pmid, text, label) sorted by PMID as strings, their ids, and
    the ner3 text and labels lines as given."""
    rows = sorted(rows, key=lambda r: r[0])
    text, labels = ner3
    return {
        f"tc3/{split}.tsv": "".join(f"{t}\t{y}\n" for _, t, y in rows).encode(),
        f"tc3/{split}.ids": "".join(f"{p}\n" for p, _, _ in rows).encode(),
        f"ner3/text_{split}.txt": "".join(line + "\n" for line in text).encode(),
        f"ner3/labels_{split}.txt": "".join(line + "\n" for line in labels).encode(),
    }


def labels_lines(files: dict[str, bytes], split: str) -> list[str]:
    return files[f"ner3/labels_{split}.txt"].decode().splitlines()


def split_counts(labels: list[int], ner3_labels: list[str], mentions: int) -> dict:
    """The MANIFEST counts of one split: tc3 rows per class, ner3 sentences / tokens / tags, PubTator."""
    per_class = Counter(labels)
    tags = Counter(t for line in ner3_labels for t in line.split(" "))
    return {
        "tc3": {"rows": len(labels), "per_class": {str(c): per_class.get(c, 0) for c in LABEL_NAMES}},
        "ner3": {
            "sentences": len(ner3_labels),
            "tokens": sum(tags.values()),
            "entities": tags["B"],
            "tags": {t: tags.get(t, 0) for t in TAGS},
        },
        "pubtator": {"unique_pmids": len(labels), "mentions": mentions},
    }


def file_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def manifest_bytes(manifest: dict) -> bytes:
    """MANIFEST.json as written: sorted keys, 2-space indent, UTF-8, a final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _describe(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"{out}: exists and is not empty; pass --force to replace it.")


def _write_atomically(out: Path, files: dict[str, bytes], force: bool) -> None:
    """Write every file into a staged directory beside OUT, then swap it into place."""
    umask = os.umask(0)
    os.umask(umask)
    with staged_dir(out, replace=True) as tmp:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for d in {(tmp / n).parent for n in files}:
            d.chmod(0o777 & ~umask)
        _check_target(out, force)  # again: something may have appeared while we parsed
