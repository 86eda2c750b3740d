"""Great Expectations (GX Core 1.x) suites on the raw loan tape.

`validate_loan_tape` runs one expectation suite over the loans table (and, when
given, one over the performance history) and folds the results into a fixed
list of `ExpectationOutcome`s, one per Dagster asset check. Blocking checks say
the tape cannot be used (empty, duplicate or missing loan ids, the declared
target or another declared column missing); warnings flag suspicious values
(null rates, negative amounts, interest rates out of range, gaps in a loan's
monthly periods). Each failed expectation carries its failing examples so the
Dagster UI shows what to fix.

The module has no Dagster import, so it can be tested alone. GX runs in an
ephemeral, in-memory context: nothing is written to disk and, with analytics
off, nothing is sent anywhere.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl

from models.errors import TenantConfigError
from models.tape.names import is_amount_name, is_interest_rate_name
from models.tape.features import CANONICAL_ALIASES, month_index, resolve_columns
from models.tape.schema import TableSchema

MAX_EXAMPLES = 10

BLOCKING_CHECKS: tuple[str, ...] = (
    "tape_not_empty",
    "loan_ids_unique",
    "target_column_present",
    "declared_columns_present",
)
WARNING_CHECKS: tuple[str, ...] = (
    "null_rates",
    "non_negative_amounts",
    "interest_rate_in_range",
    "performance_period_gaps",
)
CHECK_NAMES: tuple[str, ...] = BLOCKING_CHECKS + WARNING_CHECKS

# Canonical names (models.tape.features.CANONICAL_ALIASES) of money columns that can never be negative; a column
# whose words name an amount (`models.tape.names.is_amount_name`: credit_amount, LIMIT_BAL) is checked too.
AMOUNT_CANONICALS: tuple[str, ...] = (
    "annual_income",
    "monthly_income",
    "monthly_debt",
    "installment",
    "loan_amount",
    "funded_amount",
    "property_value",
    "collateral_value",
    "revolving_balance",
    "credit_limit",
    "balance",
    "payment",
)

_CHECK_KEY = "credittwin_check"
_STEP_COLUMN = "worst_period_step"


@dataclass
class ExpectationOutcome:
    """The result of one asset check: a rule, whether it blocks, and what failed.

    Attributes:
        check: stable snake_case name, used as the Dagster asset-check name.
        blocking: True when a failure makes the tape unusable.
        passed: True when every expectation of the check held (or it does not apply).
        description: the rule in words, with the columns it covered or why it does not apply.
        not_applicable: the tape has nothing this check could look at (no loan id, no history, no rate column,
            no target declared); `passed` is True so it never refuses a tape, and the asset reports it as a
            warning with the reason, never as a pass.
        details: one JSON-safe dict per failed expectation: `expectation`,
            `column`, `observed_value`, `unexpected_count`,
            `unexpected_percent`, `examples` (up to 10 failing values) and,
            where the table has a loan id, `example_loan_ids`.
    """

    check: str
    blocking: bool
    passed: bool
    description: str
    details: list[dict[str, Any]] = field(default_factory=list)
    not_applicable: bool = False

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-safe dict for Dagster metadata (`AssetCheckResult(metadata=...)`)."""
        metadata = {
            "check": self.check,
            "blocking": self.blocking,
            "passed": self.passed,
            "description": self.description,
            "failed_expectations": len(self.details),
            "details": _json_safe(self.details),
        }
        if self.not_applicable:
            metadata["not_evaluated"] = self.description
        return metadata


def _json_safe(value: Any) -> Any:
    """Recursively turn numpy/pandas scalars, NaN, dates and decimals into JSON types."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (int, float)):
        # numpy / pandas scalars; pandas NaT and NA have no useful item()
        try:
            value = item()
        except (ValueError, TypeError):
            return str(value)
        if isinstance(value, (dt.datetime, dt.date)):
            return value.isoformat()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if str(value) in ("NaT", "<NA>", "nan"):
        return None
    return str(value)


@dataclass
class _Plan:
    """What one check expects, before GX runs: expectations to add or an immediate outcome."""

    check: str
    blocking: bool
    description: str
    expectations: list[Any] = field(default_factory=list)
    table: str = "loans"
    not_applicable: bool = False


def _ephemeral_context(gx: Any) -> Any:
    """An in-memory GX context: no files, no progress bars, and analytics off in its own configuration."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _tagged(expectation_cls: Any, check: str, **kwargs: Any) -> Any:
    """An expectation whose meta names its check, to route GX's results (which come back unordered)."""
    return expectation_cls(meta={_CHECK_KEY: check}, **kwargs)


def _matching_columns(columns: list[str], canonicals: tuple[str, ...], words: Callable[[str], bool]) -> list[str]:
    """Every column whose normalised name is an alias of one of `canonicals`, or whose words `words` accepts.

    The aliases alone miss most public layouts (credit_amount, MonthlyIncome,
    LIMIT_BAL, ORIGINAL_UPB, loan_int_rate), so names are also read by their
    words with the matchers the stress test's column search shares
    (`models.tape.names.is_amount_name`, `is_interest_rate_name`).
    """
    aliases = {alias for name in canonicals for alias in CANONICAL_ALIASES[name]}
    return [c for c in columns if c.strip().lower().replace(" ", "_").replace("-", "_") in aliases or words(c)]


def _check_arguments(null_rate_warn: float, interest_rate_range: tuple[float, float]) -> None:
    if not 0.0 <= null_rate_warn <= 1.0:
        raise TenantConfigError(
            f"null_rate_warn must lie in [0, 1], got {null_rate_warn}.",
            fix="set null_rate_warn to the largest acceptable share of nulls, e.g. 0.2.",
        )
    low, high = interest_rate_range
    if not low < high:
        raise TenantConfigError(
            f"interest_rate_range must be (low, high) with low < high, got {interest_rate_range}.",
            fix="give the range in percent, e.g. (0.0, 100.0).",
        )


def _loan_plans(
    gx: Any,
    loans: pl.DataFrame,
    *,
    schema: TableSchema,
    declared_columns: list[str],
    null_rate_warn: float,
    interest_rate_range: tuple[float, float],
) -> list[_Plan]:
    E = gx.expectations
    columns = loans.columns
    plans: list[_Plan] = []

    plans.append(
        _Plan(
            "tape_not_empty",
            True,
            "the loan tape has at least one row",
            [_tagged(E.ExpectTableRowCountToBeBetween, "tape_not_empty", min_value=1)],
        )
    )

    id_col = schema.id_column
    if id_col is None:
        plans.append(
            _Plan("loan_ids_unique", True, "not applicable: the schema has no loan id column", not_applicable=True)
        )
    elif id_col not in columns:
        plans.append(
            _Plan(
                "loan_ids_unique",
                True,
                f"the loan id column '{id_col}' exists, has no nulls and no repeats",
                [_tagged(E.ExpectColumnToExist, "loan_ids_unique", column=id_col)],
            )
        )
    else:
        plans.append(
            _Plan(
                "loan_ids_unique",
                True,
                f"the loan id column '{id_col}' exists, has no nulls and no repeats",
                [
                    _tagged(E.ExpectColumnToExist, "loan_ids_unique", column=id_col),
                    _tagged(E.ExpectColumnValuesToNotBeNull, "loan_ids_unique", column=id_col),
                    _tagged(E.ExpectColumnValuesToBeUnique, "loan_ids_unique", column=id_col),
                ],
            )
        )

    if schema.target is None:
        plans.append(
            _Plan(
                "target_column_present",
                True,
                "not applicable: tenant.yaml declares no target column",
                not_applicable=True,
            )
        )
    else:
        plans.append(
            _Plan(
                "target_column_present",
                True,
                f"the declared target column '{schema.target}' is in the tape",
                [_tagged(E.ExpectColumnToExist, "target_column_present", column=schema.target)],
            )
        )

    declared = list(dict.fromkeys(declared_columns))
    if not declared:
        plans.append(
            _Plan(
                "declared_columns_present",
                True,
                "not applicable: tenant.yaml names no columns",
                not_applicable=True,
            )
        )
    else:
        plans.append(
            _Plan(
                "declared_columns_present",
                True,
                f"every column named in tenant.yaml is in the tape: {declared}",
                [_tagged(E.ExpectColumnToExist, "declared_columns_present", column=c) for c in declared],
            )
        )

    mostly = 1.0 - null_rate_warn
    plans.append(
        _Plan(
            "null_rates",
            False,
            f"each column is at most {null_rate_warn:.0%} null (checked: {len(columns)} columns)",
            [_tagged(E.ExpectColumnValuesToNotBeNull, "null_rates", column=c, mostly=mostly) for c in columns],
        )
    )

    numeric = [c for c in columns if loans.schema[c].is_numeric()]
    amounts = _matching_columns(numeric, AMOUNT_CANONICALS, is_amount_name)
    skipped_amounts = [c for c in _matching_columns(columns, AMOUNT_CANONICALS, is_amount_name) if c not in amounts]
    if amounts:
        text = f"income, amount and balance columns are never negative (checked: {amounts})"
        if skipped_amounts:
            text += f"; not numeric, so not checked: {skipped_amounts}"
        plans.append(
            _Plan(
                "non_negative_amounts",
                False,
                text,
                [
                    _tagged(E.ExpectColumnValuesToBeBetween, "non_negative_amounts", column=c, min_value=0)
                    for c in amounts
                ],
            )
        )
    else:
        plans.append(
            _Plan(
                "non_negative_amounts",
                False,
                "not applicable: no numeric income, amount or balance column found"
                + (f" (not numeric: {skipped_amounts})" if skipped_amounts else ""),
                not_applicable=True,
            )
        )

    rates = _matching_columns(numeric, ("interest_rate",), is_interest_rate_name)
    low, high = interest_rate_range
    rate_expectations = []
    ranges = []
    for column in rates:
        top = loans.get_column(column).cast(pl.Float64).max()
        # A rate column whose values all sit at or under 1 holds fractions (0.07 for 7 %).
        if top is not None and top <= 1.0 < high:
            col_low, col_high = low / 100.0, high / 100.0
        else:
            col_low, col_high = low, high
        ranges.append(f"{column} in [{col_low:g}, {col_high:g}]")
        rate_expectations.append(
            _tagged(
                E.ExpectColumnValuesToBeBetween,
                "interest_rate_in_range",
                column=column,
                min_value=col_low,
                max_value=col_high,
            )
        )
    if rates:
        plans.append(
            _Plan(
                "interest_rate_in_range",
                False,
                "interest rates lie in range (fractions when every value is <= 1): " + ", ".join(ranges),
                rate_expectations,
            )
        )
    else:
        plans.append(
            _Plan(
                "interest_rate_in_range",
                False,
                "not applicable: no numeric interest rate column found "
                f"(names: {', '.join(CANONICAL_ALIASES['interest_rate'])}, or a rate qualified only as interest, "
                "note, original, loan or borrower, such as loan_int_rate, ORIGINAL_INTEREST_RATE or BorrowerRate, or an APR)",
                not_applicable=True,
            )
        )
    return plans


def _period_steps(performance: pl.DataFrame, id_col: str, period_col: str) -> pl.DataFrame | None:
    """Per loan, the worst step in months between successive periods; None when periods are unreadable."""
    month = month_index(performance, period_col)
    if month is None:
        return None
    narrow = performance.select(pl.col(id_col), month.alias("_month")).drop_nulls()
    loan, months = pl.col(id_col), pl.col("_month")
    same_loan = loan == loan.shift(1)
    in_order = (loan > loan.shift(1)) | (same_loan & (months >= months.shift(1)))
    # Histories usually arrive loan by loan in month order; sorting 24M rows is the slow part.
    if not narrow.select(in_order.slice(1).all()).item():
        narrow = narrow.sort(id_col, "_month")
    step = pl.col("_step")
    # One row per loan, holding its worst step (a gap above 1, else a repeat below 1), so GX
    # counts loans, not months, and a 24M-row history reaches GX as 1M rows.
    return (
        narrow.lazy()
        .select(loan, pl.when(same_loan).then(months - months.shift(1)).alias("_step"))
        .drop_nulls("_step")
        .group_by(id_col)
        .agg(step.max().alias("_max"), step.min().alias("_min"))
        .select(loan, pl.when(pl.col("_max") > 1).then("_max").otherwise("_min").alias(_STEP_COLUMN))
        .sort(id_col)
        .collect()
    )


def _performance_plan(
    gx: Any, performance: pl.DataFrame | None, schema: TableSchema
) -> tuple[_Plan, pl.DataFrame | None, str | None]:
    """The period-gap check, the step table GX validates, and its loan id column."""
    name = "performance_period_gaps"
    description = "each loan's monthly periods are consecutive (step of 1 month, no gaps, no repeats)"
    if performance is None:
        return _Plan(name, False, "not applicable: no performance history supplied", not_applicable=True), None, None
    resolved = resolve_columns(performance.columns)
    id_col = schema.id_column if schema.id_column in performance.columns else resolved.get("loan_id")
    period_col = resolved.get("period")
    if id_col is None or period_col is None:
        missing = [n for n, c in (("loan id", id_col), ("period", period_col)) if c is None]
        return (
            _Plan(
                name,
                False,
                f"not applicable: the performance history has no {' or '.join(missing)} column "
                f"(period names: {', '.join(CANONICAL_ALIASES['period'])})",
                not_applicable=True,
            ),
            None,
            None,
        )
    steps = _period_steps(performance, id_col, period_col)
    if steps is None:
        return (
            _Plan(
                name,
                False,
                f"{description}; period column '{period_col}' is {performance.schema[period_col]}, "
                "neither a whole month number nor a date, so the periods could not be checked",
            ),
            None,
            None,
        )
    plan = _Plan(
        name,
        False,
        f"{description} (loan id '{id_col}', period '{period_col}')",
        [
            _tagged(
                gx.expectations.ExpectColumnValuesToBeBetween,
                name,
                column=_STEP_COLUMN,
                min_value=1,
                max_value=1,
            )
        ],
        table="performance",
    )
    return plan, steps, id_col


def _detail(result: Any, frame: pl.DataFrame | None, id_col: str | None) -> dict[str, Any]:
    """One failed expectation as a JSON-safe dict with up to MAX_EXAMPLES failing examples."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    payload = dict(result.result or {})
    column = kwargs.get("column")
    detail: dict[str, Any] = {
        "expectation": config.type,
        "column": column,
        "observed_value": payload.get("observed_value"),
        "unexpected_count": payload.get("unexpected_count"),
        "unexpected_percent": payload.get("unexpected_percent"),
        "examples": list(payload.get("partial_unexpected_list") or [])[:MAX_EXAMPLES],
    }
    bounds = {k: kwargs[k] for k in ("min_value", "max_value", "mostly") if k in kwargs}
    if bounds:
        detail["expected"] = bounds
    if config.type == "expect_column_to_exist" and frame is not None:
        detail["observed_value"] = "missing"
        detail["similar_columns"] = difflib.get_close_matches(str(column), frame.columns, n=3, cutoff=0.6)
    raw_indices = payload.get("partial_unexpected_index_list") or []
    indices = [int(i) for i in raw_indices if isinstance(i, (int, np.integer))][:MAX_EXAMPLES]
    if indices and frame is not None:
        detail["example_rows"] = indices
        if column in frame.columns:
            # Read the values back from polars: pandas turns integers with nulls into floats.
            detail["examples"] = frame.get_column(column).gather(indices).to_list()
    if config.type == "expect_column_values_to_not_be_null":
        detail["examples"] = []
    if indices and frame is not None and id_col is not None and id_col in frame.columns:
        ids = frame.get_column(id_col).gather(indices).to_list()
        detail["example_loan_ids"] = ids
    if column == _STEP_COLUMN:
        detail["observed_value"] = "loans whose periods skip or repeat a month (examples: each one's worst step)"
        # Rows of the derived per-loan table mean nothing to a user; the loan ids do.
        detail.pop("example_rows", None)
    info = result.exception_info or {}
    if isinstance(info, dict) and info.get("raised_exception"):
        detail["error"] = str(info.get("exception_message"))
    elif isinstance(info, dict):
        messages = [
            v.get("exception_message") for v in info.values() if isinstance(v, dict) and v.get("raised_exception")
        ]
        if messages:
            detail["error"] = str(messages[0])
    return _json_safe(detail)


def _expectation_key(kind: str, kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return kind, kwargs.get("column")


def _run_suite(gx: Any, context: Any, name: str, frame: pl.DataFrame, expectations: list[Any]) -> list[Any]:
    """Validate all `expectations` on `frame` in one suite run; returns GX's per-expectation results."""
    if not expectations:
        return []
    batch_definition = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(f"{name}_asset")
        .add_batch_definition_whole_dataframe(f"{name}_batch")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    suite = context.suites.add(gx.ExpectationSuite(name=f"credittwin_{name}", expectations=expectations))
    # SUMMARY keeps only a partial list of failing values; COMPLETE would carry every failing row.
    validation = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
    )
    return list(validation.results)


def _outcome(plan: _Plan, results: list[Any], frame: pl.DataFrame | None, id_col: str | None) -> ExpectationOutcome:
    """Fold one check's GX results into its outcome, failed expectations in the plan's order."""
    if plan.not_applicable:
        return ExpectationOutcome(plan.check, plan.blocking, True, plan.description, not_applicable=True)
    if not plan.expectations:
        # The check applies but could not run (e.g. unreadable periods): it fails, saying why.
        unreadable = {
            "expectation": None,
            "column": None,
            "observed_value": None,
            "unexpected_count": None,
            "unexpected_percent": None,
            "examples": [],
            "error": plan.description,
        }
        return ExpectationOutcome(plan.check, plan.blocking, False, plan.description, [unreadable])
    position = {
        _expectation_key(e.expectation_type, e.configuration.kwargs): i for i, e in enumerate(plan.expectations)
    }

    def plan_order(result: Any) -> int:
        key = _expectation_key(result.expectation_config.type, result.expectation_config.kwargs)
        return position.get(key, len(position))

    failed = sorted((r for r in results if not r.success), key=plan_order)
    # A result GX did not return counts as a failure, never as a pass.
    passed = not failed and len(results) == len(plan.expectations)
    details = [_detail(r, frame, id_col) for r in failed]
    return ExpectationOutcome(plan.check, plan.blocking, passed, plan.description, details)


def validate_loan_tape(
    loans: pl.DataFrame,
    *,
    schema: TableSchema,
    declared_columns: list[str],
    performance: pl.DataFrame | None = None,
    null_rate_warn: float = 0.2,
    interest_rate_range: tuple[float, float] = (0.0, 100.0),
) -> list[ExpectationOutcome]:
    """Validate the raw loan tape (and its performance history) with Great Expectations.

    All expectations on one table run in one suite validation on one batch.
    Every name in `CHECK_NAMES` appears once in the output, in that order;
    a check that does not apply (no target declared, no history, ...) is
    reported passed with a description starting "not applicable".

    Args:
        loans: the loan tape as uploaded.
        schema: its schema (for the loan id and target columns).
        declared_columns: every column tenant.yaml names (types, roles, target ...).
        performance: the monthly performance history, or None.
        null_rate_warn: the largest share of nulls a column may have before a warning.
        interest_rate_range: accepted interest rates in percent; a column whose
            values are all <= 1 is read as fractions and checked against the
            range divided by 100.

    Returns:
        One `ExpectationOutcome` per check, blocking checks first.

    Raises:
        TenantConfigError: `null_rate_warn` or `interest_rate_range` is out of range.
    """
    import great_expectations as gx  # here, not at the top: importing it takes seconds

    _check_arguments(null_rate_warn, interest_rate_range)
    context = _ephemeral_context(gx)

    plans = _loan_plans(
        gx,
        loans,
        schema=schema,
        declared_columns=declared_columns,
        null_rate_warn=null_rate_warn,
        interest_rate_range=interest_rate_range,
    )
    perf_plan, steps, perf_id = _performance_plan(gx, performance, schema)
    plans.append(perf_plan)

    frames: dict[str, tuple[pl.DataFrame | None, str | None]] = {
        "loans": (loans, schema.id_column),
        "performance": (steps, perf_id),
    }
    results_by_check: dict[str, list[Any]] = {p.check: [] for p in plans}
    for table, (frame, _) in frames.items():
        expectations = [e for p in plans if p.table == table for e in p.expectations]
        if frame is None or not expectations:
            continue
        # GX sees only the step column of the history; the loan ids stay in polars for the examples.
        checked = frame if table == "loans" else frame.select(_STEP_COLUMN)
        for result in _run_suite(gx, context, table, checked, expectations):
            check = (result.expectation_config.meta or {}).get(_CHECK_KEY)
            results_by_check[check].append(result)

    ordered = sorted(plans, key=lambda p: CHECK_NAMES.index(p.check))
    return [_outcome(plan, results_by_check[plan.check], *frames[plan.table]) for plan in ordered]
