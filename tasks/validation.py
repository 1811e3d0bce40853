"""`validate`: Great Expectations suites for a data directory (tc3 + ner3), before anything trains on it.

Checks, in two layers that report into one `ValidationReport`:

- bytes, in plain Python (GX only ever sees a dataframe, so it cannot tell a BOM, a CR or an undecodable
  byte from text): every file present and non-empty, UTF-8, no byte-order mark, LF line endings.
  A file failing here is not parsed further (its lines would be noise).
- rows, in GX 1.x (ephemeral context, pandas datasource, one dataframe asset and suite per file or split
  pair, built-in expectations plus three custom map expectations in `tasks.validation_gx`). Each
  dataframe carries the 1-based `line` number, and GX's COMPLETE result reports unexpected rows with it.

Rules: tc3 rows are `text<TAB>label` with a non-empty text, no tab in it and a label in {0,1,2}; every
class in every split; no blank lines; no duplicate text within a split; `tc3/{split}.ids` (when present)
line-aligned, numeric and unique. ner3 text and labels files have equal line counts, one tag per token,
tags in {B,I,O} and each of them in every split, no I starting a line or following an O, tokens
separated by single spaces. No tc3 text, PMID or ner3 sentence in two splits (leakage).

Two rules are warnings because the official release breaks them: ner3 sentences repeated within a
split (train repeats 14, e.g. "RESULTS ." and an FMF sentence that opens two abstracts; test 3), and
ner3 sentences shorter than `NER_LEAK_MIN_TOKENS` shared between splits (section heads such as
"METHODS .", and one series title shared by PMIDs 777027 and 932197); a shared sentence of that length
or longer is leakage. MANIFEST.json must be a JSON object; a data file whose sha256 differs from the one
it lists is a warning (edited after import).

The data directory is only read, never written.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.errors import DataError, UsageError
from tasks.files import atomic_write_text
from tasks.provenance import sha256_file
from tasks.vocab import CLASS_LABELS, SPLITS, TAGS

LABELS = tuple(str(c) for c in CLASS_LABELS)
MAX_LINES = 10  # line numbers (and values) kept per failure; `count` has the full number
NER_LEAK_MIN_TOKENS = 12  # the release shares 7 sentences across splits, the longest has 11 tokens
BOM = b"\xef\xbb\xbf"


def tc3_file(split: str) -> str:
    return f"tc3/{split}.tsv"


def ids_file(split: str) -> str:
    return f"tc3/{split}.ids"


def text_file(split: str) -> str:
    return f"ner3/text_{split}.txt"


def labels_file(split: str) -> str:
    return f"ner3/labels_{split}.txt"


MANIFEST = "MANIFEST.json"
REQUIRED_FILES = (
    *(tc3_file(s) for s in SPLITS),
    *(f for s in SPLITS for f in (text_file(s), labels_file(s))),
    MANIFEST,
)


@dataclass
class Failure:
    """One broken rule in one file: where (first lines), what (values), and which expectation said so."""

    expectation: str  # GX expectation type, or `expect_file_...` for the byte-level checks
    file: str  # relative to the data directory, e.g. tc3/train.tsv
    message: str  # about the first offending line (or the whole file when `lines` is empty)
    lines: list[int] = field(default_factory=list)  # 1-based, the first MAX_LINES
    values: list[str] = field(default_factory=list)  # offending values, aligned with `lines`
    count: int = 1  # offending rows in all
    severity: str = "error"  # or "warning" (reported, does not make the directory invalid)
    rule: str = ""
    engine: str = "gx"  # or "python" (byte-level)

    def line_text(self) -> str:
        """`file:line: message (expectation)`, the form the summary prints."""
        where = f"{self.file}:{self.lines[0]}" if self.lines else self.file
        extra = ""
        if self.count > 1:
            extra = f"; {self.count} rows"
            if len(self.lines) > 1:
                extra += " at lines " + ", ".join(str(n) for n in self.lines)
                extra += ", ..." if self.count > len(self.lines) else ""
        return f"{where}: {self.message} ({self.expectation}{extra})"


@dataclass
class ValidationReport:
    """The outcome of `validate_dir`: valid when no error-severity failure was found."""

    path: str
    valid: bool
    failures: list[Failure]
    warnings: list[Failure]
    counts: dict[str, dict[str, dict[str, Any]]]
    seconds: float  # the checks, GX included
    import_seconds: float = 0.0  # importing GX and pandas (0 when already imported in this process)
    gx_version: str = ""
    docs_index: str | None = None

    def summary(self) -> str:
        """Counts per split and class, each failure on one line, then the warnings and the verdict."""
        out = []
        for split in SPLITS:
            tc3 = self.counts.get("tc3", {}).get(split)
            ner3 = self.counts.get("ner3", {}).get(split)
            parts = []
            if tc3:
                classes = ", ".join(f"{k}: {v}" for k, v in tc3["per_class"].items())
                parts.append(f"tc3 {tc3['rows']} rows ({classes})")
            if ner3:
                parts.append(
                    f"ner3 {ner3['sentences']} sentences, {ner3['tokens']} tokens, "
                    f"{ner3['entities']} entities"
                )
            out.append(f"{split:<5} " + (" | ".join(parts) if parts else "not read"))
        out += [f.line_text() for f in self.failures]
        out += [f"warning: {f.line_text()}" for f in self.warnings]
        verdict = "valid" if self.valid else "INVALID"
        out.append(
            f"{verdict}: {self.path} ({len(self.failures)} failures, {len(self.warnings)} warnings, "
            f"{self.seconds:.2f} s)"
        )
        if self.docs_index:
            out.append(f"data docs: {self.docs_index}")
        return "\n".join(out)

    def error_message(self) -> str:
        """One sentence for stderr / an exception: the first failure and how many more."""
        if self.valid:
            return f"{self.path} is valid."
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return f"{self.path} is invalid: {self.failures[0].line_text()}{more}"

    def raise_for_failures(self) -> None:
        """Raise DataError (exit 1) when invalid: what a pipeline step calls to stop the run."""
        if not self.valid:
            raise DataError(self.error_message())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = 1
        return d


def write_report(report: ValidationReport, path: Path) -> None:
    """Write the JSON report atomically (a temp file beside it, then a rename)."""
    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc}).") from exc


# --- byte level ---------------------------------------------------------------------------------------


def _byte_failure(rule: str, rel: str, message: str, lines: list[int] | None = None, **kw: Any) -> Failure:
    return Failure(
        expectation=rule, file=rel, message=message, lines=lines or [], rule=rule, engine="python", **kw
    )


def _read_text(root: Path, rel: str, failures: list[Failure]) -> str | None:
    """The file's text if it exists, is non-empty, valid UTF-8 without BOM and LF-only; else None."""
    path = root / rel
    if not path.exists():
        failures.append(_byte_failure("expect_file_to_exist", rel, "file is missing"))
        return None
    if not path.is_file():
        failures.append(_byte_failure("expect_file_to_exist", rel, "not a regular file"))
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc}).") from exc
    if not data:
        failures.append(_byte_failure("expect_file_to_be_non_empty", rel, "file is empty"))
        return None
    ok = True
    if data.startswith(BOM):
        failures.append(
            _byte_failure(
                "expect_file_to_have_no_bom", rel, "starts with a UTF-8 byte-order mark (EF BB BF)", [1]
            )
        )
        ok = False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.end]
        failures.append(
            _byte_failure(
                "expect_file_to_be_utf8",
                rel,
                f"byte 0x{bad[0]:02x} at column {col} is not valid UTF-8",
                [line],
                values=[bad.hex()],
            )
        )
        return None
    if "\r" in text:
        cr = [i for i, ln in enumerate(text.split("\n"), start=1) if "\r" in ln]
        first = text.split("\n")[cr[0] - 1]
        what = "CRLF line ending (lines must end with LF only)" if first.endswith("\r") else "carriage return"
        failures.append(
            _byte_failure("expect_file_to_have_lf_line_endings", rel, what, cr[:MAX_LINES], count=len(cr))
        )
        ok = False
    return text if ok else None


def _lines(text: str) -> list[str]:
    parts = text.split("\n")  # only LF: str.splitlines would also split on U+2028, FF, ...
    if parts[-1] == "":
        parts.pop()  # the final newline terminates the last line
    return parts


# --- dataframes ---------------------------------------------------------------------------------------


def _blank_to_none(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _tc3_frame(lines: list[str]) -> Any:
    import pandas as pd

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


def _ids_frame(lines: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [(n, rec, _blank_to_none(rec)) for n, rec in enumerate(lines, start=1)],
        columns=["line", "record", "pmid"],
    )


def _ner3_frame(text_lines: list[str], label_lines: list[str]) -> Any:
    import pandas as pd

    n = max(len(text_lines), len(label_lines))
    rows = []
    for i in range(n):
        t = text_lines[i] if i < len(text_lines) else None  # None: the file has no such line
        lab = label_lines[i] if i < len(label_lines) else None
        rows.append((i + 1, t, lab, _blank_to_none(t), _blank_to_none(lab)))
    return pd.DataFrame(rows, columns=["line", "text_raw", "labels_raw", "text", "labels"])


def _tags_frame(frame: Any) -> Any:
    """Each distinct tag of a labels file and its first line (input of the tag-presence rule)."""
    import pandas as pd

    first: dict[str, int] = {}
    for n, tags in zip(frame["line"], frame["labels"], strict=True):
        if isinstance(tags, str):  # missing and blank lines are NaN here
            for tag in tags.split(" "):
                first.setdefault(tag, n)
    return pd.DataFrame(sorted(first.items()), columns=["tag", "line"])


# --- messages -----------------------------------------------------------------------------------------


def _short(value: Any, width: int = 80) -> str:
    s = "" if value is None else str(value)
    return s if len(s) <= width else s[: width - 3] + "..."


Row = dict[str, Any]
Index = dict[Any, list[tuple[str, int]]]  # value -> [(file, line)] over all unexpected rows of one result


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
    from tasks.validation_gx import iob_error

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


def _failures_from(result: Any) -> list[Failure]:
    cfg = result.expectation_config
    meta = dict(cfg.meta or {})
    rule, default_file, column = meta["rule"], meta.get("file"), meta.get("column")
    severity = "warning" if str(getattr(cfg.severity, "value", cfg.severity)) == "warning" else "error"
    rows = result.result.get("unexpected_index_list")
    if rows is None:
        message, values = _aggregate_message(rule, result.result, meta)
        return [Failure(cfg.type, default_file, message, [], values, 1, severity, rule)]
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
        message = MESSAGES[rule](frows[0], meta, index, file)
        lines = [r["line"] for r in frows[:MAX_LINES]]
        values = [_short(r.get(column)) for r in frows[:MAX_LINES]]
        out.append(Failure(cfg.type, file, message, lines, values, len(frows), severity, rule))
    return out


# --- suites -------------------------------------------------------------------------------------------


def _tc3_suite(split: str) -> list[Any]:
    import great_expectations.expectations as gxe

    f = tc3_file(split)

    def meta(rule: str, column: str) -> dict:
        return {"rule": rule, "file": f, "column": column}

    return [
        gxe.ExpectColumnValuesToMatchRegex(
            column="record", regex=r"\S", meta=meta("blank_line", "record"), description="No blank lines."
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="fields",
            value_set=[2],
            meta=meta("tc3_fields", "fields"),
            description="Exactly two tab-separated fields: text, label.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="text",
            regex=r"\S",
            meta=meta("tc3_text_empty", "text"),
            description="The text is not empty.",
        ),
        gxe.ExpectColumnValuesToNotMatchRegex(
            column="text", regex="\t", meta=meta("tc3_text_tab", "text"), description="The text has no tab."
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="label",
            value_set=list(LABELS),
            meta=meta("tc3_label", "label"),
            description="Label in {0,1,2}.",
        ),
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="label",
            value_set=list(LABELS),
            meta=meta("tc3_classes", "label"),
            description="Every class occurs in the split.",
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="text", meta=meta("tc3_duplicate", "text"), description="No abstract twice in a split."
        ),
    ]


def _ids_suite(split: str, n_rows: int) -> list[Any]:
    import great_expectations.expectations as gxe

    f = ids_file(split)
    return [
        gxe.ExpectColumnValuesToMatchRegex(
            column="record", regex=r"\S", meta={"rule": "blank_line", "file": f, "column": "record"}
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="pmid", regex=r"^[0-9]+$", meta={"rule": "ids_pmid", "file": f, "column": "pmid"}
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="pmid", meta={"rule": "ids_duplicate", "file": f, "column": "pmid"}
        ),
        gxe.ExpectTableRowCountToEqual(
            value=n_rows,
            meta={"rule": "ids_row_count", "file": f, "other_file": tc3_file(split), "expected": n_rows},
            description="One PMID per tc3 row, same order.",
        ),
    ]


def _ner3_suite(split: str, n_text: int, n_labels: int) -> list[Any]:
    import great_expectations.expectations as gxe

    from tasks.validation_gx import (
        ExpectColumnPairValuesToHaveEqualTokenCounts,
        ExpectColumnValuesToBeValidIobSequence,
    )

    tf, lf = text_file(split), labels_file(split)
    sizes = {"text_file": tf, "labels_file": lf, "n_text": n_text, "n_labels": n_labels}
    return [
        gxe.ExpectColumnValuesToNotBeNull(
            column="text_raw", meta={"rule": "ner3_missing_line", "file": tf, "column": "text_raw", **sizes}
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="labels_raw",
            meta={"rule": "ner3_missing_line", "file": lf, "column": "labels_raw", **sizes},
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="text_raw", regex=r"\S", meta={"rule": "blank_line", "file": tf, "column": "text_raw"}
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="labels_raw", regex=r"\S", meta={"rule": "blank_line", "file": lf, "column": "labels_raw"}
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="text",
            regex=r"^\S+(?: \S+)*$",
            meta={"rule": "ner3_text_format", "file": tf, "column": "text"},
            description="Tokens separated by single spaces.",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="labels",
            regex=r"^[BIO](?: [BIO])*$",
            meta={"rule": "ner3_tag_set", "file": lf, "column": "labels"},
            description="Tags in {B,I,O}, separated by single spaces.",
        ),
        ExpectColumnValuesToBeValidIobSequence(
            column="labels",
            meta={"rule": "ner3_iob", "file": lf, "column": "labels"},
            description="No I at the start of a line or after O.",
        ),
        ExpectColumnPairValuesToHaveEqualTokenCounts(
            column_A="text",
            column_B="labels",
            meta={"rule": "ner3_counts", "file": lf, "column": "labels", "other_file": tf},
            description="As many tags as tokens on every line.",
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="text",
            severity="warning",
            meta={"rule": "ner3_duplicate", "file": tf, "column": "text"},
            description="Sentences repeat within a split in the official release: reported, not refused.",
        ),
    ]


def _tags_suite(split: str) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="tag",
            value_set=list(TAGS),
            meta={"rule": "ner3_tags_present", "file": labels_file(split), "column": "tag"},
            description="Every tag (B, I, O) occurs in the split.",
        )
    ]


def _leak_suite(kind: str, column: str) -> list[Any]:
    from tasks.validation_gx import ExpectColumnValuesToBeInOneSplit

    cols = ["split", column]
    if kind == "ner3":
        return [
            ExpectColumnValuesToBeInOneSplit(
                column_list=cols,
                min_tokens=NER_LEAK_MIN_TOKENS,
                meta={"rule": "ner3_leak", "column": column},
                description=f"No sentence of {NER_LEAK_MIN_TOKENS}+ tokens in two splits.",
            ),
            ExpectColumnValuesToBeInOneSplit(
                column_list=cols,
                max_tokens=NER_LEAK_MIN_TOKENS - 1,
                severity="warning",
                meta={"rule": "ner3_leak_short", "column": column},
                description="Short sentences shared by splits (headings, numbers): reported, not refused.",
            ),
        ]
    return [
        ExpectColumnValuesToBeInOneSplit(
            column_list=cols, meta={"rule": f"tc3_leak_{column}", "column": column}, description="No leakage."
        )
    ]


# --- the entry point ----------------------------------------------------------------------------------


def _count_tc3(frame: Any) -> dict[str, Any]:
    per = Counter(frame["label"].dropna())
    return {"rows": int(frame["record"].notna().sum()), "per_class": {c: per.get(c, 0) for c in LABELS}}


def _count_ner3(frame: Any) -> dict[str, Any]:
    tags = Counter(t for line in frame["labels"].dropna() for t in line.split(" "))
    return {
        "sentences": int(frame["text_raw"].notna().sum()),
        "tokens": int(sum(tags.values())),
        "entities": int(tags.get("B", 0)),
    }


def _check_manifest(root: Path, failures: list[Failure], warnings: list[Failure]) -> None:
    text = _read_text(root, MANIFEST, failures)
    if text is None:
        return
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        failures.append(
            _byte_failure(
                "expect_file_to_be_json_object", MANIFEST, f"not valid JSON: {exc.msg}", [exc.lineno]
            )
        )
        return
    if not isinstance(manifest, dict):
        failures.append(_byte_failure("expect_file_to_be_json_object", MANIFEST, "not a JSON object"))
        return
    listed = manifest.get("files")
    for rel, digest in (listed if isinstance(listed, dict) else {}).items():
        path = root / rel
        if rel != MANIFEST and path.is_file() and sha256_file(path) != digest:
            warnings.append(
                _byte_failure(
                    "expect_file_to_match_manifest_sha256",
                    rel,
                    "content differs from the sha256 listed in MANIFEST.json (edited after import?)",
                    severity="warning",
                )
            )


def _check_outside(root: Path, target: Path, what: str) -> None:
    target = target.resolve()
    if target == root or root in target.parents:
        raise UsageError(
            f"{target}: the {what} must be outside the data directory {root} (validate never writes there)."
        )


def validate_dir(path: Path, docs_dir: Path | None = None) -> ValidationReport:
    """Validate a data directory (tc3 + ner3 + MANIFEST.json) with the GX suites; never modifies it.

    Args:
        path: the data directory (as written by `ncbi-retrain data import`).
        docs_dir: where to (re)build a GX Data Docs HTML site; its `index.html` is `report.docs_index`.

    Raises:
        UsageError: `path` is not a directory, a file cannot be read, or `docs_dir` is inside `path`.
    """
    root = Path(path).resolve()
    if not root.exists():
        raise UsageError(f"{path}: no such directory.")
    if not root.is_dir():
        raise UsageError(f"{path}: not a directory.")
    if docs_dir is not None:
        _check_outside(root, Path(docs_dir), "Data Docs folder")
        docs = Path(docs_dir).resolve()
        if docs.exists() and (
            not docs.is_dir() or (any(docs.iterdir()) and not (docs / "index.html").exists())
        ):
            raise UsageError(f"{docs_dir}: exists and is not a Data Docs folder; refusing to replace it.")

    t0 = time.perf_counter()
    import great_expectations as gx  # ~3-6 s the first time in a process; timed apart from the checks
    import pandas as pd

    from tasks.validation_gx import Dataset, run_datasets

    started = time.perf_counter()

    failures: list[Failure] = []
    warnings: list[Failure] = []
    counts: dict[str, dict[str, dict[str, Any]]] = {"tc3": {}, "ner3": {}}

    datasets: list[Dataset] = []
    leak_rows: dict[str, list[tuple[str, int, str, str]]] = {"tc3_text": [], "tc3_pmid": [], "ner3_text": []}
    for split in SPLITS:
        text = _read_text(root, tc3_file(split), failures)
        if text is not None:
            frame = _tc3_frame(_lines(text))
            datasets.append(Dataset(f"tc3_{split}", frame, _tc3_suite(split)))
            counts["tc3"][split] = _count_tc3(frame)
            ok = frame[frame["text"].notna()]
            leak_rows["tc3_text"] += [
                (tc3_file(split), n, split, t) for n, t in zip(ok["line"], ok["text"], strict=True)
            ]
            if (root / ids_file(split)).exists():  # optional: present when written by `data import`
                ids_text = _read_text(root, ids_file(split), failures)
                if ids_text is not None:
                    ids = _ids_frame(_lines(ids_text))
                    datasets.append(Dataset(f"tc3_{split}_ids", ids, _ids_suite(split, len(frame))))
                    ok = ids[ids["pmid"].notna()]
                    leak_rows["tc3_pmid"] += [
                        (ids_file(split), n, split, p) for n, p in zip(ok["line"], ok["pmid"], strict=True)
                    ]
        elif (root / ids_file(split)).exists():
            _read_text(root, ids_file(split), failures)  # still report its byte-level faults
        t_text = _read_text(root, text_file(split), failures)
        l_text = _read_text(root, labels_file(split), failures)
        if t_text is not None and l_text is not None:
            t_lines, l_lines = _lines(t_text), _lines(l_text)
            frame = _ner3_frame(t_lines, l_lines)
            datasets.append(Dataset(f"ner3_{split}", frame, _ner3_suite(split, len(t_lines), len(l_lines))))
            counts["ner3"][split] = _count_ner3(frame)
            datasets.append(Dataset(f"ner3_{split}_tags", _tags_frame(frame), _tags_suite(split)))
            ok = frame[frame["text"].notna()]
            leak_rows["ner3_text"] += [
                (text_file(split), n, split, t) for n, t in zip(ok["line"], ok["text"], strict=True)
            ]
    for name, rows in leak_rows.items():
        kind, column = name.split("_")
        if len({r[2] for r in rows}) > 1:
            frame = pd.DataFrame(rows, columns=["file", "line", "split", column])
            datasets.append(Dataset(f"{name}_splits", frame, _leak_suite(kind, column), ["file", "line"]))
    _check_manifest(root, failures, warnings)

    docs_index = None
    if docs_dir is None:
        results, _ = run_datasets(datasets)
    else:
        results, docs_index = _run_with_docs(datasets, Path(docs_dir).resolve())
    for _, suite_result in results:
        for res in suite_result.results:
            if not res.success:
                for f in _failures_from(res):
                    (warnings if f.severity == "warning" else failures).append(f)
    return ValidationReport(
        path=str(path),
        valid=not failures,
        failures=failures,
        warnings=warnings,
        counts={k: v for k, v in counts.items() if v},
        seconds=round(time.perf_counter() - started, 3),
        import_seconds=round(started - t0, 3),
        gx_version=gx.__version__,
        docs_index=docs_index,
    )


def _run_with_docs(datasets: list[Any], docs: Path) -> tuple[list[Any], str]:
    """Run in a GX file context in a scratch folder beside `docs`, then swap the built site into place."""
    from tasks.validation_gx import run_datasets

    docs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{docs.name}.gx-", dir=docs.parent) as work_s:
        work = Path(work_s)
        results, site = run_datasets(datasets, docs_root=work / "project")
        if site is None or not (site / "index.html").is_file():
            raise RuntimeError(f"GX built no Data Docs under {work}")
        if docs.exists():
            os.replace(docs, work / "previous")  # removed with the scratch folder
        os.replace(site, docs)
    return results, str(docs / "index.html")


__all__ = ["Failure", "ValidationReport", "validate_dir", "write_report"]
