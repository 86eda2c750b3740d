"""A performance file (monthly loan histories) read into canonical form and checked against its loans file.

Columns are found through tenant.yaml's `performance:` block or common aliases;
status labels as servicers spell them, and periods written as months on book,
months or calendar indices, all become one canonical history. How the file
wrote them is kept (`PerformanceHistory.vocabulary`), so a release writes a
synthetic history back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from models.errors import InvalidDataError, TenantConfigError
from models.sequences.histories import EXCEL_EPOCH, EXCEL_SERIAL_FORMAT, arrears_days, in_loan_order, month_index
from models.sequences.states import STATES, canonical_states, months_behind_width, zero_padding
from models.tape.ingest import numbered_columns
from models.tape.schema import normalise_column_name, resolve_aliases
from models.tape.text_types import DATE_FORMATS

PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "loan_id", "period", "status", "days_past_due", "balance", "payment", "zero_balance_code",
)
# Agency zero-balance codes (Freddie Mac and Fannie Mae loan-level files) on the month a loan leaves the file:
# 01 prepaid or matured; 02 third-party sale, 03 short sale or charge-off, 09 REO disposition or deed in lieu,
# 15 note sale: credit events, so default. Others (06 repurchase, 16 reperforming sale, 96 removal) end the
# history without an outcome, as a loan that leaves an extract does.
PREPAID_ZERO_BALANCE_CODES = ("01",)
DEFAULT_ZERO_BALANCE_CODES = ("02", "03", "09", "15")
PERFORMANCE_ALIASES: dict[str, tuple[str, ...]] = {
    "loan_id": ("loan_id", "loanid", "loan_number", "loan_no", "account_id", "account_number", "acct_id", "id"),
    "period": (
        "period", "mob", "months_on_book", "month_on_book", "month", "loan_age", "reporting_month",
        "report_month", "reporting_date", "report_date", "as_of_date", "asof_date", "snapshot_date", "date",
    ),
    "status": ("status", "state", "loan_status", "delinquency_status", "perf_status", "performance_status", "payment_status"),
    "days_past_due": ("days_past_due", "dpd", "days_delinquent", "delinquency_days", "days_in_arrears", "days_overdue"),
    "balance": (
        "balance", "outstanding_balance", "current_balance", "principal_balance", "outstanding_principal",
        "upb", "unpaid_principal_balance", "ending_balance", "outstanding", "outstanding_amount", "balance_outstanding",
        "principal_outstanding", "remaining_balance", "remaining_principal", "loan_balance", "current_upb",
        "closing_balance", "end_balance",
    ),
    "payment": (
        "payment", "payment_amount", "amount_paid", "paid_amount", "total_payment", "installment_paid", "actual_payment",
        "payment_received", "amount_received", "repayment", "repayment_amount", "total_paid", "paid",
    ),
    "zero_balance_code": ("zero_balance_code", "zero_bal_code", "zero_balance_cd", "zb_code", "zba_code", "zbc"),
}
_REPORTING_MONTH_ALIASES = ("reporting_month", "report_month", "reporting_date", "report_date", "as_of_date", "asof_date", "snapshot_date", "date")


def _resolve_performance_columns(
    perf: pl.DataFrame, *, mapping: dict, loan_id_column: str, tenant: str | None, file: str | None,
    known_ids: pl.Series | None = None,
) -> dict[str, str]:
    """Canonical name -> the performance file's column, from `mapping` then aliases (`known_ids`, the loans file's
    ids, only guide the example of a refusal)."""
    unknown = sorted(set(mapping) - set(PERFORMANCE_COLUMNS))
    if unknown:
        raise TenantConfigError(
            f"unknown key(s) {', '.join(unknown)} under performance.",
            tenant=tenant,
            file=file,
            fix=f"use only {', '.join(PERFORMANCE_COLUMNS)}.",
        )
    resolved: dict[str, str] = {}
    for key, column in mapping.items():
        if not column:
            continue
        if column not in perf.columns:
            raise InvalidDataError(
                f"performance.{key} in tenant.yaml names this column but the file has no such column.",
                tenant=tenant,
                file=file,
                column=str(column),
                fix=f"set performance.{key} to one of the file's columns ({', '.join(perf.columns[:12])}).",
            )
        resolved[key] = column
    # The loans file's own id name is the likeliest name of the history's loan id.
    aliases = {key: PERFORMANCE_ALIASES[key] for key in PERFORMANCE_COLUMNS}
    aliases["loan_id"] = (normalise_column_name(loan_id_column),) + aliases["loan_id"]
    resolved = resolve_aliases(perf.columns, aliases, resolved=resolved)
    missing = [k for k in ("loan_id", "period") if k not in resolved]
    if "status" not in resolved and "days_past_due" not in resolved:
        missing.append("status (or days_past_due)")
    if missing:
        reason = f"required performance column(s) not found: {', '.join(missing)}."
        fix = "rename the columns to loan_id, period, status (or days_past_due), or map them under `performance:` in tenant.yaml."
        if headerless(perf.columns):
            # The reader named the fields of a file without a header line: no alias can find them, only a mapping.
            keys = [k.split(" ")[0] for k in missing]
            guessed = _guess_columns(perf, keys, resolved, known_ids=known_ids)
            reason += (f" The file has no header line: line 1 holds data, so its {perf.width} columns are named "
                       f"column_1 to column_{perf.width}.")
            fix = (f"map them under `performance:` in tenant.yaml (e.g. performance: "
                   f"{{{', '.join(f'{k}: {c}' for k, c in guessed.items())}}}; the columns shown are a guess from "
                   "the first rows' values, check each against the file's layout), or add a header line to the file.")
        raise InvalidDataError(reason, tenant=tenant, file=file, column=missing[0].split(" ")[0], fix=fix)
    return resolved


def headerless(columns: list[str]) -> bool:
    """Whether `columns` are the names the CSV reader gives a file without a header line (column_1, column_2, ...)."""
    return bool(columns) and list(columns) == numbered_columns(len(columns))


def _guess_columns(perf: pl.DataFrame, keys: list[str], resolved: dict[str, str], *, known_ids: pl.Series | None) -> dict[str, str]:
    """key -> a column of a headerless history that may hold it, for the refusal's example, from the first rows.

    The loan id is the first column at least half of whose values are loans file ids, the period the first whose
    values read as months (201903, 2019-03), the status the first whose few labels all read as states (numbers up
    to 180). A key nothing fits gets the next column not yet shown, so the example always names columns the file has.
    """
    sample = perf.head(2000)
    ids = None if known_ids is None else known_ids.cast(pl.String).drop_nulls().unique()
    taken = set(resolved.values())
    free = [c for c in sample.columns if c not in taken]

    def loan_id(series: pl.Series) -> bool:
        if ids is None or not ids.len():
            return False
        values = series.drop_nulls().cast(pl.String)
        return bool(values.len()) and values.is_in(ids.implode()).mean() >= 0.5

    def period(series: pl.Series) -> bool:
        values = series.drop_nulls()
        if not values.len():
            return False
        if values.dtype == pl.Date or isinstance(values.dtype, pl.Datetime):
            return True
        if values.dtype == pl.String:
            return _text_months(values) is not None
        return values.dtype.is_integer() and (_yyyymm(values.cast(pl.Int64)) is not None or _mmyyyy(values.cast(pl.Int64)) is not None)

    def status(series: pl.Series) -> bool:
        if series.dtype.is_float() or not (series.dtype.is_integer() or series.dtype == pl.String):
            return False
        labels = series.drop_nulls().cast(pl.String).str.strip_chars().unique().to_list()
        # A status is a few labels, numbers among them small (months behind, day buckets): not amounts or dates.
        small = all(int(label) <= 180 for label in labels if label.isdigit())
        return 0 < len(labels) <= 30 and small and all(state is not None for state in canonical_states(labels).values())

    tests = {"loan_id": loan_id, "period": period, "status": status}
    out: dict[str, str] = {}
    for key in keys:
        fits = tests.get(key)
        column = next((c for c in free if fits is not None and fits(sample.get_column(c))), None)
        if column is None:
            column = free[0] if free else f"column_{sample.width}"
        out[key] = column
        if column in free:
            free.remove(column)
    return out


# Month spellings of a text period column, tried in order; each must read every value with a plausible year.
# Six digits are YYYYMM (201902) or Fannie Mae's MMYYYY ACT_PERIOD (022019): with years 1900-2100 the two
# cannot both read a value (YYYYMM starts 19-21, MMYYYY 01-12), so the one that reads the whole column is it.
_MONTH_TEXT_FORMATS = (
    "%Y-%m", "%Y/%m", "%m/%Y", "%m-%Y", "%m.%Y", "%Y.%m", "%b-%Y", "%b %Y", "%B %Y", "%b-%y", "%b %y", "%Y%m", "%m%Y",
)
# Whole-date spellings: the reader's numeric day formats, plus the compact 20190331 of servicing extracts.
_DATE_TEXT_FORMATS = tuple(f for f in DATE_FORMATS if "%d" in f and "%H" not in f and "%b" not in f) + ("%Y%m%d",)


def _text_months(values: pl.Series) -> tuple[pl.Series, str] | None:
    """Text periods ("03/2019", "Mar-2019", "201903", "31/03/2019") as Dates, with the one format that reads them all."""
    text = values.cast(pl.String).str.strip_chars()
    six_digits = bool(text.drop_nulls().str.contains(r"^[0-9]{6}$").all())
    for formats, prefix in ((_MONTH_TEXT_FORMATS, "01 "), (_DATE_TEXT_FORMATS, "")):
        for fmt in formats:
            if fmt == "%m%Y" and not six_digits:
                continue  # MMYYYY is read only as Fannie Mae writes it, two digits of month and four of year
            parsed = (prefix + text).str.to_date(("%d " if prefix else "") + fmt, strict=False)
            years = parsed.dt.year().drop_nulls()
            if parsed.null_count() == text.null_count() and years.len() and years.min() >= 1900 and years.max() <= 2100:
                return parsed, fmt
    return None


def _yyyymm(values: pl.Series) -> pl.Series | None:
    """Whole-number periods written as year and month (201903) as Dates, or None when they are not."""
    v = values.drop_nulls()
    if not v.len() or v.min() < 190001 or v.max() > 210012 or not bool(((v % 100 >= 1) & (v % 100 <= 12)).all()):
        return None
    return pl.select(pl.date(values // 100, values % 100, 1)).to_series()


def _mmyyyy(values: pl.Series) -> pl.Series | None:
    """Whole-number periods written as month and year (Fannie Mae's ACT_PERIOD 102019, or 22019 for 022019 read as a
    number) as Dates, or None when they are not.

    Every value must read as a month 1-12 and a year 1900-2100; such numbers lie between 11900 and 122100, below
    any YYYYMM (190001 and up), so a column is never both.
    """
    v = values.drop_nulls()
    month, year = v // 10000, v % 10000
    if not v.len() or not bool(((month >= 1) & (month <= 12) & (year >= 1900) & (year <= 2100)).all()):
        return None
    return pl.select(pl.date(values % 10000, values // 10000, 1)).to_series()


# Spreadsheet serial day numbers (days since 1899-12-30, `EXCEL_EPOCH`) of 1990-01-01 to 2059-12-31: the range no
# day count since 1970 of a plausible month reaches (those end at 32,872 for 2059-12-31), so neither is read as the other.
_EXCEL_SERIALS = (32874, 58439)


def _excel_serial(values: pl.Series) -> pl.Series | None:
    """Whole-number periods written as spreadsheet serial dates (43466 for 2019-01-01, a date cell exported as its
    number) as Dates, or None when they are not: every value in `_EXCEL_SERIALS`, and nearly every one on the
    column's own day of the month (the 1st, a month end, the 15th), as a monthly period is."""
    v = values.drop_nulls()
    if not v.len() or v.min() < _EXCEL_SERIALS[0] or v.max() > _EXCEL_SERIALS[1]:
        return None
    dates = pl.select(pl.lit(EXCEL_EPOCH) + pl.duration(days=values)).to_series().cast(pl.Date)
    known = dates.drop_nulls()
    on_day = known.dt.day() == known.dt.day().mode().sort().item(0)
    if float((on_day | (known == known.dt.month_end())).mean()) < 0.95:
        return None
    return dates


def _monthly_steps(work: pl.DataFrame, dates: pl.Series) -> float:
    """The share of a history's consecutive rows of a loan (in month order) that are one month apart, by `dates`."""
    months = work.select("loan_id", month_index(pl.lit(dates)).alias("_m")).sort("loan_id", "_m")
    steps = months.select(pl.col("_m").diff().over("loan_id")).to_series().drop_nulls()
    return float((steps == 1).mean()) if steps.len() else 0.0


def _day_rule(dates: pl.Series) -> str | int:
    """How a date period names its month: "end" (every date a month end), else the most common day of the month."""
    if bool((dates == dates.dt.month_end()).all()):
        return "end"
    return int(dates.dt.day().mode().sort().item(0))


def _starts(index: pl.DataFrame) -> dict[str, int]:
    """How many loans start at each value of `index`'s ``_i`` (their first period), as JSON-ready counts."""
    first = index.group_by("loan_id").agg(pl.col("_i").min())
    counts = first.get_column("_i").value_counts(sort=True)
    return {str(k): int(n) for k, n in zip(counts.get_column("_i").to_list(), counts.get_column("count").to_list())}


def _months_on_book(
    work: pl.DataFrame, *, source: str, date_format: str | None, tenant: str | None, file: str | None
) -> tuple[pl.Expr, pl.Expr | None, dict[str, Any]]:
    """(period as Int64 months on book from 1, reporting month as Date or None, how the file wrote the period).

    `work` holds the canonical `loan_id` and `period` columns; `source` is the
    file's name for the period column, used in errors; `date_format` is the
    reader's most frequent format in it (a CSV's text dates). A period written as a
    month (a date, "2019-03", "Mar-2019", 201903, Fannie Mae's 032019, a spreadsheet serial date 43466) counts months on book from
    each loan's first month. Whole numbers are months on book when every loan
    starts at the same number (1, or 0 on a zero-based index); otherwise they
    index calendar months and each loan counts from its own first.
    The returned description lets a release write periods back in the file's
    form (see `models.sequences.histories.render_history`).
    """
    dtype = work.schema["period"]
    values = work.get_column("period")
    described: dict[str, Any] = {"dtype": str(dtype)}
    dates: pl.Series | None = None
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        dates = values.cast(pl.Date)
        described["format"] = date_format
    elif dtype == pl.String or dtype == pl.Categorical:
        found = _text_months(values)
        if found is not None:
            dates, described["format"] = found
    elif dtype.is_float() and bool((values.drop_nulls() == values.drop_nulls().round(0)).all()):
        values = values.cast(pl.Int64)
        dtype = pl.Int64
    if dates is None and dtype.is_integer():
        readings = [(read(values.cast(pl.Int64)), fmt)
                    for read, fmt in ((_yyyymm, "%Y%m"), (_mmyyyy, "%m%Y"), (_excel_serial, EXCEL_SERIAL_FORMAT))]
        readings = [(found, fmt) for found, fmt in readings if found is not None]
        if readings:
            # Serial day numbers of late 2014 (41974) also read as month and year (April 1974): the reading whose
            # months follow each other within a loan is the file's
            dates, described["format"] = max(readings, key=lambda reading: _monthly_steps(work, reading[0]))
    if dates is not None:
        index = work.select(month_index(pl.lit(dates)).alias("_i"), "loan_id")
        described.update(kind="month", day=_day_rule(dates), starts=_starts(index))
        period = index.select(pl.col("_i") - pl.col("_i").min().over("loan_id") + 1).to_series()
        return pl.lit(period), pl.lit(dates).dt.truncate("1mo").alias("reporting_month"), described
    if dtype.is_integer():
        index = work.select(pl.lit(values.cast(pl.Int64)).alias("_i"), "loan_id")
        starts = _starts(index)
        if len(starts) == 1:
            offset = int(next(iter(starts)))
            return pl.lit(index.get_column("_i") - offset + 1), None, {**described, "kind": "index", "offset": offset}
        period = index.select(pl.col("_i") - pl.col("_i").min().over("loan_id") + 1).to_series()
        return pl.lit(period), None, {**described, "kind": "calendar", "starts": starts}
    examples = ", ".join(map(repr, values.drop_nulls().unique(maintain_order=True).head(3).cast(pl.String).to_list()))
    raise InvalidDataError(
        f"the period column must hold months on book (1, 2, ...) or months (2019-03, 03/2019, Mar-2019, 201903, "
        f"032019, a date), but it holds {dtype} values such as {examples}.",
        tenant=tenant,
        file=file,
        column=source,
        fix="write the period as a whole month on book (1, 2, ...) or as a month such as 2019-03 (one spelling for "
        "the whole column: 201903 and 032019 are not mixed), or map "
        "performance.period in tenant.yaml to the column that holds it.",
    )


def _status_expr(
    work: pl.DataFrame, cols: dict[str, str], *, tenant: str | None, file: str | None,
    status_labels: dict[str, str] | None = None,
) -> tuple[pl.Expr, dict[str, str], dict[str, Any]]:
    """(the canonical status, the file's most frequent spelling of each canonical state it names, how it counts).

    The third item is ``{"kind": "months_behind", "width": w}`` when the column's bare numbers count months
    behind (`models.sequences.states.months_behind_width`), else empty.

    Labels are read by `models.sequences.states.canonical_states`, after the tenant's own `status_labels`
    (label -> state, matched as written, else ignoring case and spacing); rows without a label (or a file
    without a status column) take the bucket of their days past due.
    """
    derived = None
    if "days_past_due" in cols:
        dpd = pl.col("days_past_due")
        derived = (
            pl.when(dpd < 30).then(pl.lit("current")).when(dpd < 60).then(pl.lit("dpd30")).when(dpd < 90).then(pl.lit("dpd60")).otherwise(pl.lit("dpd90"))
        )
    if "status" not in cols:
        return derived, {}, {}
    series = work.get_column("status")
    if series.dtype.is_float():
        # 30.0 from a numeric status column means the label "30".
        series = series.cast(pl.Int64, strict=False)
    raw = series.cast(pl.String)
    # Read the few distinct labels, not every row (tens of millions on a large book).
    counts = raw.drop_nulls().value_counts(sort=True)
    labels = counts.get_column(raw.name).to_list()
    declared = {_label_key(k): v for k, v in (status_labels or {}).items()}
    canonical = canonical_states([label for label in labels if _label_key(label) not in declared])
    canonical.update({label: declared[_label_key(label)] for label in labels if _label_key(label) in declared})
    unknown = [label for label in labels if canonical[label] is None]
    if unknown:
        # The example maps each label to the word <state> and lists the states, never naming one: only the lender
        # knows what a label means, and a suggested 'current' would be copied in for a label that is a default.
        example = ", ".join(f"'{label.replace(chr(39), chr(39) * 2)}': <state>" for label in unknown[:5])
        raise InvalidDataError(
            f"unknown status label(s): {', '.join(map(repr, unknown[:10]))}.",
            tenant=tenant,
            file=file,
            column=cols["status"],
            fix=f"say what each means under performance.status_labels in tenant.yaml (e.g. status_labels: "
            f"{{{example}}}, with <state> one of {', '.join(STATES)}), or spell them as days past due (30, 30-59, "
            "90+ DPD), months behind (0, 1, 2, 3) or a common name (Current, Charged Off, Paid in Full).",
        )
    spelling: dict[str, str] = {}
    for label in labels:  # most frequent first
        spelling.setdefault(canonical[label], label)
    width = months_behind_width([label for label in labels if _label_key(label) not in declared])
    form = {} if width is None else {"kind": "months_behind", "width": width}
    mapped = raw.replace_strict(canonical, default=None, return_dtype=pl.String)
    if derived is None or mapped.null_count() == 0:
        # Days past due only stand in for missing labels: skip building them for 20M rows when none is missing.
        return pl.lit(mapped), spelling, form
    return pl.coalesce(pl.lit(mapped), derived), spelling, form


def _ids_ignoring_leading_zeros(ids: pl.Series, known: pl.Series) -> pl.Series | None:
    """`ids` (text) spelled as the loans file spells the same number (000123 as 123, or 123 as 000123) when both
    files' ids are all digits and each number names one loan; None when they are not, or some id still matches none."""
    digits = r"^[0-9]+$"
    if not ids.len() or not known.len() or not bool(ids.str.contains(digits).all()) or not bool(known.str.contains(digits).all()):
        return None

    def number(values: pl.Series) -> pl.Series:
        stripped = values.str.strip_chars_start("0")
        return pl.select(pl.when(stripped == "").then(pl.lit("0")).otherwise(stripped)).to_series()

    keys = number(known)
    if keys.n_unique() < known.len():
        return None  # 0123 and 123 are two loans: which one a history's 00123 means is not for us to guess
    spelled = number(ids).replace_strict(dict(zip(keys.to_list(), known.to_list())), default=None, return_dtype=pl.String)
    return None if spelled.null_count() else spelled


def _zero_balance_text(codes: pl.Series) -> pl.Series:
    """Zero-balance codes as written text: a float column (a Parquet export with nulls) gives 1, not '1.0'."""
    if codes.dtype.is_float():
        codes = codes.cast(pl.Int64, strict=False)
    return codes.cast(pl.String).str.strip_chars()


def _zero_balance_spelling(codes: pl.Series) -> dict[str, Any]:
    """How the file writes its zero-balance codes: ``width`` 2 when zero-padded ('01'), else 0 (1), and its most
    frequent spelling of a payoff code (``prepaid``) and of a credit-event code (``default``), as written."""
    written = _zero_balance_text(codes).drop_nulls()
    written = written.filter(written != "")
    counts = written.value_counts(sort=True)
    labels = counts.get_column(written.name).to_list()
    out: dict[str, Any] = {"width": zero_padding(labels)}
    for label in labels:  # most frequent first
        key = label.zfill(2)
        state = "prepaid" if key in PREPAID_ZERO_BALANCE_CODES else "default" if key in DEFAULT_ZERO_BALANCE_CODES else None
        if state is not None:
            out.setdefault(state, label)
    return out


def _label_key(label: str) -> str:
    """A status label as `status_labels` matches it: case and runs of spaces ignored."""
    return " ".join(str(label).split()).lower()


@dataclass
class PerformanceHistory:
    """A performance file read into canonical form, with how the file wrote it.

    Attributes:
        frame: the canonical history (see `read_performance`).
        vocabulary: JSON-ready: ``columns`` (canonical name -> the file's
            column, for the columns the file has), ``dtypes`` (canonical name
            -> the file's dtype), ``status`` (canonical state -> the file's
            most frequent spelling of it), ``period`` (how the file wrote the
            month: ``kind`` "index" with its ``offset``, "calendar" or "month"
            with the loans' first months in ``starts``, and for months the
            ``format`` and ``day``), ``status_form`` (``{"kind": "months_behind",
            "width": w}`` when the status codes count months behind, as agency
            files do) and ``zero_balance`` (when the file has a zero-balance-code
            column: whether it zero-pads its codes, and its spelling of a payoff
            code and of a credit-event code), and ``arrears_days`` (how its days
            past due grow through a run in dpd90: the first month's median and
            the step to the second).
            `models.sequences.histories.render_history` writes a synthetic
            history back in this vocabulary.
    """

    frame: pl.DataFrame
    vocabulary: dict[str, Any]


def read_performance(
    perf: pl.DataFrame,
    loans: pl.DataFrame,
    *,
    tenant: str | None,
    file: str | None,
    loan_id_column: str,
    mapping: dict,
    spellings: dict[str, dict[str, Any]] | None = None,
    status_labels: dict[str, str] | None = None,
) -> PerformanceHistory:
    """The performance history in canonical form, checked against the loans table, and the file's vocabulary.

    Columns are found through `mapping` (tenant.yaml's `performance:` block,
    canonical name -> file column) and otherwise by common aliases (month, mob,
    dpd, delinquency_status, outstanding_balance, ...). Status labels are read
    by `models.sequences.states.canonical_states` ("C", "30", "90+ DPD", "CO", months
    behind 0/1/2/3, ...); without a status column the status is derived from
    days past due (which cannot give the absorbing states). Periods are months
    on book, counted from each loan's first month when the file writes months
    (dates, "2019-03", 201903) or a calendar index; the month itself is kept as
    `reporting_month`. Balance and payment are optional. `spellings` is how
    the reader found each column written (`IngestReport.spellings`): a text
    date period keeps its most frequent format. `status_labels` (tenant.yaml's
    ``performance.status_labels``) says what the file's own status words mean,
    before the built-in reading.

    Returns:
        `PerformanceHistory`: the frame holds loan_id (String), period (Int64
        from 1), [reporting_month (Date)], status (String, one of STATES),
        days_past_due (Int64, from the status buckets when the file has none),
        [balance, payment (Float64) when present], sorted by loan and period;
        other columns are dropped.

    Raises:
        InvalidDataError: a required column is missing, loan ids that are not in
            the loans table, unknown status labels, nulls in keys, periods that
            are neither months on book nor months, non-numeric or negative
            days past due, non-numeric balance or payment, or repeated (loan,
            period) rows.
        TenantConfigError: unknown keys in `mapping`.
    """
    if loan_id_column not in loans.columns:
        raise InvalidDataError(
            "the loans table has no such column to join the performance file on.",
            tenant=tenant,
            file=file,
            column=loan_id_column,
            fix="declare the loan id under id_columns in tenant.yaml.",
        )
    cols = _resolve_performance_columns(
        perf, mapping=dict(mapping or {}), loan_id_column=loan_id_column, tenant=tenant, file=file,
        known_ids=loans.get_column(loan_id_column),
    )
    work = pl.DataFrame([perf.get_column(source).alias(key) for key, source in cols.items()])
    dtypes = {key: str(work.schema[key]) for key in cols}
    work = work.with_columns(pl.col("loan_id").cast(pl.String))
    for key in ("loan_id", "period"):
        nulls = work.get_column(key).null_count()
        if nulls:
            raise InvalidDataError(
                f"{nulls} rows have no {key.replace('_', ' ')}.", tenant=tenant, file=file, column=cols[key], fix=f"fill in the {key} of every performance row."
            )
    ids = work.get_column("loan_id").unique(maintain_order=True)
    known = loans.get_column(loan_id_column).cast(pl.String).drop_nulls().unique()
    unknown_ids = ids.filter(~ids.is_in(known.implode()))
    id_match = None
    if unknown_ids.len():
        padded = _ids_ignoring_leading_zeros(work.get_column("loan_id"), known)
        if padded is not None:
            # one file kept the ids' leading zeros (000123) and the other lost them (123, a spreadsheet's number)
            work = work.with_columns(padded.alias("loan_id"))
            ids = work.get_column("loan_id").unique(maintain_order=True)
            unknown_ids = ids.filter(~ids.is_in(known.implode()))
            id_match = "leading zeros ignored"
    if unknown_ids.len():
        raise InvalidDataError(
            f"{unknown_ids.len()} loan id(s) in the performance file are not in the loans file, "
            f"e.g. {', '.join(map(repr, unknown_ids.head(5).to_list()))}.",
            tenant=tenant,
            file=file,
            column=cols["loan_id"],
            fix="upload the loans file that matches this performance history, or remove the rows of loans that are not in the tape.",
        )
    for key in ("days_past_due", "balance", "payment"):
        if key not in cols:
            continue
        series = work.get_column(key)
        values = series.drop_nulls()
        whole = key != "days_past_due" or series.dtype.is_integer() or (series.dtype.is_float() and bool((values == values.round(0)).all()))
        if not series.dtype.is_numeric() or not whole:
            kind = "whole numbers (0, 30, 45, ...)" if key == "days_past_due" else "plain numbers"
            raise InvalidDataError(
                f"{key.replace('_', ' ')} must be {kind}, but the column holds {series.dtype} values.",
                tenant=tenant,
                file=file,
                column=cols[key],
                fix=f"write {key.replace('_', ' ')} as {kind}, or map performance.{key} in tenant.yaml to the right column.",
            )
        if key == "days_past_due" and bool((series < 0).any()):
            raise InvalidDataError("days past due has negative values.", tenant=tenant, file=file, column=cols[key], fix="correct the negative days past due.")
    period, month, period_form = _months_on_book(
        work, source=cols["period"], date_format=(spellings or {}).get(cols["period"], {}).get("date_format"),
        tenant=tenant, file=file
    )
    used = set(cols.values())
    if month is None:
        extra = next((c for c in perf.columns if c not in used and normalise_column_name(c) in _REPORTING_MONTH_ALIASES and perf.schema[c] == pl.Date), None)
        if extra is not None:
            month = pl.lit(perf.get_column(extra)).alias("reporting_month")
            used.add(extra)
    status, spelling, status_form = _status_expr(work, cols, tenant=tenant, file=file, status_labels=status_labels)
    zero_balance: dict[str, Any] = {}
    if "zero_balance_code" in cols:
        # the month a loan leaves an agency file says how: paid off, or a credit event (see the code lists)
        code = pl.lit(_zero_balance_text(work.get_column("zero_balance_code"))).str.zfill(2)  # 1 read as a number: 01
        zero_balance = _zero_balance_spelling(work.get_column("zero_balance_code"))
        status = (pl.when(code.is_in(PREPAID_ZERO_BALANCE_CODES)).then(pl.lit("prepaid"))
                  .when(code.is_in(DEFAULT_ZERO_BALANCE_CODES)).then(pl.lit("default"))
                  .otherwise(status))
    out = work.select(
        pl.col("loan_id"),
        period.alias("period"),
        *([month] if month is not None else []),
        status.alias("status"),
        *([pl.col("days_past_due").cast(pl.Int64)] if "days_past_due" in cols else []),
        *[pl.col(k).cast(pl.Float64) for k in ("balance", "payment") if k in cols],
    )
    missing_status = out.get_column("status").null_count()
    if missing_status:
        raise InvalidDataError(
            f"{missing_status} rows have no status and no days past due to derive it from.",
            tenant=tenant,
            file=file,
            column=cols.get("status") or cols.get("days_past_due"),
            fix="fill in the status (or days past due) of every performance row.",
        )
    if "days_past_due" not in cols:
        buckets = {"current": 0, "dpd30": 30, "dpd60": 60, "dpd90": 90}
        out = out.with_columns(pl.col("status").replace_strict(buckets, default=None, return_dtype=pl.Int64).alias("days_past_due"))
    ordered = [c for c in ("loan_id", "period", "reporting_month", "status", "days_past_due", "balance", "payment") if c in out.columns]
    out = out.select(ordered)
    loan, month = pl.col("loan_id"), pl.col("period")
    if not in_loan_order(out):
        out = out.sort("loan_id", "period")
    # Sorted, a repeated (loan, period) pair sits on adjacent rows: linear, unlike hashing 20M pairs.
    repeat = (loan == loan.shift(1)) & (month == month.shift(1))
    repeated = out.filter((repeat | repeat.shift(-1)).fill_null(False))
    if repeated.height:
        pairs = repeated.select("loan_id", "period").unique(maintain_order=True).head(5).rows()
        raise InvalidDataError(
            f"{repeated.height} rows repeat a (loan, period) pair, e.g. {', '.join(f'{a} month {b}' for a, b in pairs)}.",
            tenant=tenant,
            file=file,
            column=cols["period"],
            fix="keep one row per loan and month.",
        )
    # Columns no canonical name matched are not modelled and not released: said, so a renamed balance is not lost unseen.
    left_out = [c for c in perf.columns if c not in used]
    vocabulary = {"file": file, "columns": dict(cols), "dtypes": dtypes, "status": spelling, "period": period_form,
                  "left_out": left_out}
    if status_form:
        vocabulary["status_form"] = status_form
    if id_match:
        vocabulary["loan_id_match"] = id_match
    if "days_past_due" in cols:
        growth = arrears_days(out)
        if growth is not None:
            vocabulary["arrears_days"] = growth
    if "zero_balance_code" in cols:
        vocabulary["zero_balance"] = zero_balance
    return PerformanceHistory(frame=out, vocabulary=vocabulary)
