"""The dataframes GX checks: one row per line of a file (or line pair), with its 1-based `line` number,
so that GX's COMPLETE result names the offending lines. Plus the counts the report prints.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from tasks.validation.rules import LABELS


def _blank_to_none(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def tc3_frame(lines: list[str]) -> pd.DataFrame:
    """`record` (the raw line), `fields` (tab-separated field count), `text`, `label`."""
    rows = []
    for n, rec in enumerate(lines, start=1):
        if not rec.strip():  # blank: only the blank-line rule judges it (map expectations skip nulls)
            rows.append((n, rec, None, None, None))
            continue
        fields = rec.count("\t") + 1
        text, label = rec.rsplit("\t", 1) if fields > 1 else (rec, None)
        rows.append((n, rec, fields, text, label))
    return pd.DataFrame(rows, columns=["line", "record", "fields", "text", "label"]).astype(
        {"fields": object}
    )


def ids_frame(lines: list[str]) -> pd.DataFrame:
    """`record` (the raw line) and `pmid` (None when blank)."""
    return pd.DataFrame(
        [(n, rec, _blank_to_none(rec)) for n, rec in enumerate(lines, start=1)],
        columns=["line", "record", "pmid"],
    )


def ner3_frame(text_lines: list[str], label_lines: list[str]) -> pd.DataFrame:
    """The text and labels files side by side; a line one file lacks is None in the `_raw` column."""
    n = max(len(text_lines), len(label_lines))
    rows = []
    for i in range(n):
        t = text_lines[i] if i < len(text_lines) else None  # None: the file has no such line
        lab = label_lines[i] if i < len(label_lines) else None
        rows.append((i + 1, t, lab, _blank_to_none(t), _blank_to_none(lab)))
    return pd.DataFrame(rows, columns=["line", "text_raw", "labels_raw", "text", "labels"])


def tags_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Each distinct tag of a labels file and its first line (input of the tag-presence rule)."""
    first: dict[str, int] = {}
    for n, tags in zip(frame["line"], frame["labels"], strict=True):
        if isinstance(tags, str):  # missing and blank lines are NaN here
            for tag in tags.split(" "):
                first.setdefault(tag, n)
    return pd.DataFrame(sorted(first.items()), columns=["tag", "line"])


def count_tc3(frame: pd.DataFrame) -> dict[str, Any]:
    per = Counter(frame["label"].dropna())
    return {"rows": int(frame["record"].notna().sum()), "per_class": {c: per.get(c, 0) for c in LABELS}}


def count_ner3(frame: pd.DataFrame) -> dict[str, Any]:
    tags = Counter(t for line in frame["labels"].dropna() for t in line.split(" "))
    return {
        "sentences": int(frame["text_raw"].notna().sum()),
        "tokens": int(sum(tags.values())),
        "entities": int(tags.get("B", 0)),
    }
