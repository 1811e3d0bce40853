"""The loop's data versions, made from the NCBI release: seeded halves of the train split (v1, then the other
half added with `data add` for v2) and seeded annotation noise that passes the schema (v3).

Pure functions over PubTator text and ner3 / tc3 lines, plus `add_noise()`, which writes a noisy train split
into a data directory the way `data add` writes (staged beside it, validated with the GX suites, swapped in;
MANIFEST.json's counts and digests follow, so the noise looks like any other data version).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.corpus import read_lines
from tasks.datasets import PUBTATOR_FILES, file_digests, manifest_bytes, split_counts
from tasks.errors import DataError, UsageError
from tasks.files import staged_dir
from tasks.vocab import CLASS_LABELS

MANIFEST = "MANIFEST.json"


# ------------------------------------------------------------------------------------ PubTator halves
def pubtator_blocks(text: str, where: str) -> dict[str, list[str]]:
    """The documents of a PubTator file as raw blocks by PMID, in file order (a PMID listed twice keeps
    both blocks, so `data import` / `data add` see exactly what the release has)."""
    blocks: dict[str, list[str]] = {}
    line = 1
    for block in text.split("\n\n"):
        stripped = block.strip("\n")
        if stripped:
            pmid, sep, _ = stripped.partition("|")
            if not sep or not pmid.isdigit():
                raise DataError(f"{where}:{line}: expected a title line 'PMID|t|title'.")
            blocks.setdefault(pmid, []).append(stripped)
        line += block.count("\n") + 2
    if not blocks:
        raise DataError(f"{where}:1: no PubTator document in the file.")
    return blocks


def sample_pmids(pmids: Sequence[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """`share` of the PMIDs (rounded, seeded) and the rest, each in PMID string order."""
    if not 0.0 < share < 1.0:
        raise UsageError(f"the share of PMIDs to keep must be between 0 and 1, got {share}.")
    shuffled = sorted(set(pmids))
    random.Random(seed).shuffle(shuffled)
    k = round(len(shuffled) * share)
    return sorted(shuffled[:k]), sorted(shuffled[k:])


def pubtator_text(blocks: dict[str, list[str]], pmids: Sequence[str]) -> str:
    """The blocks of `pmids`, in the order they had in the source, as a PubTator file."""
    keep = set(pmids)
    return "".join(b + "\n\n" for pmid, bs in blocks.items() if pmid in keep for b in bs)


@dataclass(frozen=True)
class Sources:
    """Where `write_sources` put the loop's PubTator files and which PMIDs each holds."""

    first: Path  # a release-shaped folder: the train half for v1, dev and test as released
    added: Path  # the other train half: `data add` for v2
    whole: Path  # a release-shaped folder with all of it (the release itself unless sampled)
    first_pmids: list[str]
    added_pmids: list[str]

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


def write_sources(
    release: Path, out: Path, *, share: float = 0.5, seed: int = 0, sample: float | None = None
) -> Sources:
    """Split the release's train documents into a seeded `share` (v1's train) and the rest (the file added
    for v2), so that v1 + `data add` of the rest holds exactly the release's train documents.

    Args:
        release: the folder with the three NCBI*set_corpus.txt files.
        out: a new folder: `first/` (release-shaped, for `data import`) and `train-added.txt`.
        share: the share of train PMIDs in v1.
        seed: the seed of both draws.
        sample: keep only this seeded share of the train and dev documents first (a smaller corpus for
            tests); the test split stays whole: it is what the gate measures with.
    """
    out.mkdir(parents=True, exist_ok=False)
    first, whole = out / "first", (out / "whole" if sample is not None else release)
    first.mkdir()
    if sample is not None:
        whole.mkdir()
    halves: tuple[list[str], list[str]] = ([], [])
    for split, name in PUBTATOR_FILES.items():
        src = release / name
        blocks = pubtator_blocks("\n".join(read_lines(src, str(src))) + "\n", str(src))
        pmids = list(blocks)
        if sample is not None:
            if split != "test":
                pmids, _ = sample_pmids(pmids, sample, seed)
            (whole / name).write_text(pubtator_text(blocks, pmids), encoding="utf-8")
        if split == "train":
            halves = sample_pmids(pmids, share, seed)
            (first / name).write_text(pubtator_text(blocks, halves[0]), encoding="utf-8")
            (out / "train-added.txt").write_text(pubtator_text(blocks, halves[1]), encoding="utf-8")
        else:
            shutil.copyfile(whole / name, first / name)
    return Sources(first, out / "train-added.txt", whole, *halves)


# ------------------------------------------------------------------------------------------- noise
def entity_spans(tags: Sequence[str]) -> list[tuple[int, int]]:
    """The entities of one valid IOB2 sentence as [start, end) token spans: a B and the I's after it.

    By hand: a loop over B/I/O (the data is validated IOB2); seqeval is not an orchestration dependency.
    """
    spans: list[tuple[int, int]] = []
    for i, tag in enumerate(tags):
        if tag == "B":
            spans.append((i, i + 1))
        elif tag == "I" and spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
    return spans


@dataclass(frozen=True)
class SpanNoise:
    """What `span_noise` did to the entities of a split."""

    entities: int  # before
    chosen: int  # round(fraction * entities)
    dropped: int  # tags set to O
    shifted: int  # moved one token left or right (same length)


def span_noise(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[str], SpanNoise]:
    """Drop or shift by one token a seeded `fraction` of the entities of ner3 label lines.

    Each chosen entity is dropped or shifted with equal chance; a shift goes left or right (seeded) onto
    tokens tagged O only, so the result stays valid IOB2 with the same number of tokens per line; an entity
    that cannot move either way is dropped instead. Spans are changed in sentence order, each against the
    tags as already changed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise UsageError(f"the noise fraction must be between 0 and 1, got {fraction}.")
    rng = random.Random(seed)
    tags = [line.split(" ") for line in labels]
    spans = [(i, s, e) for i, t in enumerate(tags) for s, e in entity_spans(t)]
    chosen = sorted(rng.sample(range(len(spans)), round(fraction * len(spans))))
    dropped = shifted = 0
    for k in chosen:
        i, s, e = spans[k]
        t = tags[i]
        moves = [d for d in rng.sample((-1, 1), 2) if _can_shift(t, s, e, d)]
        shift = rng.random() < 0.5
        t[s:e] = ["O"] * (e - s)
        if shift and moves:
            d = moves[0]
            t[s + d : e + d] = ["B"] + ["I"] * (e - s - 1)
            shifted += 1
        else:
            dropped += 1
    return [" ".join(t) for t in tags], SpanNoise(len(spans), len(chosen), dropped, shifted)


def _can_shift(tags: list[str], start: int, end: int, step: int) -> bool:
    """The entity [start, end) can move by `step` onto an O token without touching another entity."""
    if step < 0:
        return start > 0 and tags[start - 1] == "O"
    return end < len(tags) and tags[end] == "O"


def label_noise(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], int]:
    """A seeded `fraction` of the labels moved to another class (each of the other two with equal chance)."""
    if not 0.0 <= fraction <= 1.0:
        raise UsageError(f"the noise fraction must be between 0 and 1, got {fraction}.")
    rng = random.Random(seed)
    out = list(labels)
    chosen = sorted(rng.sample(range(len(out)), round(fraction * len(out))))
    for i in chosen:
        out[i] = rng.choice([c for c in CLASS_LABELS if c != out[i]])
    return out, len(chosen)


@dataclass(frozen=True)
class Noise:
    """What `add_noise` changed in the train split."""

    split: str
    span_fraction: float
    label_fraction: float
    seed: int
    spans: SpanNoise
    relabelled: int  # tc3 rows moved to another class
    rows: int

    def to_dict(self) -> dict:
        return asdict(self)


def add_noise(data: Path, *, span_fraction: float, label_fraction: float, seed: int) -> Noise:
    """Rewrite the train split of `data` with seeded annotation noise: `span_fraction` of its entities
    dropped or shifted by one token (ner3) and `label_fraction` of its abstracts relabelled (tc3).

    Counts and digests in MANIFEST.json follow the new files (nothing in it says noise was added: the data
    version must look like any other). Written as `data add` writes: staged beside DATA, validated with the
    GX suites, swapped in; on any error DATA is unchanged.
    """
    from tasks.validation import validate_dir  # GX: only when something is about to be written

    split = "train"
    data = Path(data)
    manifest_path = data / MANIFEST
    if not manifest_path.is_file():
        raise UsageError(f"{data}: no {MANIFEST} (expected a data directory written by `data import`).")
    manifest = json.loads(manifest_path.read_bytes())
    tsv, labels_file = data / "tc3" / f"{split}.tsv", data / "ner3" / f"labels_{split}.txt"
    rows = [line.rpartition("\t") for line in read_lines(tsv, str(tsv))]
    new_labels, relabelled = label_noise([int(y) for _, _, y in rows], label_fraction, seed)
    ner3, spans = span_noise(read_lines(labels_file, str(labels_file)), span_fraction, seed)
    files = {
        f"tc3/{split}.tsv": "".join(f"{t}\t{y}\n" for (t, _, _), y in zip(rows, new_labels, strict=True)),
        f"ner3/labels_{split}.txt": "".join(line + "\n" for line in ner3),
    }
    encoded = {k: v.encode() for k, v in files.items()}
    mentions = manifest["splits"][split]["pubtator"]["mentions"]
    manifest["splits"][split] = split_counts(new_labels, ner3, mentions)
    manifest["files"] = {**manifest.get("files", {}), **file_digests(encoded)}
    encoded[MANIFEST] = manifest_bytes(manifest)
    with staged_dir(data, replace=True) as stage:
        shutil.copytree(data, stage, dirs_exist_ok=True, symlinks=True)
        for rel, content in encoded.items():
            (stage / rel).unlink(missing_ok=True)  # DVC may have left the copy read-only
            (stage / rel).write_bytes(content)
        report = validate_dir(stage)
        if not report.valid:
            raise DataError(f"the noisy train split would not validate: {report.error_message()}")
    return Noise(split, span_fraction, label_fraction, seed, spans, relabelled, len(rows))
