"""The data directory's layout and the small pure rules shared by the checks and their messages.

Standard library only: the messages and the GX expectations both use these without importing GX.
"""

from __future__ import annotations

from tasks.vocab import CLASS_LABELS

LABELS = tuple(str(c) for c in CLASS_LABELS)
MAX_LINES = 10  # line numbers (and values) kept per failure; `count` has the full number
NER_LEAK_MIN_TOKENS = 12  # the release shares 7 sentences across splits, the longest has 11 tokens
MANIFEST = "MANIFEST.json"


def tc3_file(split: str) -> str:
    return f"tc3/{split}.tsv"


def ids_file(split: str) -> str:
    return f"tc3/{split}.ids"


def text_file(split: str) -> str:
    return f"ner3/text_{split}.txt"


def labels_file(split: str) -> str:
    return f"ner3/labels_{split}.txt"


def iob_error(tags: str) -> tuple[int, str] | None:
    """The first IOB2 violation in a space-separated tag line: (1-based token index, why), or None."""
    prev = "O"
    for i, tag in enumerate(tags.split(" "), start=1):
        if tag == "I" and prev == "O":
            return i, "starts the line" if i == 1 else "follows O"
        prev = tag
    return None
