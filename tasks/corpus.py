"""Reading the NCBI disease corpus release (PubTator + CoNLL IOB) and MeSH 2017, and the 3-class label rule.

Every reader checks what it reads and raises `DataError("<file>:<line>: ...")` on the first line that is not
what the format promises, so a wrong, truncated or edited source is refused instead of silently imported.
Pure Python, no heavy imports: both environments use it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import DataError
from tasks.vocab import CLASS_LABELS, CLASS_NAMES

log = logging.getLogger(__name__)

CANCER, NEURO, OTHER = CLASS_LABELS
LABEL_NAMES = dict(zip(CLASS_LABELS, CLASS_NAMES, strict=True))
CATEGORIES = frozenset({"SpecificDisease", "DiseaseClass", "CompositeMention", "Modifier"})

LABEL_RULE = (
    "Each concept ID of each mention (leading/trailing spaces and a 'MESH:' prefix removed; joined IDs split "
    "on '|' and '+') maps to its MeSH 2017 tree numbers: the ID is cancer (0) if any tree number is C04 or "
    "under it, else neurological (1) if any is C10 or under it, else other (2); IDs with no tree number "
    "(MeSH supplementary concepts, OMIM) are ignored. The abstract takes the most frequent class over all "
    "mapped ID occurrences of its mentions, ties going to the lower label; an abstract with no mapped ID is "
    "other (2)."
)

_TITLE = re.compile(r"([0-9]+)\|t\|(.*)")
_ABSTRACT = re.compile(r"([0-9]+)\|a\|(.*)")
_OFFSET = re.compile(r"[0-9]+")
_CONCEPT = re.compile(r"D[0-9]+|C[0-9]+|OMIM:[0-9]+")
_TREE_NUMBER = re.compile(r"[A-Z][0-9]{2}(\.[0-9]{3})*")
_DESCRIPTOR = re.compile(r"D[0-9]+")
# The one kind of mention/document difference the official release has (train, PMID 10923035): the mention
# text carries spaces where the document has quote characters.
_QUOTES = frozenset("\"'`\u2018\u2019\u201c\u201d")
MESH_HEADER = "Tree Number\tDesc Ui\tTerm"
IOB_TAGS = {"O": "O", "B-Disease": "B", "I-Disease": "I", "B": "B", "I": "I"}


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    category: str
    concept_ids: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Document:
    pmid: str
    title: str
    abstract: str
    mentions: tuple[Mention, ...]
    line: int

    @property
    def text(self) -> str:
        """What PubTator offsets index into (and the tc3 text): title + " " + abstract."""
        return f"{self.title} {self.abstract}"


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]  # B / I / O
    line: int  # line of the first token

    @property
    def entities(self) -> int:
        return self.tags.count("B")


def read_lines(path: Path, where: str, *, encoding: str = "utf-8") -> list[str]:
    """The file's lines without their LF; refuses empty, truncated (no final LF), CRLF and non-UTF-8 files."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot read the file ({exc.strerror}).") from exc
    if not raw.strip():
        raise DataError(f"{where}:1: the file is empty.")
    if encoding == "utf-8-sig" and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.endswith(b"\n"):
        n = raw.count(b"\n") + 1
        raise DataError(f"{where}:{n}: the last line has no line end (truncated file?).")
    lines = []
    for n, chunk in enumerate(raw[:-1].split(b"\n"), 1):
        if chunk.endswith(b"\r"):
            raise DataError(f"{where}:{n}: CRLF line end (expected LF only).")
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{where}:{n}: not valid UTF-8 at byte {exc.start}.") from exc
    return lines


def clean_concept_ids(raw: str) -> tuple[str, ...]:
    """`' MESH:C535662'`, `'D003110|D009369'`, `'D004829+D003294'` -> the individual, normalised IDs."""
    ids = []
    for part in re.split(r"[|+]", raw):
        part = part.strip()
        ids.append(part.removeprefix("MESH:"))
    return tuple(ids)


def quote_tolerant_equal(mention: str, document: str) -> bool:
    """Equal, or equal up to spaces in the mention where the document has quote characters."""
    return len(mention) == len(document) and all(
        m == d or (m == " " and d in _QUOTES) for m, d in zip(mention, document, strict=True)
    )


def read_pubtator(path: Path, where: str, warnings: list[str] | None = None) -> list[Document]:
    """Parse one PubTator file (blocks: `PMID|t|`, `PMID|a|`, then `PMID TAB start TAB end TAB text TAB
    category TAB ids` lines, blank-line separated), checking every mention against the document text.

    Accepted differences are appended to `warnings` (named by the file's base name, so the list is the same
    on every machine) and logged.
    """
    warnings = warnings if warnings is not None else []
    lines = read_lines(path, where)
    docs: list[Document] = []
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        start_line = i + 1
        if not (m := _TITLE.fullmatch(lines[i])):
            raise DataError(f"{where}:{i + 1}: expected a title line 'PMID|t|title', got {lines[i][:60]!r}.")
        pmid, title = m.groups()
        i += 1
        if i >= len(lines) or not lines[i]:
            raise DataError(f"{where}:{i}: PMID {pmid} has a title but no abstract line (truncated file?).")
        if not (m := _ABSTRACT.fullmatch(lines[i])) or m.group(1) != pmid:
            raise DataError(f"{where}:{i + 1}: expected the abstract line '{pmid}|a|abstract'.")
        abstract = m.group(2)
        for n, field in ((start_line, title), (i + 1, abstract)):
            if "\t" in field:
                raise DataError(f"{where}:{n}: PMID {pmid} title/abstract contains a tab.")
        text = f"{title} {abstract}"
        i += 1
        mentions = []
        while i < len(lines) and lines[i]:
            mentions.append(_mention(lines[i], i + 1, pmid, text, where, path.name, warnings))
            i += 1
        docs.append(Document(pmid, title, abstract, tuple(mentions), start_line))
    if not docs:
        raise DataError(f"{where}:1: no PubTator document in the file.")
    return docs


def _mention(line: str, n: int, pmid: str, text: str, where: str, name: str, warnings: list[str]) -> Mention:
    fields = line.split("\t")
    if len(fields) != 6:
        raise DataError(
            f"{where}:{n}: a mention line needs 6 tab-separated fields "
            f"(PMID, start, end, text, category, concept ID), got {len(fields)}."
        )
    mpmid, start_s, end_s, mtext, category, raw_ids = fields
    if mpmid != pmid:
        raise DataError(f"{where}:{n}: mention PMID {mpmid} inside the block of PMID {pmid}.")
    if not (_OFFSET.fullmatch(start_s) and _OFFSET.fullmatch(end_s)):
        raise DataError(f"{where}:{n}: mention offsets {start_s!r}, {end_s!r} are not integers.")
    start, end = int(start_s), int(end_s)
    if not start < end <= len(text):
        raise DataError(
            f"{where}:{n}: mention offsets {start}-{end} fall outside PMID {pmid}'s document "
            f"({len(text)} characters)."
        )
    span = text[start:end]
    if mtext != span:
        if not quote_tolerant_equal(mtext, span):
            raise DataError(
                f"{where}:{n}: mention text {mtext!r} differs from the document text {span!r} "
                f"at {start}-{end}."
            )
        msg = (
            f"{name}:{n}: PMID {pmid} mention text {mtext!r} has spaces where the document has quote "
            f"characters ({span!r}); accepted, the document text is used."
        )
        warnings.append(msg)
        log.warning(msg)
    if category not in CATEGORIES:
        raise DataError(
            f"{where}:{n}: unknown mention category {category!r} (expected {sorted(CATEGORIES)})."
        )
    ids = clean_concept_ids(raw_ids)
    for cid in ids:
        if not _CONCEPT.fullmatch(cid):
            raise DataError(f"{where}:{n}: concept ID {cid!r} is not a MeSH (D/C...) or OMIM:... ID.")
    return Mention(start, end, span, category, ids, n)


def unique_documents(docs: Iterable[Document], where: str, warnings: list[str]) -> list[Document]:
    """One document per PMID (the release lists 8528200 twice, identically); differing copies are refused."""
    seen: dict[str, Document] = {}
    for doc in docs:
        if (first := seen.get(doc.pmid)) is None:
            seen[doc.pmid] = doc
            continue
        same = (
            first.title,
            first.abstract,
            [(m.start, m.end, m.category, m.concept_ids) for m in first.mentions],
        )
        if same != (
            doc.title,
            doc.abstract,
            [(m.start, m.end, m.category, m.concept_ids) for m in doc.mentions],
        ):
            raise DataError(
                f"{where}:{doc.line}: PMID {doc.pmid} appears again (first at line {first.line}) "
                "with different content."
            )
        msg = (
            f"{Path(where).name}:{doc.line}: PMID {doc.pmid} repeats line {first.line} identically; kept once"
        )
        warnings.append(msg)
        log.warning(msg)
    return list(seen.values())


def read_iob(path: Path, where: str) -> list[Sentence]:
    """Parse a CoNLL file (`token TAB tag`, a blank line after every sentence) into B/I/O sentences."""
    lines = read_lines(path, where)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    for n, line in enumerate(lines, 1):
        if not line:
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags), first))
                tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{where}:{n}: expected 'token<TAB>tag', got {len(fields)} tab-separated fields.")
        token, raw_tag = fields
        if not token or any(c.isspace() for c in token):
            raise DataError(f"{where}:{n}: token {token!r} is empty or contains whitespace.")
        if (tag := IOB_TAGS.get(raw_tag)) is None:
            raise DataError(f"{where}:{n}: tag {raw_tag!r} is not one of {sorted(IOB_TAGS)}.")
        if tag == "I" and (not tags or tags[-1] == "O"):
            raise DataError(
                f"{where}:{n}: tag {raw_tag!r} does not continue an entity (after O or at sentence start)."
            )
        if not tokens:
            first = n
        tokens.append(token)
        tags.append(tag)
    if tokens:
        raise DataError(
            f"{where}:{len(lines)}: the last sentence has no closing blank line (truncated file?)."
        )
    if not sentences:
        raise DataError(f"{where}:1: no sentence in the file.")
    return sentences


def read_mesh_tree(path: Path, where: str) -> dict[str, tuple[str, ...]]:
    """MeSH tree file (`Tree Number TAB Desc Ui TAB Term`, a header, UTF-8 + BOM) -> descriptor -> trees."""
    lines = read_lines(path, where, encoding="utf-8-sig")
    if lines[0] != MESH_HEADER:
        raise DataError(f"{where}:1: expected the MeSH tree header {MESH_HEADER!r}, got {lines[0][:60]!r}.")
    tree: dict[str, list[str]] = {}
    for n, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(f"{where}:{n}: expected 3 tab-separated fields (tree number, descriptor, term).")
        number, desc, _term = fields
        if not _TREE_NUMBER.fullmatch(number):
            raise DataError(f"{where}:{n}: {number!r} is not a MeSH tree number.")
        if not _DESCRIPTOR.fullmatch(desc):
            raise DataError(f"{where}:{n}: {desc!r} is not a MeSH descriptor ID.")
        tree.setdefault(desc, []).append(number)
    return {desc: tuple(sorted(numbers)) for desc, numbers in tree.items()}


def _under(number: str, root: str) -> bool:
    return number == root or number.startswith(root + ".")


def concept_class(tree_numbers: Iterable[str]) -> int:
    """Cancer if any tree number is under C04, else neurological if any is under C10, else other."""
    numbers = list(tree_numbers)
    if any(_under(t, "C04") for t in numbers):
        return CANCER
    if any(_under(t, "C10") for t in numbers):
        return NEURO
    return OTHER


def abstract_label(concept_ids: Iterable[str], tree: Mapping[str, Iterable[str]]) -> int:
    """The abstract's class: the most frequent class over its mapped ID occurrences (ties: lower label)."""
    counts = Counter(concept_class(tree[cid]) for cid in concept_ids if cid in tree)
    if not counts:
        return OTHER
    return min(counts, key=lambda c: (-counts[c], c))


def document_label(doc: Document, tree: Mapping[str, Iterable[str]]) -> int:
    return abstract_label((cid for m in doc.mentions for cid in m.concept_ids), tree)
