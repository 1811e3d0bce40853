"""Byte-level checks, in plain Python: GX only ever sees a dataframe, so it cannot tell a BOM, a CR or an
undecodable byte from text. Every file present and non-empty, UTF-8, no byte-order mark, LF line endings;
MANIFEST.json a JSON object whose listed sha256 match. A file failing here is not parsed further (its
lines would be noise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.errors import UsageError
from tasks.provenance import sha256_file
from tasks.validation.report import Failure
from tasks.validation.rules import MANIFEST, MAX_LINES

BOM = b"\xef\xbb\xbf"


def file_failure(rule: str, rel: str, message: str, lines: list[int] | None = None, **kw: Any) -> Failure:
    """A byte-level finding: the rule is also the expectation's name (`expect_file_...`)."""
    return Failure(
        expectation=rule, file=rel, message=message, lines=lines or [], rule=rule, engine="python", **kw
    )


def read_text(root: Path, rel: str, failures: list[Failure]) -> str | None:
    """The file's text if it exists, is non-empty, valid UTF-8 without BOM and LF-only; else None."""
    path = root / rel
    if not path.exists():
        failures.append(file_failure("expect_file_to_exist", rel, "file is missing"))
        return None
    if not path.is_file():
        failures.append(file_failure("expect_file_to_exist", rel, "not a regular file"))
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc}).") from exc
    if not data:
        failures.append(file_failure("expect_file_to_be_non_empty", rel, "file is empty"))
        return None
    ok = True
    if data.startswith(BOM):
        failures.append(
            file_failure(
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
            file_failure(
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
            file_failure("expect_file_to_have_lf_line_endings", rel, what, cr[:MAX_LINES], count=len(cr))
        )
        ok = False
    return text if ok else None


def split_lines(text: str) -> list[str]:
    """The LF-terminated lines of `text` (str.splitlines would also split on U+2028, FF, ...)."""
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()  # the final newline terminates the last line
    return parts


def check_manifest(root: Path, failures: list[Failure], warnings: list[Failure]) -> None:
    """MANIFEST.json is a JSON object; a data file whose sha256 differs from the listed one is a warning."""
    text = read_text(root, MANIFEST, failures)
    if text is None:
        return
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        failures.append(
            file_failure(
                "expect_file_to_be_json_object", MANIFEST, f"not valid JSON: {exc.msg}", [exc.lineno]
            )
        )
        return
    if not isinstance(manifest, dict):
        failures.append(file_failure("expect_file_to_be_json_object", MANIFEST, "not a JSON object"))
        return
    listed = manifest.get("files")
    for rel, digest in (listed if isinstance(listed, dict) else {}).items():
        path = root / rel
        if rel != MANIFEST and path.is_file() and sha256_file(path) != digest:
            warnings.append(
                file_failure(
                    "expect_file_to_match_manifest_sha256",
                    rel,
                    "content differs from the sha256 listed in MANIFEST.json (edited after import?)",
                    severity="warning",
                )
            )
