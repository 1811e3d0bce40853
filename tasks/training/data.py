"""Read and check DATA/tc3 and DATA/ner3 (the formats in docs/architecture.md), write NeMo's scratch copy.

Every problem is one sentence naming the file, the line and the field; a missing directory or file is a
usage error (exit 2), malformed content a data error (exit 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from tasks.errors import DataError, UsageError
from tasks.vocab import CLASS_LABELS, SPLITS, TAGS

log = logging.getLogger("ncbi_retrain.train")


@dataclass
class Split:
    """One split: ids (PMIDs or row/sentence indices), texts, and gold labels (int or tag list)."""

    name: str
    ids: list[str]
    texts: list[str]
    labels: list = field(default_factory=list)  # classifier: list[int]; ner: list[list[str]]
    # ner: the abstract (tc3 row) each sentence comes from; None when tc3 is absent or does not match
    documents: list[int] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _data_root(data: Path, sub: str) -> Path:
    if not data.is_dir():
        raise UsageError(f"data directory {data} does not exist")
    root = data / sub
    if not root.is_dir():
        raise UsageError(f"data directory {data} has no {sub}/ folder (expected the output of `data import`)")
    return root


def read_classifier_split(data: Path, split: str) -> Split:
    """DATA/tc3/<split>.tsv (`text<TAB>label`, no header) and, when present, the aligned <split>.ids."""
    root = _data_root(data, "tc3")
    path = root / f"{split}.tsv"
    texts, labels = [], []
    for n, line in enumerate(_lines(path), 1):
        text, tab, label = line.rpartition("\t")
        if not tab:
            raise DataError(f"{path}:{n}: no TAB between text and label")
        if not text.strip():
            raise DataError(f"{path}:{n}: field text is empty")
        if label.strip() not in {str(c) for c in CLASS_LABELS}:
            raise DataError(f"{path}:{n}: field label is {label!r}, expected one of 0, 1, 2")
        texts.append(" ".join(text.split()))
        labels.append(int(label))
    if not texts:
        raise DataError(f"{path}: no examples")
    ids_path = root / f"{split}.ids"
    if ids_path.is_file():
        ids = [i.strip() for i in _lines(ids_path)]
        if len(ids) != len(texts):
            raise DataError(f"{ids_path}: {len(ids)} ids for {len(texts)} lines of {path.name}")
    else:
        ids = [str(i) for i in range(len(texts))]
    return Split(split, ids, texts, labels)


def read_ner_split(data: Path, split: str) -> Split:
    """DATA/ner3/text_<split>.txt and labels_<split>.txt: one sentence per line, one B/I/O tag per token."""
    root = _data_root(data, "ner3")
    text_path, label_path = root / f"text_{split}.txt", root / f"labels_{split}.txt"
    texts, tags = _lines(text_path), _lines(label_path)
    if len(texts) != len(tags):
        raise DataError(f"{label_path}: {len(tags)} lines for {len(texts)} sentences in {text_path.name}")
    sentences, labels = [], []
    for n, (text, tag_line) in enumerate(zip(texts, tags, strict=True), 1):
        words, line_tags = text.split(), tag_line.split()
        if not words:
            raise DataError(f"{text_path}:{n}: field text is empty")
        if len(words) != len(line_tags):
            raise DataError(
                f"{label_path}:{n}: {len(line_tags)} tags for {len(words)} tokens in {text_path.name}"
            )
        for tag in line_tags:
            if tag not in TAGS:
                raise DataError(f"{label_path}:{n}: tag {tag!r} is not one of B, I, O")
        sentences.append(" ".join(words))
        labels.append(line_tags)
    if not sentences:
        raise DataError(f"{text_path}: no sentences")
    ids = [str(i) for i in range(len(sentences))]
    return Split(split, ids, sentences, labels, sentence_documents(data, split, sentences))


def sentence_documents(data: Path, split: str, sentences: list[str]) -> list[int] | None:
    """The tc3 row (abstract) of each ner3 sentence. `data import` and `data add` write both from the same
    documents, each document's sentences together (tc3 sorted by PMID; `data add` appends its sentences
    after the split's existing ones), so a run of sentences, spaces removed, spells out one tc3 row from its
    start. None (with a warning) when a sentence fits no row, e.g. a data directory without tc3:
    abbreviations are then resolved within each sentence only."""
    path = Path(data) / "tc3" / f"{split}.tsv"
    if not path.is_file():
        return None
    docs = ["".join(line.rpartition("\t")[0].split()) for line in _lines(path)]
    owner: list[int] = []
    doc, pos, used = -1, 0, set()
    for n, sentence in enumerate(sentences, 1):
        chars = "".join(sentence.split())
        if doc >= 0 and docs[doc].startswith(chars, pos):
            pos += len(chars)
        else:  # a new document: the first unused row it starts, looking after the current row first
            rows = chain(range(doc + 1, len(docs)), range(doc + 1))
            start = next((j for j in rows if j not in used and docs[j].startswith(chars)), None)
            if start is None:
                log.warning(
                    "ner3/text_%s.txt:%d does not start or continue a row of tc3/%s.tsv: abbreviations "
                    "resolved per sentence",
                    split,
                    n,
                    split,
                )
                return None
            doc, pos = start, len(chars)
            used.add(doc)
        owner.append(doc)
    return owner


def read_split(model: str, data: Path, split: str) -> Split:
    return (read_classifier_split if model == "classifier" else read_ner_split)(data, split)


def read_all(model: str, data: Path) -> dict[str, Split]:
    """All three splits, checked."""
    return {s: read_split(model, data, s) for s in SPLITS}


def write_scratch(model: str, splits: dict[str, Split], scratch: Path) -> Path:
    """NeMo's input files in a scratch folder (NeMo writes label maps and caches beside them)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        if model == "classifier":
            rows = (f"{t}\t{y}" for t, y in zip(split.texts, split.labels, strict=True))
            (scratch / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        else:
            (scratch / f"text_{name}.txt").write_text("\n".join(split.texts) + "\n", encoding="utf-8")
            tags = (" ".join(t) for t in split.labels)
            (scratch / f"labels_{name}.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
    return scratch
