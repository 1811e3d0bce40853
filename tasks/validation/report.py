"""The validation report: one `Failure` per broken rule and file, and the `ValidationReport` of a directory.

Pydantic models, so that `report.json` (written by `write_report`) reads back with
`ValidationReport.model_validate_json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tasks.errors import DataError, UsageError
from tasks.files import atomic_write_text
from tasks.vocab import SPLITS, Record


class Failure(Record):
    """One broken rule in one file: where (first lines), what (values), and which expectation said so."""

    expectation: str  # GX expectation type, or `expect_file_...` for the byte-level checks
    file: str  # relative to the data directory, e.g. tc3/train.tsv
    message: str  # about the first offending line (or the whole file when `lines` is empty)
    lines: list[int] = Field(default_factory=list)  # 1-based, the first MAX_LINES
    values: list[str] = Field(default_factory=list)  # offending values, aligned with `lines`
    count: int = 1  # offending rows in all
    severity: Literal["error", "warning"] = "error"  # a warning does not make the directory invalid
    rule: str = ""
    engine: Literal["gx", "python"] = "gx"  # python: the byte-level checks

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


class ValidationReport(Record):
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
    schema_version: Literal[1] = Field(1, alias="schema")  # of this report's JSON form

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
        """The JSON-able report, with `"schema": 1`."""
        return self.model_dump(mode="json", by_alias=True)


def write_report(report: ValidationReport, path: Path) -> None:
    """Write the JSON report atomically (a temp file beside it, then a rename)."""
    path = Path(path)
    try:
        atomic_write_text(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror or exc}).") from exc
