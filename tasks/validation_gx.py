"""Great Expectations side of `tasks.validation`: custom expectations and the runner.

Imported lazily by `tasks.validation.validate_dir` (GX takes ~3 s to import), never at DAG parse time.
The three custom expectations cover the row-level rules that no built-in expresses; each is a map
expectation, so GX's own result carries the unexpected values and their `line` index column.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# Before the import: GX would otherwise phone home and log 200+ INFO lines once Airflow configured logging.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations as gx  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.core.expectation_validation_result import (  # noqa: E402
    ExpectationSuiteValidationResult,
)
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import (  # noqa: E402
    ColumnMapExpectation,
    ColumnPairMapExpectation,
    Expectation,
    MulticolumnMapExpectation,
)
from great_expectations.expectations.metrics import (  # noqa: E402
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider import (  # noqa: E402
    ColumnPairMapMetricProvider,
    MulticolumnMapMetricProvider,
    column_pair_condition_partial,
)
from great_expectations.expectations.metrics.map_metric_provider.multicolumn_condition_partial import (  # noqa: E402
    multicolumn_condition_partial,
)


def _quiet_gx_logs() -> None:
    """GX sets some module loggers to INFO explicitly (data_context.types.base): lift them to WARNING too."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        quiet_enough = not isinstance(logger, logging.Logger) or logger.level in (0, *range(30, 60))
        if name.startswith("great_expectations.") and not quiet_enough:
            logger.setLevel(logging.WARNING)


_quiet_gx_logs()


def iob_error(tags: str) -> tuple[int, str] | None:
    """The first IOB2 violation in a space-separated tag line: (1-based token index, why), or None."""
    prev = "O"
    for i, tag in enumerate(tags.split(" "), start=1):
        if tag == "I" and prev == "O":
            return i, "starts the line" if i == 1 else "follows O"
        prev = tag
    return None


def token_count(value: str) -> int:
    return value.count(" ") + 1


# --- custom metrics and expectations ------------------------------------------------------------------


class ColumnValuesValidIob(ColumnMapMetricProvider):
    condition_metric_name = "column_values.ncbi_valid_iob"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return column.map(lambda tags: iob_error(tags) is None)


class ExpectColumnValuesToBeValidIobSequence(ColumnMapExpectation):
    """Each value is a space-separated IOB2 tag line in which no I starts the line or follows an O."""

    map_metric = "column_values.ncbi_valid_iob"
    success_keys = ("mostly",)


class ColumnPairEqualTokenCounts(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.ncbi_equal_token_counts"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_A",
        "column_B",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ()

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: pd.Series, column_B: pd.Series, **kwargs: Any) -> pd.Series:
        return column_A.str.count(" ") == column_B.str.count(" ")


class ExpectColumnPairValuesToHaveEqualTokenCounts(ColumnPairMapExpectation):
    """Row by row, column A and column B hold as many space-separated items (tokens and their tags)."""

    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = (
        "either_value_is_missing"  # a missing line is the line-count rule's finding, not this one's
    )
    map_metric = "column_pair_values.ncbi_equal_token_counts"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")


class MulticolumnValuesInOneSplit(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.ncbi_in_one_split"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_list",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ("min_tokens", "max_tokens")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(
        cls, column_list: pd.DataFrame, min_tokens: int = 1, max_tokens: int | None = None, **kwargs: Any
    ) -> pd.Series:
        split, key = column_list.columns[:2]
        shared = column_list.groupby(key, sort=False)[split].transform("nunique") > 1
        tokens = column_list[key].astype(str).str.count(" ") + 1
        in_scope = tokens >= min_tokens
        if max_tokens is not None:
            in_scope &= tokens <= max_tokens
        return ~(shared & in_scope)


class ExpectColumnValuesToBeInOneSplit(MulticolumnMapExpectation):
    """column_list = [split, key]: no key value (text, PMID) occurs in more than one split (leakage).

    Only values of `min_tokens`..`max_tokens` space-separated tokens are judged, so one rule can refuse
    shared sentences while a second one, at warning severity, lists the short boilerplate ones.
    """

    min_tokens: int = 1
    max_tokens: int | None = None
    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "any_value_is_missing"
    map_metric = "multicolumn_values.ncbi_in_one_split"
    success_keys = ("mostly", "ignore_row_if", "min_tokens", "max_tokens")


# --- running suites -----------------------------------------------------------------------------------


@dataclass
class Dataset:
    """One dataframe and the expectations GX checks on it (one asset, one suite, one validation)."""

    name: str
    frame: pd.DataFrame
    expectations: list[Expectation]
    index_columns: list[str] = field(default_factory=lambda: ["line"])


def _context(mode: Literal["ephemeral", "file"], root: Path | None = None) -> Any:
    context = gx.get_context(mode=mode, project_root_dir=root) if root else gx.get_context(mode=mode)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def run_datasets(
    datasets: list[Dataset], docs_root: Path | None = None
) -> tuple[list[tuple[Dataset, ExpectationSuiteValidationResult]], Path | None]:
    """Validate each dataset in one GX context; with `docs_root`, a file context there builds Data Docs.

    Returns the (dataset, suite result) pairs and the Data Docs site directory (or None).
    """
    _quiet_gx_logs()
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
