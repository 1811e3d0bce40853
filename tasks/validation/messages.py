"""Turning GX results into `Failure`s: one per rule and file, its message one sentence about the first
offending line (`file:line`), with the first lines and values and the full count.

Each expectation carries `meta` = {rule, file, column, ...}; `rule` picks the message below. GX's
COMPLETE result lists the unexpected rows with their index columns (`line`, and `file` for the
cross-split rules), which is how a leak names the other file's line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tasks.validation.report import Failure
from tasks.validation.rules import MAX_LINES, NER_LEAK_MIN_TOKENS, iob_error
from tasks.vocab import TAGS

Row = dict[str, Any]
Index = dict[Any, list[tuple[str, int]]]  # value -> [(file, line)] over all unexpected rows of one result


def failures_from(result: Any) -> list[Failure]:
    """The failures of one unsuccessful GX expectation result (an ExpectationValidationResult)."""
    cfg = result.expectation_config
    meta = dict(cfg.meta or {})
    rule, default_file, column = meta["rule"], meta.get("file"), meta.get("column")
    severity = "warning" if str(getattr(cfg.severity, "value", cfg.severity)) == "warning" else "error"
    rows = result.result.get("unexpected_index_list")
    if rows is None:
        message, values = _aggregate_message(rule, result.result, meta)
        return [
            Failure(
                expectation=cfg.type,
                file=default_file,
                message=message,
                values=values,
                severity=severity,
                rule=rule,
            )
        ]
    index: Index = defaultdict(list)
    by_file: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        row = {k: (int(v) if k == "line" else v) for k, v in row.items()}
        file = row.get("file", default_file)
        index[row.get(column)].append((file, row["line"]))
        by_file[file].append(row)
    out = []
    for file, frows in by_file.items():
        frows.sort(key=lambda r: r["line"])
        out.append(
            Failure(
                expectation=cfg.type,
                file=file,
                message=MESSAGES[rule](frows[0], meta, index, file),
                lines=[r["line"] for r in frows[:MAX_LINES]],
                values=[_short(r.get(column)) for r in frows[:MAX_LINES]],
                count=len(frows),
                severity=severity,
                rule=rule,
            )
        )
    return out


def _short(value: Any, width: int = 80) -> str:
    s = "" if value is None else str(value)
    return s if len(s) <= width else s[: width - 3] + "..."


def _others(index: Index, value: Any, file: str, line: int, same_file: bool) -> str:
    places = [(f, n) for f, n in index.get(value, []) if (f == file) == same_file and (f, n) != (file, line)]
    if same_file:
        return ", ".join(str(n) for _, n in places[:5])
    return ", ".join(f"{f}:{n}" for f, n in places[:3])


def _bad_tag(tags: str) -> str:
    for i, tag in enumerate(tags.split(" "), start=1):
        if tag not in TAGS:
            return f"tag {tag!r} (token {i}) not in {{B,I,O}}"
    return "malformed tag line"


def _token_format(text: str) -> str:
    if "\t" in text:
        return "text contains a tab"
    if text != text.strip(" ") or "  " in text:
        return "empty token (leading, trailing or double space)"
    return "tokens must be separated by single spaces (other whitespace found)"


def _iob(tags: str) -> str:
    err = iob_error(tags)
    return f"I at token {err[0]} {err[1]}" if err else "invalid IOB sequence"


def _counts(row: Row, meta: dict) -> str:
    n_tok, n_tag = row["text"].count(" ") + 1, row["labels"].count(" ") + 1
    return f"{n_tag} tags for {n_tok} tokens in {meta['other_file']}:{row['line']}"


# rule -> (row, meta, value index, file) -> message about that row
MESSAGES: dict[str, Callable[[Row, dict, Index, str], str]] = {
    "blank_line": lambda r, m, ix, f: "blank line",
    "tc3_fields": lambda r, m, ix, f: f"{r['fields']} tab-separated fields, expected 2 (text<TAB>label)",
    "tc3_text_empty": lambda r, m, ix, f: "empty text",
    "tc3_text_tab": lambda r, m, ix, f: "text contains a tab",
    "tc3_label": lambda r, m, ix, f: f"label {r['label']!r} not in {{0,1,2}}",
    "tc3_duplicate": lambda r, m, ix, f: (
        f"duplicate text (same as line {_others(ix, r['text'], f, r['line'], True)})"
    ),
    "ids_pmid": lambda r, m, ix, f: f"PMID {r['pmid']!r} is not a number",
    "ids_duplicate": lambda r, m, ix, f: (
        f"PMID {r['pmid']} repeated (also line {_others(ix, r['pmid'], f, r['line'], True)})"
    ),
    "tc3_leak_text": lambda r, m, ix, f: (
        f"text also in {_others(ix, r['text'], f, r['line'], False)} (leakage between splits)"
    ),
    "tc3_leak_pmid": lambda r, m, ix, f: (
        f"PMID {r['pmid']} also in {_others(ix, r['pmid'], f, r['line'], False)} (leakage between splits)"
    ),
    "ner3_missing_line": lambda r, m, ix, f: (
        f"line missing: {m['text_file']} has {m['n_text']} lines, {m['labels_file']} has {m['n_labels']}"
    ),
    "ner3_text_format": lambda r, m, ix, f: _token_format(r["text"]),
    "ner3_tag_set": lambda r, m, ix, f: _bad_tag(r["labels"]),
    "ner3_iob": lambda r, m, ix, f: _iob(r["labels"]),
    "ner3_counts": lambda r, m, ix, f: _counts(r, m),
    "ner3_duplicate": lambda r, m, ix, f: (
        f"sentence repeated within the split (also line {_others(ix, r['text'], f, r['line'], True)})"
    ),
    "ner3_leak": lambda r, m, ix, f: (
        f"sentence also in {_others(ix, r['text'], f, r['line'], False)} (leakage between splits)"
    ),
    "ner3_leak_short": lambda r, m, ix, f: (
        f"short sentence also in {_others(ix, r['text'], f, r['line'], False)} "
        f"(under {NER_LEAK_MIN_TOKENS} tokens: boilerplate, not counted as leakage)"
    ),
}


def _aggregate_message(rule: str, result: dict, meta: dict) -> tuple[str, list[str]]:
    """The message of a whole-table rule (no unexpected rows to point at)."""
    if rule == "tc3_classes":
        missing = sorted(str(v) for v in result.get("partial_missing_list") or [])
        return f"class {', '.join(missing)} absent from the split (every split needs 0, 1 and 2)", missing
    if rule == "ner3_tags_present":
        missing = sorted(str(v) for v in result.get("partial_missing_list") or [])
        return f"tag {', '.join(missing)} absent from the split (every split needs B, I and O)", missing
    if rule == "ids_row_count":
        got = result.get("observed_value")
        return (
            f"{got} lines, but {meta['other_file']} has {meta['expected']} "
            "(the .ids file must be line-aligned)",
            [str(got)],
        )
    return f"{rule} failed (observed {result.get('observed_value')!r})", []
