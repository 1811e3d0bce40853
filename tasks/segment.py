"""PubTator documents -> ner3 sentences (tokens + B/I/O tags), reproducing the NCBI corpus's CoNLL split.

The standard split (5424 / 923 / 940 sentences: BioBERT's files, cambridgeltl/MTL-Bioinformatics-2016) was
made from the PubTator release by standoff2conll, whose conventions this module re-implements:

- the title and the abstract are separate paragraphs: no sentence spans both;
- a sentence candidate ends after a run of `.`, `!` or `?` followed by white space, or at the paragraph end;
- GeniaSS-style refinements take a candidate break back (`_KEEP_TOGETHER`): inside brackets, before a
  lowercase word, after "e.g." / "i.e." / "vs." / an initial, before "and" / "of" / ..., and so on;
- a break that would cut a mention in two is taken back;
- a token is a run of ASCII letters and digits, or any other single non-space character;
- every token a mention touches is tagged: B for the mention's first token, I for the following ones.

Measured on the release (docs/data.md, `ncbi-retrain data compare`): 7287 of 7287 sentences identical to
the CoNLL split, tokens and tags; 6881 of 6881 mentions become exactly one entity.
Why by hand: the split to reproduce is this rule set's output; PyPI's splitters reproduce fewer sentences
(pysbd 0.3.4: 89.7%, syntok 1.4.4: 96.8%; docs/data.md), and the tokeniser is one regular expression.
Pure Python, no heavy imports: both environments use it.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tasks.corpus import Document, Mention, Sentence

TOKEN = re.compile(r"[0-9A-Za-z]+|\S")
# A candidate sentence: from a non-space character, lazily, to a run of terminal punctuation that white space
# follows, or to the paragraph's last non-space character.
_CANDIDATE = re.compile(r"\S.*?(?:[.!?]+(?=\s)|(?=\s*$))", re.DOTALL)
_PUNCT_ONLY = re.compile(r"[.!?]+")
_OPENERS = {"(": ")", "[": "]"}
_BRACKETS = frozenset("()[]")
_BRACKET_REACH = 250  # characters between a break and the bracket that encloses it (GeniaSS's limit)
_FUNCTION_WORDS = (
    "and|or|but|nor|yet|of|in|by|as|on|at|to|via|for|with|that|than|from|into|upon|after|while|during|"
    "within|through|between|whereas|whether"
)


@dataclass(frozen=True)
class _Rule:
    """A candidate break is taken back when the text before it ends with `left` and the text after it
    starts with `right` (both anchored regular expressions)."""

    name: str
    left: re.Pattern[str]
    right: re.Pattern[str]

    def holds(self, before: str, after: str) -> bool:
        return bool(self.left.search(before) and self.right.match(after))


def _rule(name: str, left: str, right: str) -> _Rule:
    return _Rule(name, re.compile(f"(?:{left})$"), re.compile(right))


_ANY = ""
_KEEP_TOGETHER: tuple[_Rule, ...] = (
    # "... of the 5 kb gene. while ..." : a lowercase word after the period continues the sentence
    _rule("lowercase word follows", r"\.", r"[a-z]{3}[a-z-]*[ .:,;]"),
    # "S. cerevisiae": an abbreviated genus
    _rule("abbreviated genus", r"\b[A-Z]\.", r"[a-z]{3,}\b"),
    # "Anton P. Chekhov", "A. P. Chekhov": a middle initial
    _rule("middle initial", r"\b(?:[A-Z]\.|[A-Z][a-z]{3,}) [A-Z]\.", r"[A-Z][a-z]{3,}\b"),
    # "... 1 mg. and ...", "... p. of ...": a conjunction or preposition cannot open a sentence
    _rule("function word follows", _ANY, rf"(?:{_FUNCTION_WORDS}) "),
    # "e. g.", "i. e.", "i. v." written with a space
    _rule("spaced e. g.", r"\be\.", r"g\."),
    _rule("spaced i. e. / i. v.", r"\bi\.", r"[ev]\."),
    # "e.g. the", "vs. placebo", "Dr. Smith"
    _rule("abbreviation", r"\b(?:e\. ?g\.|i\. ?e\.|i\. ?v\.|vs\.|cf\.|Dr\.|Mr\.|Ms\.|Mrs\.)", _ANY),
    # "approx. 5", "No. 3"
    _rule("abbreviation before a number", r"\b(?:[Aa]pprox\.|[Nn]o\.)", r"\d"),
)


def _keep_together(before: str, after: str) -> bool:
    return any(rule.holds(before, after) for rule in _KEEP_TOGETHER)


def _inside_brackets(text: str, gap_start: int, gap_end: int) -> bool:
    """Whether the break text[gap_start:gap_end] lies inside a () or [] pair: the nearest brackets on both
    sides open and close it (any distance), or the pair encloses at most `_BRACKET_REACH` characters on each
    side, a nested pair counting as one (deeper nesting, or a longer reach, leaves the break)."""
    left = next((c for c in reversed(text[:gap_start]) if c in _BRACKETS), "")
    right = next((c for c in text[gap_end:] if c in _BRACKETS), "")
    if _OPENERS.get(left) == right:
        return True
    return any(
        _reach(reversed(text[:gap_start]), close, opener) and _reach(text[gap_end:], opener, close)
        for opener, close in _OPENERS.items()
    )


def _reach(chars: Iterable[str], inner_start: str, target: str) -> bool:
    """Walking away from a break, whether `target` (the enclosing bracket) comes within reach; a complete
    nested pair (entered at `inner_start`) counts as one character."""
    units, nested = 0, False
    for c in chars:
        if c == target:
            if not nested:
                return True
            nested, units = False, units + 1
        elif c == inner_start:
            if nested:
                return False
            nested = True
        elif not nested:
            units += 1
        if units > _BRACKET_REACH:
            return False
    return False


def split_paragraph(text: str, *, ends_document: bool = True) -> list[tuple[int, int]]:
    """Sentence spans (start, end) of one paragraph (no line breaks), each from its first to its last
    non-space character. A stray run of terminators (" ?!") joins the sentence before it, except at the
    very end of the document (as GeniaSS's post-processing, which sees the title and abstract as one text)."""
    candidates = [m.span() for m in _CANDIDATE.finditer(text)]
    sentences: list[tuple[int, int]] = []
    for start, end in candidates:
        if sentences:
            prev_start, prev_end = sentences[-1]
            last = ends_document and (start, end) == candidates[-1]
            punct_only = _PUNCT_ONLY.fullmatch(text, start, end) and not last
            if (
                punct_only
                or _inside_brackets(text, prev_end, start)
                or _keep_together(text[prev_start:prev_end], text[start:])
            ):
                sentences[-1] = (prev_start, end)
                continue
        sentences.append((start, end))
    return sentences


def split_sentences(doc: Document) -> list[tuple[int, int]]:
    """Sentence spans over `doc.text` (title + " " + abstract): the title's, then the abstract's, with
    every break that would cut a mention taken back."""
    offset = len(doc.title) + 1
    title = split_paragraph(doc.title, ends_document=False)
    spans = title + [(s + offset, e + offset) for s, e in split_paragraph(doc.abstract)]
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and any(m.start < start and m.end > merged[-1][1] for m in doc.mentions):
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def tokenize(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Token spans within text[start:end]: ASCII letter/digit runs, and every other non-space character."""
    return [m.span() for m in TOKEN.finditer(text, start, len(text) if end is None else end)]


@dataclass(frozen=True)
class _Tagged:
    """A sentence's token spans over the document text, their tags, and the mention each token belongs to."""

    spans: list[tuple[int, int]]
    tags: list[str]
    owners: list[Mention | None]


def _tag(doc: Document, mentions: list[Mention]) -> list[_Tagged]:
    tagged = []
    for start, end in split_sentences(doc):
        spans = tokenize(doc.text, start, end)
        tags: list[str] = []
        owners: list[Mention | None] = []
        for ts, te in spans:
            hit = next((m for m in mentions if m.start < te and m.end > ts), None)
            tags.append("O" if hit is None else ("I" if owners and owners[-1] is hit else "B"))
            owners.append(hit)
        tagged.append(_Tagged(spans, tags, owners))
    return tagged


def document_sentences(doc: Document, where: str = "", warnings: list[str] | None = None) -> list[Sentence]:
    """The document's sentences with B/I/O tags from its mentions.

    A mention that starts or ends inside a token tags the whole token (the CoNLL split does the same);
    each such mention is reported in `warnings` as `where:line: ...`. Overlapping mentions cannot both be
    entities: the longer one is kept (standoff2conll's rule) and the other reported.
    """
    text = doc.text
    mentions = _without_overlaps(doc, where, warnings)
    if warnings is not None:
        bounds = _token_bounds(text)
        for m in mentions:
            if m.start not in bounds or m.end not in bounds:
                warnings.append(
                    f"{where}:{m.line}: PMID {doc.pmid} mention {m.text!r} starts or ends inside a token; "
                    "the entity covers the whole token."
                )
    return [
        Sentence(tuple(text[s:e] for s, e in t.spans), tuple(t.tags), doc.line) for t in _tag(doc, mentions)
    ]


def _token_bounds(text: str) -> set[int]:
    return {p for s, e in tokenize(text) for p in (s, e)}


def _without_overlaps(doc: Document, where: str, warnings: list[str] | None) -> list[Mention]:
    kept: list[Mention] = []
    for m in sorted(doc.mentions, key=lambda m: (m.start - m.end, m.start)):  # longest first
        if (other := next((k for k in kept if k.start < m.end and m.start < k.end), None)) is None:
            kept.append(m)
        elif warnings is not None:
            warnings.append(
                f"{where}:{m.line}: PMID {doc.pmid} mention {m.text!r} overlaps the longer mention at line "
                f"{other.line}; only that one becomes an entity."
            )
    return sorted(kept, key=lambda m: m.start)


# --- how closely a derived split reproduces a reference CoNLL split ------------------------------------

DIFFERENCE_KINDS = ("sentence boundary", "tokenisation", "tags", "text")


@dataclass(frozen=True)
class Reproduction:
    """Sentences of a derived split against a reference split of the same documents, in the same order."""

    sentences: int  # in the reference
    derived: int
    identical: int  # same tokens and tags, matched in order
    differences: dict[str, int]  # reference sentences not reproduced, by kind (DIFFERENCE_KINDS)
    examples: list[dict[str, list[str]]]  # the first few differing blocks, ours vs reference

    @property
    def identical_share(self) -> float:
        return self.identical / self.sentences if self.sentences else 1.0


def compare(
    derived: Sequence[Sentence], reference: Sequence[Sentence], max_examples: int = 10
) -> Reproduction:
    """Align the two sentence lists and classify each differing reference sentence by what differs."""
    ours = [(s.tokens, s.tags) for s in derived]
    gold = [(s.tokens, s.tags) for s in reference]
    matcher = difflib.SequenceMatcher(None, ours, gold, autojunk=False)
    kinds: Counter[str] = Counter()
    examples: list[dict[str, list[str]]] = []
    identical = 0
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "equal":
            identical += a2 - a1
            continue
        for mine, theirs in _aligned_blocks(ours[a1:a2], gold[b1:b2]):
            if (kind := _kind(mine, theirs)) is None:
                identical += len(theirs)
                continue
            kinds[kind] += len(theirs)
            if len(examples) < max_examples:
                examples.append(
                    {"derived": [" ".join(t) for t, _ in mine], "reference": [" ".join(t) for t, _ in theirs]}
                )
    return Reproduction(
        sentences=len(gold),
        derived=len(ours),
        identical=identical,
        differences={k: kinds.get(k, 0) for k in DIFFERENCE_KINDS},
        examples=examples,
    )


_Block = list[tuple[tuple[str, ...], tuple[str, ...]]]


def _width(sentence: tuple[tuple[str, ...], tuple[str, ...]]) -> int:
    return sum(len(t) for t in sentence[0])


def _aligned_blocks(ours: _Block, gold: _Block) -> list[tuple[_Block, _Block]]:
    """Cut two differing runs where both have covered the same number of non-space characters, so each
    piece is one difference (the last piece takes what is left when the texts differ)."""
    blocks: list[tuple[_Block, _Block]] = []
    i = j = 0
    while i < len(ours) or j < len(gold):
        start_i, start_j, mine, theirs = i, j, 0, 0
        while True:
            if i < len(ours) and (mine <= theirs or j == len(gold)):
                mine += _width(ours[i])
                i += 1
            elif j < len(gold):
                theirs += _width(gold[j])
                j += 1
            if mine == theirs or (i == len(ours) and j == len(gold)):
                break
        blocks.append((ours[start_i:i], gold[start_j:j]))
    return blocks


def _kind(ours: _Block, gold: _Block) -> str | None:
    """What differs between two aligned pieces (None: nothing)."""
    if "".join("".join(t) for t, _ in ours) != "".join("".join(t) for t, _ in gold):
        return "text"
    if len(ours) != len(gold) or [_width(s) for s in ours] != [_width(s) for s in gold]:
        return "sentence boundary"
    if [t for t, _ in ours] != [t for t, _ in gold]:
        return "tokenisation"
    if ours != gold:
        return "tags"
    return None


def mention_coverage(docs: Iterable[Document]) -> dict[str, int]:
    """How the mentions come through: `mentions`; `entities`, those that become exactly one entity (B then
    I over the tokens they touch, the next token not I); `aligned`, those on token boundaries."""
    out = Counter(mentions=0, entities=0, aligned=0)
    for doc in docs:
        mentions = _without_overlaps(doc, "", None)
        bounds = _token_bounds(doc.text)
        out["mentions"] += len(doc.mentions)
        out["aligned"] += sum(m.start in bounds and m.end in bounds for m in doc.mentions)
        for t in _tag(doc, mentions):
            for i, tag in enumerate(t.tags):
                if tag != "B":
                    continue
                m, j = t.owners[i], i + 1
                while j < len(t.tags) and t.owners[j] is m:
                    j += 1
                whole = all(t.owners[k] is not m for k in range(len(t.tags)) if not i <= k < j)
                if (
                    whole
                    and all(x == "I" for x in t.tags[i + 1 : j])
                    and (j == len(t.tags) or t.tags[j] != "I")
                ):
                    out["entities"] += 1
    return dict(out)
