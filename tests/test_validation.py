"""`tasks.validation.validate_dir`: one minimal bad directory per rule, the warnings the official release
needs, the report's shape, read-only behaviour, Data Docs, and the real import.

`write_valid_dir` writes a tiny valid data directory; each case in `BROKEN` breaks exactly one thing and
names the failure it must produce (file, first line, expectation); test_validation_cli.py runs each one
through the CLI (exit code, `file:line` in the output, the JSON report).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.errors import DataError, UsageError
from tasks.validation import NER_LEAK_MIN_TOKENS, validate_dir

SPLITS = ("train", "dev", "test")
DISEASES = {"train": "colon cancer", "dev": "breast cancer", "test": "lung cancer"}


def _sentence(split: str, i: int) -> tuple[str, str]:
    """A (15 + i)-token sentence unique to (split, i), with two entities, and its tags (lengths differ, so
    a shifted labels file breaks the per-line tag count)."""
    a, b = DISEASES[split].split()
    tokens = ["Patients", "of", split, "cohort", str(i), "had", a, b, "and", "epilepsy", "after", "the",
              "trial", str(i * 7), "."]  # fmt: skip
    tags = ["O", "O", "O", "O", "O", "O", "B", "I", "O", "B", "O", "O", "O", "O", "O"]
    tokens[-1:-1] = ["again"] * i
    tags += ["O"] * i
    return " ".join(tokens), " ".join(tags)


def write_valid_dir(root: Path) -> Path:
    """A minimal valid data directory: 3 tc3 rows (one per class) and 3 ner3 sentences per split."""
    (root / "tc3").mkdir(parents=True)
    (root / "ner3").mkdir()
    for k, split in enumerate(SPLITS):
        rows = [f"Abstract {split} {i} about {DISEASES[split]} case {i}.\t{i}\n" for i in range(3)]
        (root / "tc3" / f"{split}.tsv").write_text("".join(rows), encoding="utf-8")
        (root / "tc3" / f"{split}.ids").write_text("".join(f"{(k + 1) * 100 + i}\n" for i in range(3)))
        sents = [_sentence(split, i) for i in range(3)]
        (root / "ner3" / f"text_{split}.txt").write_text("".join(t + "\n" for t, _ in sents))
        (root / "ner3" / f"labels_{split}.txt").write_text("".join(t + "\n" for _, t in sents))
    (root / "MANIFEST.json").write_text(json.dumps({"schema": 1, "tool": {"name": "test"}}) + "\n")
    return root


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def set_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))


def edit_line(rel: str, n: int, fn: Callable[[str], str]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        lines = lines_of(root / rel)
        lines[n - 1] = fn(lines[n - 1])
        set_lines(root / rel, lines)

    return mutate


def insert_line(rel: str, n: int, text: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        lines = lines_of(root / rel)
        lines.insert(n - 1, text)
        set_lines(root / rel, lines)

    return mutate


def delete_line(rel: str, n: int) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        lines = lines_of(root / rel)
        del lines[n - 1]
        set_lines(root / rel, lines)

    return mutate


def raw(rel: str, fn: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).write_bytes(fn((root / rel).read_bytes()))

    return mutate


def both(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        for m in mutations:
            m(root)

    return mutate


def copy_line(src: str, n: int, dst: str, at: int) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        insert_line(dst, at, lines_of(root / src)[n - 1])(root)

    return mutate


def bad_encoding(root: Path) -> None:
    path = root / "tc3/dev.tsv"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"Abstract", b"Abstract caf\xe9")  # Latin-1 e-acute
    path.write_bytes(b"\n".join(lines))


def copy_row(src: str, n: int, dst: str, at: int, pmid: str) -> Callable[[Path], None]:
    """Copy tc3 row n of split `src` into `dst` at line `at`, with a new PMID there (ids stay aligned)."""
    return both(copy_line(f"tc3/{src}.tsv", n, f"tc3/{dst}.tsv", at), insert_line(f"tc3/{dst}.ids", at, pmid))


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Path], None]
    file: str  # the file the failure must name
    line: int | None  # its first line (None: a whole-file finding)
    expectation: str
    words: str = ""  # a phrase the message must contain


E_EXIST, E_EMPTY, E_BOM, E_LF = (
    "expect_file_to_exist",
    "expect_file_to_be_non_empty",
    "expect_file_to_have_no_bom",
    "expect_file_to_have_lf_line_endings",
)
E_SET, E_REGEX, E_NOT_REGEX, E_UNIQUE, E_NOT_NULL = (
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_not_match_regex",
    "expect_column_values_to_be_unique",
    "expect_column_values_to_not_be_null",
)
E_ONE_SPLIT, E_COUNTS, E_IOB = (  # the custom expectations of tasks.validation.expectations
    "expect_column_values_to_be_in_one_split",
    "expect_column_pair_values_to_have_equal_token_counts",
    "expect_column_values_to_be_valid_iob_sequence",
)
TC3_TR, TC3_DEV, TC3_TE = "tc3/train.tsv", "tc3/dev.tsv", "tc3/test.tsv"
TX_TR, TX_DEV, TX_TE = "ner3/text_train.txt", "ner3/text_dev.txt", "ner3/text_test.txt"
LB_TR, LB_DEV, LB_TE = "ner3/labels_train.txt", "ner3/labels_dev.txt", "ner3/labels_test.txt"


def unlink(*rels: str) -> Callable[[Path], None]:
    return lambda root: [(root / rel).unlink() for rel in rels] and None


BROKEN = [
    # byte level (plain Python before GX)
    Case("missing-file", unlink(LB_DEV), LB_DEV, None, E_EXIST, "file is missing"),
    Case("missing-manifest", unlink("MANIFEST.json"), "MANIFEST.json", None, E_EXIST),
    Case("missing-split", unlink(TC3_TE, "tc3/test.ids"), TC3_TE, None, E_EXIST),
    Case("empty-file", raw(TC3_TE, lambda b: b""), TC3_TE, None, E_EMPTY, "empty"),
    Case("bom", raw(TC3_TR, lambda b: b"\xef\xbb\xbf" + b), TC3_TR, 1, E_BOM, "byte-order mark"),
    Case("crlf", raw(TX_TR, lambda b: b.replace(b"\n", b"\r\n")), TX_TR, 1, E_LF, "CRLF"),
    Case("lone-cr", edit_line(TC3_DEV, 2, lambda s: s.replace(" about", "\r about")), TC3_DEV, 2, E_LF,
         "carriage return"),
    Case("bad-encoding", bad_encoding, TC3_DEV, 2, "expect_file_to_be_utf8",
         "byte 0xe9 at column 13 is not valid UTF-8"),
    Case("manifest-not-json", raw("MANIFEST.json", lambda b: b'{\n"schema": 1,\n}\n'), "MANIFEST.json", 3,
         "expect_file_to_be_json_object", "not valid JSON"),
    # tc3 rows
    Case("tc3-tab-in-text", edit_line(TC3_TR, 2, lambda s: s.replace(" about", "\tabout")), TC3_TR, 2,
         E_NOT_REGEX, "text contains a tab"),
    Case("tc3-three-fields", edit_line(TC3_TR, 2, lambda s: s + "\t1"), TC3_TR, 2, E_SET,
         "3 tab-separated fields"),
    Case("tc3-one-field", edit_line(TC3_DEV, 3, lambda s: s.split("\t")[0]), TC3_DEV, 3, E_SET,
         "1 tab-separated fields"),
    Case("tc3-empty-text", edit_line(TC3_TE, 2, lambda s: "\t" + s.split("\t")[1]), TC3_TE, 2, E_REGEX,
         "empty text"),
    Case("tc3-label-out-of-range", edit_line(TC3_TR, 3, lambda s: s[:-1] + "7"), TC3_TR, 3, E_SET,
         "label '7' not in {0,1,2}"),
    Case("tc3-label-not-a-number", edit_line(TC3_DEV, 1, lambda s: s[:-1] + "cancer"), TC3_DEV, 1, E_SET,
         "label 'cancer'"),
    Case("tc3-blank-line", insert_line(TC3_TR, 2, ""), TC3_TR, 2, E_REGEX, "blank line"),
    Case("tc3-missing-class", both(delete_line(TC3_DEV, 3), delete_line("tc3/dev.ids", 3)), TC3_DEV, None,
         "expect_column_distinct_values_to_contain_set", "class 2 absent"),
    Case("tc3-duplicate", copy_row("train", 1, "train", 4, "199"), TC3_TR, 1, E_UNIQUE, "duplicate text"),
    Case("tc3-leak-text", copy_row("test", 1, "train", 4, "199"), TC3_TE, 1, E_ONE_SPLIT,
         "also in tc3/train.tsv:4"),
    Case("tc3-leak-pmid", edit_line("tc3/dev.ids", 2, lambda s: "301"), "tc3/dev.ids", 2, E_ONE_SPLIT,
         "PMID 301 also in tc3/test.ids:2"),
    Case("ids-misaligned", delete_line("tc3/train.ids", 3), "tc3/train.ids", None,
         "expect_table_row_count_to_equal", "2 lines, but tc3/train.tsv has 3"),
    Case("ids-not-a-number", edit_line("tc3/test.ids", 2, lambda s: "PMID302"), "tc3/test.ids", 2, E_REGEX,
         "'PMID302' is not a number"),
    Case("ids-duplicate", edit_line("tc3/train.ids", 3, lambda s: "101"), "tc3/train.ids", 2, E_UNIQUE,
         "PMID 101 repeated"),
    # ner3 rows
    Case("ner3-missing-tag", raw(LB_TE, lambda b: b.replace(b" I ", b" O ")), LB_TE, None,
         "expect_column_distinct_values_to_contain_set", "tag I absent from the split"),
    Case("ner3-labels-short", delete_line(LB_TR, 3), LB_TR, 3, E_NOT_NULL, "line missing"),
    Case("ner3-misaligned", delete_line(LB_DEV, 1), LB_DEV, 1, E_COUNTS, "tags for"),
    Case("ner3-text-long", insert_line(TX_TE, 4, "One more ."), LB_TE, 4, E_NOT_NULL, "line missing"),
    Case("ner3-tag-count", edit_line(LB_TE, 2, lambda s: s + " O"), LB_TE, 2, E_COUNTS,
         "17 tags for 16 tokens in ner3/text_test.txt:2"),
    Case("ner3-wrong-tag", edit_line(LB_TR, 2, lambda s: s.replace("B", "B-Disease", 1)), LB_TR, 2, E_REGEX,
         "tag 'B-Disease' (token 7)"),
    Case("ner3-lowercase-tag", edit_line(LB_DEV, 3, lambda s: "o" + s[1:]), LB_DEV, 3, E_REGEX,
         "tag 'o' (token 1)"),
    Case("ner3-i-after-o", edit_line(LB_DEV, 2, lambda s: s.replace("O B", "O I", 1)), LB_DEV, 2, E_IOB,
         "I at token 7 follows O"),
    Case("ner3-i-at-start", edit_line(LB_TR, 1, lambda s: "I" + s[1:]), LB_TR, 1, E_IOB,
         "I at token 1 starts the line"),
    Case("ner3-tab-in-text", edit_line(TX_TR, 3, lambda s: s.replace(" ", "\t", 1)), TX_TR, 3, E_REGEX,
         "text contains a tab"),
    Case("ner3-double-space", edit_line(TX_DEV, 1, lambda s: s.replace(" ", "  ", 1)), TX_DEV, 1, E_REGEX,
         "empty token"),
    Case("ner3-blank-line", both(insert_line(TX_TR, 2, ""), insert_line(LB_TR, 2, "")), TX_TR, 2, E_REGEX,
         "blank line"),
    Case("ner3-leak", both(copy_line(TX_TE, 2, TX_TR, 4), copy_line(LB_TE, 2, LB_TR, 4)), TX_TE, 2,
         E_ONE_SPLIT, "also in ner3/text_train.txt:4"),
]  # fmt: skip


def make_broken(tmp_path: Path, case: Case) -> Path:
    root = write_valid_dir(tmp_path / "data")
    case.mutate(root)
    return root


def test_valid_dir_passes_with_counts(tmp_path: Path) -> None:
    report = validate_dir(write_valid_dir(tmp_path / "data"))
    assert report.valid, report.summary()
    assert report.failures == [] and report.warnings == []
    assert report.counts["tc3"]["train"] == {"rows": 3, "per_class": {"0": 1, "1": 1, "2": 1}}
    assert report.counts["ner3"]["dev"] == {"sentences": 3, "tokens": 48, "entities": 6}
    summary = report.summary()
    assert "tc3 3 rows (0: 1, 1: 1, 2: 1)" in summary
    assert summary.splitlines()[-1].startswith("valid:")


def test_tab_in_tc3_text_also_breaks_the_two_field_rule(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    edit_line("tc3/train.tsv", 2, lambda s: s.replace(" about", "\tabout"))(root)
    rules = {f.rule for f in validate_dir(root).failures if f.lines == [2]}
    assert rules == {"tc3_text_tab", "tc3_fields"}


def test_failure_carries_lines_values_and_count(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    for n in (1, 3):
        edit_line("tc3/train.tsv", n, lambda s: s[:-1] + "9")(root)
    (failure,) = [f for f in validate_dir(root).failures if f.rule == "tc3_label"]
    assert (failure.lines, failure.values, failure.count) == ([1, 3], ["9", "9"], 2)
    assert failure.severity == "error" and failure.engine == "gx"
    assert failure.line_text().endswith("(expect_column_values_to_be_in_set; 2 rows at lines 1, 3)")


def test_leakage_names_both_files(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    copy_row("test", 2, "dev", 1, "299")(root)
    leaks = {f.file: f for f in validate_dir(root).failures if f.rule == "tc3_leak_text"}
    assert set(leaks) == {"tc3/dev.tsv", "tc3/test.tsv"}
    assert leaks["tc3/dev.tsv"].lines == [1] and "tc3/test.tsv:2" in leaks["tc3/dev.tsv"].message


def test_byte_level_fault_stops_row_checks_on_that_file(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    raw("tc3/train.tsv", lambda b: b.replace(b"\n", b"\r\n"))(root)
    failures = validate_dir(root).failures
    assert [(f.file, f.rule, f.count) for f in failures] == [
        ("tc3/train.tsv", "expect_file_to_have_lf_line_endings", 3)
    ], "a CRLF file must give one finding, not one per label"


def test_ner3_duplicates_within_a_split_are_warnings(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    copy_line("ner3/text_train.txt", 1, "ner3/text_train.txt", 4)(root)
    copy_line("ner3/labels_train.txt", 1, "ner3/labels_train.txt", 4)(root)
    report = validate_dir(root)
    assert report.valid, report.summary()
    (warning,) = report.warnings
    assert (warning.file, warning.lines, warning.severity) == ("ner3/text_train.txt", [1, 4], "warning")
    assert "warning: ner3/text_train.txt:1: sentence repeated" in report.summary()


def test_short_sentences_shared_by_splits_are_warnings_long_ones_leakage(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    short = " ".join(["RESULTS"] * (NER_LEAK_MIN_TOKENS - 2) + ["."])  # NER_LEAK_MIN_TOKENS - 1 tokens
    for split in ("train", "dev"):
        insert_line(f"ner3/text_{split}.txt", 1, short)(root)
        insert_line(f"ner3/labels_{split}.txt", 1, " ".join(["O"] * (NER_LEAK_MIN_TOKENS - 1)))(root)
    report = validate_dir(root)
    assert report.valid, report.summary()
    assert {(w.file, w.rule) for w in report.warnings} == {
        ("ner3/text_train.txt", "ner3_leak_short"),
        ("ner3/text_dev.txt", "ner3_leak_short"),
    }
    edit_line("ner3/text_train.txt", 1, lambda s: "RESULTS " + s)(root)  # now 12 tokens, in train only
    edit_line("ner3/text_dev.txt", 1, lambda s: "RESULTS " + s)(root)
    for split in ("train", "dev"):
        edit_line(f"ner3/labels_{split}.txt", 1, lambda s: "O " + s)(root)
    report = validate_dir(root)
    assert {f.rule for f in report.failures} == {"ner3_leak"}


def test_tc3_duplicates_within_a_split_are_errors(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    copy_row("dev", 2, "dev", 4, "299")(root)
    (failure,) = validate_dir(root).failures
    assert (failure.rule, failure.lines, failure.severity) == ("tc3_duplicate", [2, 4], "error")
    assert "same as line 4" in failure.message


def test_manifest_sha256_mismatch_is_a_warning(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    files = {
        p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    digests = {rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p in files.items()}
    (root / "MANIFEST.json").write_text(json.dumps({"schema": 1, "files": digests}))
    assert validate_dir(root).warnings == []
    edit_line("tc3/train.tsv", 1, lambda s: s.replace("Abstract", "Summary"))(root)
    report = validate_dir(root)
    assert report.valid
    assert [(w.file, w.expectation) for w in report.warnings] == [
        ("tc3/train.tsv", "expect_file_to_match_manifest_sha256")
    ]


def test_ids_files_are_optional(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    for p in (root / "tc3").glob("*.ids"):
        p.unlink()
    assert validate_dir(root).valid


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_never_modifies_the_data(tmp_path: Path) -> None:
    root = make_broken(tmp_path, next(c for c in BROKEN if c.id == "ner3-i-after-o"))
    before, mtimes = _tree_digest(root), sorted(p.stat().st_mtime_ns for p in root.rglob("*"))
    validate_dir(root, docs_dir=tmp_path / "docs")
    assert _tree_digest(root) == before
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*")) == mtimes


def test_data_docs_site_is_built_and_replaced(tmp_path: Path) -> None:
    root = make_broken(tmp_path, next(c for c in BROKEN if c.id == "tc3-label-out-of-range"))
    docs = tmp_path / "site" / "docs"
    report = validate_dir(root, docs_dir=docs)
    assert report.docs_index == str(docs.resolve() / "index.html")
    index = (docs / "index.html").read_text(encoding="utf-8")
    assert "tc3_train" in index and "ner3_dev" in index
    pages = list((docs / "validations").rglob("*.html"))
    assert any("tc3_train" in p.name for p in pages)
    assert validate_dir(root, docs_dir=docs).docs_index  # a second build replaces the first
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["docs"], "no scratch folder left behind"


def test_docs_inside_the_data_or_over_another_folder_is_refused(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    with pytest.raises(UsageError, match="outside the data directory"):
        validate_dir(root, docs_dir=root / "docs")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a Data Docs folder"):
        validate_dir(root, docs_dir=other)
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_not_a_directory_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("not a dir")
    with pytest.raises(UsageError, match=str(target)):
        validate_dir(target)


def test_report_dict_is_json_and_complete(tmp_path: Path) -> None:
    root = make_broken(tmp_path, next(c for c in BROKEN if c.id == "bom"))
    d = json.loads(json.dumps(validate_dir(root).to_dict()))
    assert d["valid"] is False and d["schema"] == 1
    (f,) = d["failures"]
    assert f["file"] == "tc3/train.tsv" and f["lines"] == [1] and f["engine"] == "python"
    assert {"expectation", "message", "values", "count", "severity"} <= set(f)
    assert d["counts"]["ner3"]["train"]["sentences"] == 3


def test_real_import_validates(imported_data: Path, tmp_path: Path) -> None:
    """The shared release, as imported: valid, with the issue's counts; validation time is printed."""
    validate_dir(write_valid_dir(tmp_path / "warm"))  # GX imported and warmed up first
    started = time.perf_counter()
    report = validate_dir(imported_data)
    wall = time.perf_counter() - started
    print(f"\nreal corpus: validation {wall:.2f} s wall (report.seconds {report.seconds})")
    assert report.valid, report.summary()
    assert {s: c["rows"] for s, c in report.counts["tc3"].items()} == {"train": 592, "dev": 100, "test": 100}
    ner3 = report.counts["ner3"]
    assert {s: (c["sentences"], c["entities"]) for s, c in ner3.items()} == {
        "train": (5424, 5134),
        "dev": (923, 787),
        "test": (940, 960),
    }
    assert all(c["per_class"][k] > 0 for c in report.counts["tc3"].values() for k in "012")
    # the release's own quirks, reported as warnings: repeated sentences, short shared headings
    assert {w.rule for w in report.warnings} == {"ner3_duplicate", "ner3_leak_short"}
    assert {w.file for w in report.warnings if w.rule == "ner3_duplicate"} == {
        "ner3/text_train.txt",
        "ner3/text_test.txt",
    }


def test_raise_for_failures_is_a_data_error_naming_the_first_failure(tmp_path: Path) -> None:
    root = write_valid_dir(tmp_path / "data")
    validate_dir(root).raise_for_failures()  # valid: no exception
    edit_line("ner3/labels_dev.txt", 1, lambda s: "I" + s[1:])(root)
    with pytest.raises(
        DataError, match=r"is invalid: ner3/labels_dev.txt:1: I at token 1 starts the line"
    ) as exc:
        validate_dir(root).raise_for_failures()
    assert exc.value.exit_code == 1
