"""Great Expectations setup and the three custom expectations: the row-level rules no built-in expresses.

Each is a map expectation, so GX's own result carries the unexpected values and their `line` index
column. Importing this module imports GX (~3 s): only `validate_dir` does it, never at DAG parse time.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

# Before the import: GX would otherwise phone home and log 200+ INFO lines once Airflow configured logging.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import pandas as pd  # noqa: E402
from great_expectations.execution_engine import PandasExecutionEngine  # noqa: E402
from great_expectations.expectations.expectation import (  # noqa: E402
    ColumnMapExpectation,
    ColumnPairMapExpectation,
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

from tasks.validation.rules import iob_error  # noqa: E402


def quiet_gx_logs() -> None:
    """GX sets some module loggers to INFO explicitly (data_context.types.base): lift them to WARNING too."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        quiet_enough = not isinstance(logger, logging.Logger) or logger.level in (0, *range(30, 60))
        if name.startswith("great_expectations.") and not quiet_enough:
            logger.setLevel(logging.WARNING)


quiet_gx_logs()


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
