"""Drift between two data versions: what changed from a reference (the champion's data, or the previous
published version) to a run's data, per split.

Per split: counts (abstracts, sentences, tokens, entities), class balance (tc3 shares), entities per
sentence (ner3), vocabulary overlap (lower-cased ner3 token types: shared, Jaccard, the share of the new
version's tokens unseen in the old), added and removed PMIDs (`tc3/{split}.ids`); plus, per version, the
test split's out-of-vocabulary rate against the train vocabulary. Warnings: the test split changed
(champions are only comparable on one test split), PMIDs removed, a class share or the entities per
sentence moved by more than `SHARE_MOVE` / `DENSITY_MOVE`.

Pure functions over a data directory's files (standard library only; both environments import it):
`profile()` reads one version, `compare()` makes the JSON-able drift document, `to_markdown()` /
`summary_lines()` render it for the validation and gate reports.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.vocab import CLASS_LABELS, SPLITS, class_name

SCHEMA = 1
FROZEN_SPLIT = "test"
SHARE_MOVE = 0.05  # a class share moving by 5 percentage points or more is worth a warning
DENSITY_MOVE = 0.10  # entities per sentence moving by 10% (relative) or more is worth a warning
SAMPLE = 10  # PMIDs listed per direction (the counts are complete)
SPLIT_FILES = ("tc3/{split}.tsv", "tc3/{split}.ids", "ner3/text_{split}.txt", "ner3/labels_{split}.txt")


@dataclass(frozen=True)
class SplitProfile:
    """What drift compares of one split of one data version."""

    digest: str  # sha256 over the split's files (names and bytes): equal digests, same split
    pmids: frozenset[str]
    per_class: dict[str, int]
    sentences: int
    tokens: int
    entities: int
    sentences_with_entities: int
    vocabulary: Counter[str] = field(repr=False)  # lower-cased token -> occurrences

    @property
    def rows(self) -> int:
        return sum(self.per_class.values())


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def profile_split(data: Path, split: str) -> SplitProfile:
    """Read one split of a data directory (missing files count as empty)."""
    data = Path(data)
    h = hashlib.sha256()
    for pattern in SPLIT_FILES:
        path = data / pattern.format(split=split)
        h.update(path.name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    labels = Counter(line.rpartition("\t")[2] for line in _lines(data / "tc3" / f"{split}.tsv"))
    vocabulary: Counter[str] = Counter()
    for line in _lines(data / "ner3" / f"text_{split}.txt"):
        vocabulary.update(line.lower().split(" "))
    tags = [line.split(" ") for line in _lines(data / "ner3" / f"labels_{split}.txt")]
    return SplitProfile(
        digest=h.hexdigest(),
        pmids=frozenset(_lines(data / "tc3" / f"{split}.ids")),
        per_class={str(c): labels.get(str(c), 0) for c in CLASS_LABELS},
        sentences=len(tags),
        tokens=sum(len(t) for t in tags),
        entities=sum(t.count("B") for t in tags),
        sentences_with_entities=sum("B" in t for t in tags),
        vocabulary=vocabulary,
    )


def profile(data: Path) -> dict[str, SplitProfile]:
    """Every split of a data directory."""
    return {split: profile_split(data, split) for split in SPLITS}


def _change(old: float, new: float) -> dict[str, float]:
    return {"from": round(old, 4), "to": round(new, 4), "change": round(new - old, 4)}


def _count(old: int, new: int) -> dict[str, int]:
    return {"from": old, "to": new, "change": new - old}


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _oov(tokens: Counter[str], known: Counter[str]) -> float:
    """The share of token occurrences in `tokens` whose type is not in `known`."""
    return _ratio(sum(n for t, n in tokens.items() if t not in known), sum(tokens.values()))


def compare_split(old: SplitProfile, new: SplitProfile) -> dict[str, Any]:
    """The drift of one split from `old` to `new`."""
    shared = old.vocabulary.keys() & new.vocabulary.keys()
    union = old.vocabulary.keys() | new.vocabulary.keys()
    added, removed = sorted(new.pmids - old.pmids), sorted(old.pmids - new.pmids)
    return {
        "changed": old.digest != new.digest,
        "abstracts": _count(old.rows, new.rows),
        "sentences": _count(old.sentences, new.sentences),
        "tokens": _count(old.tokens, new.tokens),
        "entities": _count(old.entities, new.entities),
        "class_share": {
            c: _change(_ratio(old.per_class[c], old.rows), _ratio(new.per_class[c], new.rows))
            for c in new.per_class
        },
        "entities_per_sentence": _change(
            _ratio(old.entities, old.sentences), _ratio(new.entities, new.sentences)
        ),
        "sentences_with_entities": _change(
            _ratio(old.sentences_with_entities, old.sentences),
            _ratio(new.sentences_with_entities, new.sentences),
        ),
        "vocabulary": {
            "from": len(old.vocabulary),
            "to": len(new.vocabulary),
            "shared": len(shared),
            "jaccard": round(_ratio(len(shared), len(union)), 4),
            "new_token_share": round(_oov(new.vocabulary, old.vocabulary), 4),
        },
        "pmids": {
            "added": len(added),
            "removed": len(removed),
            "added_sample": added[:SAMPLE],
            "removed_sample": removed[:SAMPLE],
        },
    }


def compare(
    old: dict[str, SplitProfile],
    new: dict[str, SplitProfile],
    *,
    reference: dict[str, Any] | None = None,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The drift document from `old` to `new` (both `profile()`s).

    `reference` and `current` describe the two versions (e.g. `{"data_version": ..., "why": ...}`) and are
    copied into the document as `from` and `to`.
    """
    splits = {split: compare_split(old[split], new[split]) for split in SPLITS}
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "from": dict(reference or {}),
        "to": dict(current or {}),
        "splits": splits,
        "test_oov": _change(
            _oov(old[FROZEN_SPLIT].vocabulary, old["train"].vocabulary),
            _oov(new[FROZEN_SPLIT].vocabulary, new["train"].vocabulary),
        ),
    }
    doc["warnings"] = warnings(doc)
    return doc


def drift(
    old_dir: Path,
    new_dir: Path,
    *,
    reference: dict[str, Any] | None = None,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`compare(profile(old_dir), profile(new_dir), ...)`: the drift between two data directories."""
    return compare(profile(old_dir), profile(new_dir), reference=reference, current=current)


def warnings(doc: dict[str, Any]) -> list[str]:
    """What a person should look at before trusting a comparison across these two versions."""
    out = []
    test = doc["splits"][FROZEN_SPLIT]
    if test["changed"]:
        out.append(
            f"the test split changed ({_counts(test)}): champions are only comparable on one test "
            "split; a champion is re-scored on the new one, and earlier scores do not compare"
        )
    for split, s in doc["splits"].items():
        if s["pmids"]["removed"]:
            out.append(
                f"{split}: {s['pmids']['removed']} PMIDs removed (e.g. {s['pmids']['removed_sample'][0]})"
            )
        for c, share in s["class_share"].items():
            if s["abstracts"]["from"] and abs(share["change"]) >= SHARE_MOVE:
                out.append(
                    f"{split}: the share of class {class_name(c)} moved "
                    f"{share['from']:.1%} -> {share['to']:.1%}"
                )
        eps = s["entities_per_sentence"]
        if eps["from"] and abs(eps["change"]) / eps["from"] >= DENSITY_MOVE:
            out.append(f"{split}: entities per sentence moved {eps['from']:.3f} -> {eps['to']:.3f}")
    return out


def _counts(s: dict[str, Any]) -> str:
    p = s["pmids"]
    return (
        f"{s['abstracts']['from']} -> {s['abstracts']['to']} abstracts, "
        f"{s['sentences']['from']} -> {s['sentences']['to']} sentences, "
        f"+{p['added']} / -{p['removed']} PMIDs"
    )


def _arrow(c: dict[str, Any], fmt: str = "{}") -> str:
    if c["change"] == 0:
        return fmt.format(c["to"])
    sign = "+" if c["change"] > 0 else ""
    return f"{fmt.format(c['from'])} → {fmt.format(c['to'])} ({sign}{fmt.format(c['change'])})"


def _shares(shares: dict[str, dict[str, float]]) -> str:
    """`18 / 42 / 40%`, or `18 / 42 / 40% → 23 / 40 / 37%` when a share moved."""

    def row(key: str) -> str:
        return " / ".join(f"{shares[str(c)][key]:.1%}".removesuffix("%") for c in CLASS_LABELS) + "%"

    moved = any(v["change"] for v in shares.values())
    return f"{row('from')} → {row('to')}" if moved else row("to")


def _describe(side: dict[str, Any]) -> str:
    version = side.get("data_version") or side.get("path") or "unknown version"
    why = side.get("why")
    return f"`{version}`" + (f" ({why})" if why else "")


def to_markdown(doc: dict[str, Any], heading: str = "##") -> str:
    """The drift document as a Markdown section (a table per measure, then the warnings)."""
    lines = [
        f"{heading} Data drift",
        "",
        f"From {_describe(doc['from'])} to {_describe(doc['to'])}.",
        "",
        "| split | changed | abstracts | sentences | entities | entities / sentence | class shares ("
        + " / ".join(class_name(c) for c in CLASS_LABELS)
        + ") | vocabulary (shared, Jaccard, new tokens) | PMIDs added / removed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, s in doc["splits"].items():
        v, p = s["vocabulary"], s["pmids"]
        lines.append(
            f"| {split} | {'yes' if s['changed'] else 'no'} | {_arrow(s['abstracts'])} | "
            f"{_arrow(s['sentences'])} | {_arrow(s['entities'])} | "
            f"{_arrow(s['entities_per_sentence'], '{:.3f}')} | {_shares(s['class_share'])} | "
            f"{v['from']} → {v['to']} types ({v['shared']} shared, {v['jaccard']:.2f}, "
            f"{v['new_token_share']:.1%}) | +{p['added']} / -{p['removed']} |"
        )
    oov = doc["test_oov"]
    lines += [
        "",
        f"Test tokens outside the train vocabulary: {_arrow(oov, '{:.1%}')}. "
        "New tokens: the share of the newer version's token occurrences whose type the older one lacks.",
    ]
    if doc["warnings"]:
        lines += ["", *(f"- **warning**: {w}" for w in doc["warnings"])]
    else:
        lines += ["", "No drift warnings."]
    return "\n".join(lines) + "\n"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """A few log lines: what changed per split, then the warnings."""
    out = [f"drift from {_describe(doc['from'])} to {_describe(doc['to'])}:"]
    for split, s in doc["splits"].items():
        out.append(f"  {split:5} " + (_counts(s) if s["changed"] else "unchanged"))
    out += [f"  warning: {w}" for w in doc["warnings"]]
    return out
