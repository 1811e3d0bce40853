"""`data import`: the NCBI release + MeSH 2017 -> NeMo's formats in one data directory, with MANIFEST.json.

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
from tasks.vocab import SPLITS

PUBTATOR_FILES = {
    "train": "NCBItrainset_corpus.txt",
    "dev": "NCBIdevelopset_corpus.txt",
    "test": "NCBItestset_corpus.txt",
}
IOB_FILES = {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}
MANIFEST_SCHEMA = 1
FETCH_TIMEOUT_S = 60


def is_url(src: str) -> bool:
    return src.split("://", 1)[0].lower() in {"http", "https", "file"} and "://" in src


def _source(src: str, name: str | None, tmp: Path) -> tuple[Path, str]:
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


def import_corpus(pubtator: str, iob: str, mesh: str, out: Path, *, force: bool = False) -> dict:
    """Read and check the release, derive the tc3 labels, write OUT atomically; return the manifest.

    Args:
        pubtator: directory or base URL holding the three NCBI*set_corpus.txt PubTator files.
        iob: directory or base URL holding the CoNLL split train.tsv, devel.tsv, test.tsv.
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
        sources: dict[str, dict[str, dict]] = {"pubtator": {}, "iob": {}, "mesh": {}}
        docs: dict[str, list[Document]] = {}
        sentences: dict[str, list[Sentence]] = {}
        where_iob: dict[str, str] = {}
        first_seen: dict[str, tuple[str, str, int]] = {}
        for split in SPLITS:
            path, where = _source(pubtator, PUBTATOR_FILES[split], tmp)
            sources["pubtator"][PUBTATOR_FILES[split]] = _describe(path)
            listed = read_pubtator(path, where, warnings)
            docs[split] = unique_documents(listed, where, warnings)
            for doc in docs[split]:  # leakage across splits would make every test score meaningless
                if (prev := first_seen.get(doc.pmid)) and prev[0] != split:
                    raise DataError(
                        f"{where}:{doc.line}: PMID {doc.pmid} is also in the {prev[0]} split "
                        f"({prev[1]}:{prev[2]})."
                    )
                first_seen[doc.pmid] = (split, where, doc.line)
            path, where_iob[split] = _source(iob, IOB_FILES[split], tmp)
            sources["iob"][IOB_FILES[split]] = _describe(path)
            sentences[split] = read_iob(path, where_iob[split])
        mesh_path, mesh_where = _source(mesh, None, tmp)
        sources["mesh"][mesh.rstrip("/").rsplit("/", 1)[-1]] = _describe(mesh_path)
        tree = read_mesh_tree(mesh_path, mesh_where)

    for split in SPLITS:  # the CoNLL split was made from these documents: one entity per unique mention
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
        rows = sorted(docs[split], key=lambda d: d.pmid)
        labels = [document_label(d, tree) for d in rows]
        files[f"tc3/{split}.tsv"] = "".join(
            f"{d.text}\t{y}\n" for d, y in zip(rows, labels, strict=True)
        ).encode()
        files[f"tc3/{split}.ids"] = "".join(f"{d.pmid}\n" for d in rows).encode()
        sents = sentences[split]
        files[f"ner3/text_{split}.txt"] = "".join(" ".join(s.tokens) + "\n" for s in sents).encode()
        files[f"ner3/labels_{split}.txt"] = "".join(" ".join(s.tags) + "\n" for s in sents).encode()
        per_class = Counter(labels)
        tags = Counter(t for s in sents for t in s.tags)
        splits[split] = {
            "tc3": {"rows": len(rows), "per_class": {str(c): per_class.get(c, 0) for c in LABEL_NAMES}},
            "ner3": {
                "sentences": len(sents),
                "tokens": sum(tags.values()),
                "entities": tags["B"],
                "tags": {t: tags.get(t, 0) for t in ("B", "I", "O")},
            },
            "pubtator": {
                "unique_pmids": len(rows),
                "mentions": sum(len(d.mentions) for d in rows),
            },
        }

    manifest = {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "ncbi-retrain", "version": __version__},
        "sources": sources,
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "label_rule": LABEL_RULE,
        "tc3_order": "rows sorted by PMID compared as strings; tc3/{split}.ids gives each row's PMID",
        "splits": splits,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
        "warnings": warnings,
    }
    files["MANIFEST.json"] = (
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    ).encode()
    _write_atomically(out, files, force)
    return manifest


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
