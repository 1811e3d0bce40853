"""The entry point: `validate_dir`, which runs the byte-level checks, then the GX suites, into one report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasks.errors import UsageError
from tasks.validation.filechecks import check_manifest, read_text, split_lines
from tasks.validation.report import Failure, ValidationReport
from tasks.validation.rules import ids_file, labels_file, tc3_file, text_file
from tasks.vocab import SPLITS


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
    # GX and pandas take ~3-6 s to import the first time in a process: timed apart from the checks.
    import great_expectations as gx
    import pandas as pd

    from tasks.validation import frames, suites
    from tasks.validation.messages import failures_from
    from tasks.validation.runner import Dataset, run_datasets, run_with_docs

    started = time.perf_counter()

    failures: list[Failure] = []
    warnings: list[Failure] = []
    counts: dict[str, dict[str, dict[str, Any]]] = {"tc3": {}, "ner3": {}}

    datasets: list[Dataset] = []
    leak_rows: dict[str, list[tuple[str, int, str, str]]] = {"tc3_text": [], "tc3_pmid": [], "ner3_text": []}
    for split in SPLITS:
        text = read_text(root, tc3_file(split), failures)
        if text is not None:
            frame = frames.tc3_frame(split_lines(text))
            datasets.append(Dataset(f"tc3_{split}", frame, suites.tc3_suite(split)))
            counts["tc3"][split] = frames.count_tc3(frame)
            ok = frame[frame["text"].notna()]
            leak_rows["tc3_text"] += [
                (tc3_file(split), n, split, t) for n, t in zip(ok["line"], ok["text"], strict=True)
            ]
            if (root / ids_file(split)).exists():  # optional: present when written by `data import`
                ids_text = read_text(root, ids_file(split), failures)
                if ids_text is not None:
                    ids = frames.ids_frame(split_lines(ids_text))
                    datasets.append(Dataset(f"tc3_{split}_ids", ids, suites.ids_suite(split, len(frame))))
                    ok = ids[ids["pmid"].notna()]
                    leak_rows["tc3_pmid"] += [
                        (ids_file(split), n, split, p) for n, p in zip(ok["line"], ok["pmid"], strict=True)
                    ]
        elif (root / ids_file(split)).exists():
            read_text(root, ids_file(split), failures)  # still report its byte-level faults
        t_text = read_text(root, text_file(split), failures)
        l_text = read_text(root, labels_file(split), failures)
        if t_text is not None and l_text is not None:
            t_lines, l_lines = split_lines(t_text), split_lines(l_text)
            frame = frames.ner3_frame(t_lines, l_lines)
            datasets.append(
                Dataset(f"ner3_{split}", frame, suites.ner3_suite(split, len(t_lines), len(l_lines)))
            )
            counts["ner3"][split] = frames.count_ner3(frame)
            datasets.append(Dataset(f"ner3_{split}_tags", frames.tags_frame(frame), suites.tags_suite(split)))
            ok = frame[frame["text"].notna()]
            leak_rows["ner3_text"] += [
                (text_file(split), n, split, t) for n, t in zip(ok["line"], ok["text"], strict=True)
            ]
    for name, rows in leak_rows.items():
        kind, column = name.split("_")
        if len({r[2] for r in rows}) > 1:
            frame = pd.DataFrame(rows, columns=["file", "line", "split", column])
            datasets.append(
                Dataset(f"{name}_splits", frame, suites.leak_suite(kind, column), ["file", "line"])
            )
    check_manifest(root, failures, warnings)

    docs_index = None
    if docs_dir is None:
        results, _ = run_datasets(datasets)
    else:
        results, docs_index = run_with_docs(datasets, Path(docs_dir).resolve())
    for _, suite_result in results:
        for res in suite_result.results:
            if not res.success:
                for f in failures_from(res):
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


def _check_outside(root: Path, target: Path, what: str) -> None:
    target = target.resolve()
    if target == root or root in target.parents:
        raise UsageError(
            f"{target}: the {what} must be outside the data directory {root} (validate never writes there)."
        )
