"""Reading metrics.json and decision JSON files, and writing a decision with its report.

The documents' schemas are the pydantic models in `tasks.vocab` (`MetricsDocument`, `GateDecision`);
errors name the file, the line (malformed JSON) or the field.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tasks.errors import DataError, UsageError
from tasks.files import atomic_write_json
from tasks.vocab import GateDecision, MetricsDocument, parse_metrics


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; an unreadable file is a usage error, malformed JSON a data error at file:line."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc


def load_metrics(path: Path) -> MetricsDocument:
    """Read and validate a metrics.json (see docs/architecture.md)."""
    return parse_metrics(read_json(path, "metrics"), str(path))


def load_decision(path: Path) -> GateDecision:
    """Read a decision JSON written by `write_decision`."""
    return GateDecision.from_dict(read_json(path, "decision"), str(path))


def write_decision(decision: GateDecision, out: Path) -> Path:
    """Write the decision JSON to `out`, with `<stem>.md` and `<stem>.*.png` next to it.

    Everything is rendered in a temporary folder beside `out` and moved into place, the JSON last,
    so a decision file on disk always has its report.
    """
    from tasks.report import render_report

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.stem}.", dir=out.parent) as tmp:
        files = render_report(decision, Path(tmp), out.stem, json_name=out.name)
        for p in files:
            os.replace(p, out.parent / p.name)
    doc = decision.to_dict()
    doc["report"] = [p.name for p in files]
    return atomic_write_json(out, doc)
