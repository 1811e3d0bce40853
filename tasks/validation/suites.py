"""The expectation suites: which rules GX checks on each dataframe (`tasks.validation.frames`).

Each expectation's `meta` names its rule, the file it reports on and the column whose values are shown;
`tasks.validation.messages` turns a failed one into a `Failure` from that. Built-in expectations where
they exist, the custom ones of `tasks.validation.expectations` otherwise.
"""

from __future__ import annotations

from typing import Any

import great_expectations.expectations as gxe

from tasks.validation.expectations import (
    ExpectColumnPairValuesToHaveEqualTokenCounts,
    ExpectColumnValuesToBeInOneSplit,
    ExpectColumnValuesToBeValidIobSequence,
)
from tasks.validation.rules import LABELS, NER_LEAK_MIN_TOKENS, ids_file, labels_file, tc3_file, text_file
from tasks.vocab import TAGS


def tc3_suite(split: str) -> list[Any]:
    """tc3/{split}.tsv: `text<TAB>label`, non-empty text without a tab, label in {0,1,2}, every class, no
    blank line, no duplicate text."""
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


def ids_suite(split: str, n_rows: int) -> list[Any]:
    """tc3/{split}.ids: one numeric, unique PMID per tc3 row, line-aligned with the .tsv."""
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


def ner3_suite(split: str, n_text: int, n_labels: int) -> list[Any]:
    """ner3 text and labels of a split, line by line: aligned, tokens and tags well formed, valid IOB2."""
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


def tags_suite(split: str) -> list[Any]:
    """Every tag (B, I, O) occurs in the split's labels file."""
    return [
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="tag",
            value_set=list(TAGS),
            meta={"rule": "ner3_tags_present", "file": labels_file(split), "column": "tag"},
            description="Every tag (B, I, O) occurs in the split.",
        )
    ]


def leak_suite(kind: str, column: str) -> list[Any]:
    """No tc3 text or PMID, and no ner3 sentence of NER_LEAK_MIN_TOKENS+ tokens, in two splits; shorter
    shared ner3 sentences (headings, numbers) are warnings."""
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
