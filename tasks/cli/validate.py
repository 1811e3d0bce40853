"""CLI command: `ncbi-retrain validate DIR [--report FILE] [--docs DIR] [--json]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("validate")
    def validate(
        data_dir: Path = typer.Argument(
            ...,
            metavar="DIR",
            help="Data directory (tc3/, ner3/, MANIFEST.json), as `data import` writes it.",
        ),
        report: Path | None = typer.Option(
            None,
            "--report",
            metavar="FILE",
            help="Also write the JSON report to FILE (atomically; outside DIR).",
        ),
        docs: Path | None = typer.Option(
            None,
            "--docs",
            metavar="DIR",
            help="Build a Great Expectations Data Docs HTML site in this folder (replaced).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
    ) -> int:
        """Check a data directory with the Great Expectations suites for tc3 and ner3.

        Files present, non-empty, UTF-8 without BOM, LF endings; tc3 rows `text<TAB>label` with a label
        in {0,1,2}, every class in every split, no duplicate text; ner3 text and labels aligned line by
        line and tag by token, tags in {B,I,O}, no I after O or at a line start; no text, PMID or
        sentence in two splits. Prints counts per split and class, then one line per failure
        (`file:line: what (expectation)`). DIR is never modified.

        Exit status: 0 valid, 1 invalid, 2 usage or I/O error (DIR missing, not a directory).
        """
        from tasks.errors import UsageError
        from tasks.validation import validate_dir, write_report

        if report is not None:
            target = report.resolve()
            root = data_dir.resolve()
            if root.is_dir() and (target == root or root in target.parents):
                raise UsageError(f"{report}: the report must be outside the data directory {data_dir}.")
        result = validate_dir(data_dir, docs_dir=docs)
        if report is not None:
            write_report(result, report)
        if as_json:
            typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            typer.echo(result.summary())
        if not result.valid:  # the summary above is the report; stderr gets the one-sentence error
            print(f"error: {result.error_message()}", file=sys.stderr)
            raise typer.Exit(1)
        return 0
