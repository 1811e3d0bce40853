"""Running the suites in GX: one context, one pandas asset + suite + validation definition per dataframe;
with a Data Docs folder, a file context whose built site replaces that folder atomically.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tasks.files import staged_dir
from tasks.validation.expectations import quiet_gx_logs  # sets GX up (and imports it) first

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.expectations.expectation import Expectation

Results = list[tuple["Dataset", "ExpectationSuiteValidationResult"]]


@dataclass
class Dataset:
    """One dataframe and the expectations GX checks on it (one asset, one suite, one validation)."""

    name: str
    frame: pd.DataFrame
    expectations: list[Expectation]
    index_columns: list[str] = field(default_factory=lambda: ["line"])


def run_datasets(datasets: list[Dataset], docs_root: Path | None = None) -> tuple[Results, Path | None]:
    """Validate each dataset in one GX context; with `docs_root`, a file context there builds Data Docs.

    Returns the (dataset, suite result) pairs and the Data Docs site directory (or None).
    """
    import great_expectations as gx

    quiet_gx_logs()
    context = _context("file", docs_root) if docs_root else _context("ephemeral")
    source = context.data_sources.add_pandas("ncbi_retrain")
    out = []
    for ds in datasets:
        batch = source.add_dataframe_asset(ds.name).add_batch_definition_whole_dataframe("whole")
        # expectations given at construction: one store write instead of one per expectation
        suite = context.suites.add(gx.ExpectationSuite(name=ds.name, expectations=ds.expectations))
        vd = context.validation_definitions.add(
            gx.ValidationDefinition(name=ds.name, data=batch, suite=suite)
        )
        result = vd.run(
            batch_parameters={"dataframe": ds.frame},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ds.index_columns},
        )
        for res in result.results:  # a crashed metric is a bug here, never a finding about the data
            if res.exception_info and res.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"GX could not evaluate {res.expectation_config.type} on {ds.name}: "
                    f"{res.exception_info.get('exception_message')}"
                )
        out.append((ds, result))
    site = None
    if docs_root:
        context.build_data_docs()
        site = Path(docs_root) / "gx" / "uncommitted" / "data_docs" / "local_site"
    return out, site


def run_with_docs(datasets: list[Dataset], docs: Path) -> tuple[Results, str]:
    """Run in a GX file context in a scratch folder beside `docs`, then put the built site in its place.

    `docs` is swapped whole (`tasks.files.staged_dir`): a reader sees the old site or the new one.
    """
    docs.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{docs.name}.gx-", dir=docs.parent) as work_s:
        work = Path(work_s)
        results, site = run_datasets(datasets, docs_root=work / "project")
        if site is None or not (site / "index.html").is_file():
            raise RuntimeError(f"GX built no Data Docs under {work}")
        with staged_dir(docs, replace=True) as stage:
            for item in site.iterdir():
                os.replace(item, stage / item.name)
    return results, str(docs / "index.html")


def _context(mode: Literal["ephemeral", "file"], root: Path | None = None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode=mode, project_root_dir=root) if root else gx.get_context(mode=mode)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context
