"""`ncbi-retrain validate`: one test per rule (exit code 1, `file:line` in the message, the JSON report),
exit codes 0 and 2, --json, --report, --docs, and the real import through the CLI.

Most tests call the CLI in-process (`tasks.cli.run`, the same code path the console script takes) so GX
is imported once; two run the real console entry point in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from test_validation import BROKEN, Case, edit_line, write_valid_dir

from tasks.cli import run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = run(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def digest(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.id)
def test_each_rule_refuses_its_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    root = write_valid_dir(tmp_path / "data")
    case.mutate(root)
    report = tmp_path / "report.json"
    rc, out, err = cli(capsys, root, "--report", report)
    assert rc == 1, out
    where = f"{case.file}:{case.line}: " if case.line else f"{case.file}: "
    lines = [ln for ln in out.splitlines() if ln.startswith(where) and f"({case.expectation}" in ln]
    assert lines, f"no line starting {where!r} naming {case.expectation}:\n{out}"
    assert case.words in lines[0]
    assert err.startswith(f"error: {root} is invalid: {case.file}") or "(and " in err
    assert err.count("\n") == 1
    failures = json.loads(report.read_text())["failures"]
    assert any(
        f["file"] == case.file
        and f["expectation"] == case.expectation
        and f["lines"][:1] == ([case.line] if case.line else [])
        for f in failures
    ), failures


def test_valid_dir_exits_0_with_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, write_valid_dir(tmp_path / "data"))
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "train tc3 3 rows (0: 1, 1: 1, 2: 1) | ner3 3 sentences, 48 tokens, 6 entities"
    assert lines[-1].startswith(f"valid: {tmp_path / 'data'} (0 failures, 0 warnings")


def test_json_prints_one_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_valid_dir(tmp_path / "data")
    edit_line("tc3/train.tsv", 2, lambda s: s[:-1] + "5")(root)
    rc, out, err = cli(capsys, root, "--json")
    assert rc == 1 and err.startswith("error: ")
    assert out.count("\n") == 1
    d = json.loads(out)
    assert d["valid"] is False
    found = {(f["file"], f["rule"], tuple(f["lines"]), tuple(f["values"])) for f in d["failures"]}
    # train line 2 held the only class-1 row, so the class rule fires too
    assert found == {
        ("tc3/train.tsv", "tc3_label", (2,), ("5",)),
        ("tc3/train.tsv", "tc3_classes", (), ("1",)),
    }


def test_report_is_written_atomically_and_matches_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_valid_dir(tmp_path / "data")
    out_dir = tmp_path / "reports" / "nested"
    rc, out, _ = cli(capsys, root, "--report", out_dir / "r.json", "--json")
    assert rc == 0
    written = json.loads((out_dir / "r.json").read_text())
    assert written == json.loads(out)
    assert [p.name for p in out_dir.iterdir()] == ["r.json"], "no temp file left beside the report"


def test_report_inside_the_data_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_valid_dir(tmp_path / "data")
    before = digest(root)
    rc, _, err = cli(capsys, root, "--report", root / "report.json")
    assert rc == 2 and "outside the data directory" in err
    rc, _, err = cli(capsys, root, "--docs", root / "docs")
    assert rc == 2 and "outside the data directory" in err
    assert digest(root) == before


def test_docs_builds_a_site_and_prints_its_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_valid_dir(tmp_path / "data")
    before = digest(root)
    rc, out, _ = cli(capsys, root, "--docs", tmp_path / "docs")
    assert rc == 0
    index = tmp_path / "docs" / "index.html"
    assert f"data docs: {index}" in out.splitlines()
    assert "Great Expectations" in index.read_text(encoding="utf-8")
    assert digest(root) == before


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    target = tmp_path / "nowhere"
    if kind == "file":
        target.write_text("x")
    rc, out, err = cli(capsys, target)
    assert (rc, out) == (2, "")
    assert err == f"error: {target}: {'no such directory' if kind == 'missing' else 'not a directory'}.\n"


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys)
    assert rc == 2 and "DIR" in err


def test_help_explains_rules_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "--help")
    assert rc == 0
    for word in ("--report", "--docs", "--json", "0 valid, 1 invalid, 2 usage"):
        assert word in " ".join(out.split())


def test_console_script_exit_codes(tmp_path: Path, cli_orch: list[str]) -> None:
    """The real entry point in a fresh process: 1 with file:line on a bad dir, 2 on a missing one."""
    root = write_valid_dir(tmp_path / "data")
    edit_line("ner3/labels_test.txt", 3, lambda s: s.replace("O B", "O I", 1))(root)
    proc = subprocess.run([*cli_orch, "validate", str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert (
        "ner3/labels_test.txt:3: I at token 7 follows O (expect_column_values_to_be_valid_iob_sequence)"
        in proc.stdout
    )
    assert "INFO" not in proc.stderr and "Calculating Metrics" not in proc.stderr, proc.stderr
    proc = subprocess.run(
        [*cli_orch, "validate", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_real_import_validates_through_the_cli(
    imported_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digest(imported_data)
    started = time.perf_counter()
    rc, out, err = cli(capsys, imported_data, "--json")
    print(f"\nreal corpus via CLI (in-process): {time.perf_counter() - started:.2f} s")
    assert (rc, err) == (0, "")
    d = json.loads(out)
    assert {s: c["per_class"] for s, c in d["counts"]["tc3"].items()} == {
        "train": {"0": 107, "1": 246, "2": 239},
        "dev": {"0": 37, "1": 33, "2": 30},
        "test": {"0": 29, "1": 32, "2": 39},
    }
    assert digest(imported_data) == before
