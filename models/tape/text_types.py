"""Typing a table's text columns over the whole file: integers, numbers, flags, dates or text.

Every column is typed by polars expressions over all of its cells, so one bad
cell is reported instead of silently becoming null, and a CSV gets the same
types whatever its locale. `TextTyper` does it in two sweeps over the file's
batches, for the CSV and the Parquet readers of `models.tape.ingest` alike.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Callable, Generator

import polars as pl

from models.errors import InvalidDataError, ValidationErrors
from models.tape.schema import ColumnType
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT, counterpart_spelling

SAMPLE_ROWS = 10_000

# Tried on every text column that may hold dates; a column may mix them (each
# row takes the first format that parses it, so the older formats come first).
# A %Y reads only four-digit years and a %y only two-digit ones (`_parse_date`);
# %y follows chrono, which polars parses with: 00-69 are 2000-2069, 70-99 are
# 1970-1999 ("1/5/16" is 5 January 2016, "3/1/75" 1 March 1975).
DATE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d.%m.%Y",
    "%d-%m-%Y",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%b %Y",
    "%b-%Y",
    "%d %b %Y",
    "%Y-%m",
    "%d/%m/%y",
    "%m/%d/%y",
    "%d.%m.%y",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S%.3f",
    "%Y-%m-%d %H:%M:%S%.6f",
    "%Y-%m-%d %H:%M:%S%.9f",
    "%Y-%m-%dT%H:%M:%S%.3f",
    "%Y-%m-%dT%H:%M:%S%.6f",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%.3fZ",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%b-%y",
    "%d-%b-%y",
    "%d-%b-%Y",
)
# Day-first and month-first spellings of the same shape: a column holding one holds the other as far as its
# ambiguous dates (both fields <= 12) go, so both are counted and one is chosen (`TextTyper._day_or_month`).
_DAY_MONTH: tuple[tuple[str, str], ...] = (
    ("%d/%m/%Y", "%m/%d/%Y"),
    ("%d/%m/%y", "%m/%d/%y"),
    ("%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"),
    ("%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S"),
)
# The width each field of a format writes, zero-padded; a date written shorter drops the padding (Excel's 1/5/2016 0:00).
_FIELD_WIDTHS = {"%Y": 4, "%y": 2, "%m": 2, "%d": 2, "%H": 2, "%M": 2, "%S": 2, "%b": 3, "%.3f": 4, "%.6f": 7, "%.9f": 10}
_UNPADDED = {"%m": "%-m", "%d": "%-d", "%H": "%-H"}
# Decimal places counted per number column; a column with more is released at full precision.
_DECIMALS = (0, 1, 2, 3, 4, 5, 6)

BOOL_TRUE = ("true", "yes", "y")
BOOL_FALSE = ("false", "no", "n")
# Only a column declared boolean also accepts 0/1, so an integer 0/1 column
# stays Int64 and the schema decides whether it is a flag.
_BOOL_DECLARED_TRUE = TRUE_TEXT
_BOOL_DECLARED_FALSE = FALSE_TEXT

# Thousands separators besides a decimal-comma file's '.' (1.234,56) and the decorated commas below: a space, a
# non-breaking space, a narrow non-breaking space (1 234 567,89, as French and Nordic exports write amounts). A number
# is grouped only in standard 3-digit groups by one character throughout ('12 34' is two numbers, not one), and a
# column keeps to one separator (`TextTyper._settle_grouping`).
_SPACE_GROUPS = " \u00a0\u202f"
# ... with a decimal part: a cell that shows the file writes decimal commas.
COMMA_EVIDENCE = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d+),\d+$")
# A count coded at the top or the bottom of its range ("3+", "10+ years", ">=5", "< 1 year"): a class, not a number.
_CODED = r"^(?:(?:[<>]=?|[≤≥])\s*\d+(?:[.,]\d+)?|\d+(?:[.,]\d+)?\s*\+)(?:\s*[A-Za-z]+)?$"
_MAX_CODES = 2
# A spreadsheet's decorated number: a currency sign, thousands commas, a percent sign ("$1,200.50", "12.5%",
# "-$40.00"); read as the number it shows (12.5 for "12.5%") when every cell of a column is one (decimal point only).
_CURRENCY = "$€£"
_DECORATED = rf"^[+-]?[{_CURRENCY}]?\s?[+-]?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?\s?%?$"
_DECORATION = rf"[{_CURRENCY}%,\s]"
# ... and in a decimal-comma file, as European exports write money: the sign before or after the number, a space
# between them or not, '.' or a space grouping thousands ("1.234,56 €", "€ 1.234,56", "1 234,56 €", "12,5 %").
_SPACES = _SPACE_GROUPS
_DECORATED_COMMA = (rf"^[+-]?(?:[{_CURRENCY}][{_SPACES}]?)?[+-]?(?:\d{{1,3}}(?:[.{_SPACES}]\d{{3}})+|\d+)(?:,\d+)?"
                    rf"(?:[{_SPACES}]?[{_CURRENCY}%])?$")
_DECORATION_COMMA = rf"[{_CURRENCY}%.{_SPACES}]"
# A currency or percent sign around a number, in either convention: the decimal sniffer takes it off before it
# reads a cell's mark (`models.tape.ingest`); group 1 keeps a sign written before the currency ("-$40.00").
NUMBER_SIGNS = re.compile(rf"^([+-]?)[{_CURRENCY}][{_SPACES}]?|[{_SPACES}]?[{_CURRENCY}%]$")
_NUMERIC_FIX = (
    "correct those cells (write a missing value as an empty cell or NA), or declare the column as text "
    "with `column_types: {{{column}: categorical}}` in tenant.yaml."
)


def _header_only_error(tenant: str, file: str) -> InvalidDataError:
    return InvalidDataError(
        "has a header but no rows.", tenant=tenant, file=file, fix="export the tape again including its data rows, not only the column names."
    )


def polars_error(exc: Exception, *, tenant: str, file: str, what: str, fix: str) -> InvalidDataError:
    """A polars read failure as an `InvalidDataError` naming the file, with the first line of polars' message."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return InvalidDataError(f"could not be read as {what} ({first_line}).", tenant=tenant, file=file, fix=fix)


@dataclass
class _Plan:
    kind: str  # string | int | int_float | float | bool | date | decorated
    formats: tuple[str, ...] = ()
    datetime: bool = False


@dataclass
class _Profile:
    """What the first rows of a text column allow; decides which counts are worth taking."""

    strip: bool = True
    maybe_int: bool = True
    maybe_bool: bool = True
    maybe_big: bool = True
    date_formats: tuple[str, ...] = DATE_FORMATS
    groups: str = ""  # the thousands separators worth looking for (1 234,56)
    maybe_coded: bool = False  # numbers beside other text: count top-coded values ('3+')


def whole_numbers(values: pl.Expr) -> pl.Expr:
    """True for a finite whole number that fits an Int64 (116.0, 3, 1e+05): what may be read as an integer."""
    return values.is_finite() & (values.abs() < 2.0**63) & (values == values.round(0))


def _group_chars(decimal: str, delimiter: str | None) -> str:
    """The thousands separators a column may use: '.' beside a decimal comma, and the spaces, except the delimiter
    (a space-separated file has no space inside a number)."""
    chars = ("." if decimal == "," else "") + _SPACE_GROUPS
    return chars.replace(delimiter, "") if delimiter else chars


def _grouped_number(groups: str, decimal: str, *, plain: bool = False) -> str:
    """A number in 3-digit groups by one of `groups` throughout (1 234 567,89), with an optional `decimal` part;
    with `plain`, an ungrouped number too."""
    forms = [rf"\d{{1,3}}(?:[{g}]\d{{3}})+" for g in groups] + ([r"\d+"] if plain else [])
    return rf"^[+-]?(?:{'|'.join(forms)})(?:[{decimal}]\d+)?$"


def _number_text(text: pl.Expr, decimal: str, groups: str = "") -> pl.Expr:
    """Text that polars' float/int casts accept: decimal commas and thousands groups (by one of `groups`) undone."""
    if decimal != "," and not groups:
        return text
    number = text.str.contains(_grouped_number(groups, decimal, plain=decimal == ","))
    plain = text
    for group in groups:
        plain = plain.str.replace_all(group, "", literal=True)
    if decimal == ",":
        plain = plain.str.replace(",", ".", literal=True)
    return pl.when(number).then(plain).otherwise(text)


def _parse_date(text: pl.Expr, fmt: str) -> pl.Expr:
    """`text` parsed by `fmt`, null where it does not fit.

    chrono reads '16' by %Y as the year 16 and '7' by %y as 2007, and a %.3f also reads a time without a fraction:
    such values are not taken (a four-digit year, a two-digit one at the end, a fraction after a '.').
    """
    dtype = pl.Datetime("us") if "%H" in fmt else pl.Date
    parsed = text.str.strptime(dtype, fmt, strict=False, exact=True)
    if "%Y" in fmt:
        parsed = pl.when(parsed.dt.year() >= 1000).then(parsed)
    if fmt.endswith("%y"):
        parsed = pl.when(text.str.contains(r"\d\d$")).then(parsed)
    if "%." in fmt:
        parsed = pl.when(text.str.contains(".", literal=True)).then(parsed)
    return parsed


def _padded_width(fmt: str) -> int:
    """How many characters a value written in `fmt` takes with every field zero-padded."""
    return sum(_FIELD_WIDTHS.get(token, 1) for token in re.findall(r"%\.\df|%.|.", fmt))


def _unpadded(fmt: str) -> str:
    """`fmt` writing month, day and hour without a leading zero (%-m/%-d/%Y %-H:%M), as Excel writes dates."""
    for field, bare in _UNPADDED.items():
        fmt = fmt.replace(field, bare)
    return fmt


def _date_expr(text: pl.Expr, formats: tuple[str, ...], as_datetime: bool) -> pl.Expr:
    parsed = [_parse_date(text, f) for f in formats]
    if as_datetime:
        parsed = [p.cast(pl.Datetime("us")) for p in parsed]
    return parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)


_BOOL_CASES = tuple(w2 for w in BOOL_TRUE + BOOL_FALSE for w2 in (w, w.upper(), w.title()))
_BOOL_DECLARED_CASES = tuple(w2 for w in _BOOL_DECLARED_TRUE + _BOOL_DECLARED_FALSE for w2 in (w, w.upper(), w.title()))


class TextTyper:
    """Decide and apply each text column's type in two sweeps over the batches.

    The first batch's leading rows rule out what a column cannot be (a column
    whose early values include one that no date format parses is not a date
    column, so its dates need no counting). Sweep one adds up per-column counts
    (non-empty, integers, numbers, booleans, dates per format) over every
    batch; the types follow from the counts over the whole file. Sweep two
    casts each batch and keeps only the typed batches.
    """

    def __init__(
        self,
        batches: Callable[[], Generator[pl.DataFrame, None, None]],
        *,
        text_columns: dict[str, pl.Expr],
        direct: dict[str, pl.Expr],
        order: list[str],
        decimal: str,
        declared: dict[str, ColumnType],
        tenant: str,
        file: str,
        first_line: int | None,
        read_fix: str,
        mixed_as_text: bool = False,
        delimiter: str | None = None,
    ) -> None:
        self.batches = batches
        # A column of mostly numbers with some words is text, not an error (a history's status: 0, 1, 2, CO, PIF).
        self.mixed_as_text = mixed_as_text
        self.text_columns = text_columns
        self.direct = direct
        self.order = order
        self.decimal = decimal
        self.declared = {k: v for k, v in declared.items() if k in text_columns}
        self.tenant = tenant
        self.file = file
        self.first_line = first_line
        self.read_fix = read_fix
        self.profiles: dict[str, _Profile] = {}
        # Thousands separators a number may have; a CSV's delimiter never is one (None: not a CSV, or not known).
        self.group_chars = _group_chars(decimal, delimiter)
        self.groups: dict[str, str] = {}  # column -> the one thousands separator its numbers use
        self.forms: dict[str, set[str]] = {}  # "column\0codes" -> the top-coded values seen ('3+')
        self.date_columns: dict[str, list[str]] = {}
        self.spellings: dict[str, dict[str, str]] = {}
        self.warnings: list[str] = []

    # -- helpers ---------------------------------------------------------------
    def _text(self, name: str) -> pl.Expr:
        profile = self.profiles.get(name)
        column = self.text_columns[name]
        return column.str.strip_chars() if profile is None or profile.strip else column

    def _where(self, index: int) -> str:
        return f"line {self.first_line + index}" if self.first_line is not None else f"row {index + 1}"

    def _select(self, batch: pl.DataFrame, exprs: list[pl.Expr]) -> pl.DataFrame:
        try:
            # lazily, so that polars computes an expression many counts share (a column's number text) once
            return batch.lazy().select(exprs).collect()
        except pl.exceptions.PolarsError as exc:
            raise polars_error(exc, tenant=self.tenant, file=self.file, what="a table", fix=self.read_fix) from None

    # -- profiles from the first rows --------------------------------------------
    def _profile_exprs(self, name: str) -> list[pl.Expr]:
        raw = self.text_columns[name]
        text = raw.str.strip_chars()
        present = text.str.len_bytes() > 0
        number = _number_text(text, self.decimal, self.group_chars)
        as_float = number.cast(pl.Float64, strict=False)
        exprs = [
            (raw != text).any().alias(f"{name}\0strip"),
            (present & number.cast(pl.Int64, strict=False).is_null()).any().alias(f"{name}\0not_int"),
            (present & ~text.is_in(_BOOL_CASES)).any().alias(f"{name}\0not_bool"),
            (as_float.abs() >= 2.0**63).any().alias(f"{name}\0big"),
            (present & as_float.is_null()).any().alias(f"{name}\0not_number"),
            as_float.is_not_null().any().alias(f"{name}\0number"),
            present.any().alias(f"{name}\0any"),
        ]
        spaces = self.group_chars.replace(".", "")
        if spaces:
            exprs.append(text.str.contains(_grouped_number(spaces, self.decimal)).any().alias(f"{name}\0grouped"))
        return exprs

    def _date_profile_exprs(self, name: str) -> list[pl.Expr]:
        text = self.text_columns[name].str.strip_chars()
        parsed = [_parse_date(text, f).is_not_null() for f in DATE_FORMATS]
        exprs = [((text.str.len_bytes() > 0) & ~pl.any_horizontal(parsed)).any().alias(f"{name}\0not_date")]
        return exprs + [p.any().alias(f"{name}\0{f}") for p, f in zip(parsed, DATE_FORMATS)]

    def _profile_dates(self, name: str, row: dict[str, Any]) -> tuple[str, ...]:
        declared = self.declared.get(name)
        if declared is ColumnType.DATETIME or not row[f"{name}\0any"]:
            return DATE_FORMATS
        if declared is not None or row.get(f"{name}\0not_date", True):
            return ()
        found = {f for f in DATE_FORMATS if row[f"{name}\0{f}"]}
        for pair in _DAY_MONTH:
            if found & set(pair):
                found |= set(pair)
        return tuple(f for f in DATE_FORMATS if f in found)

    def _profile(self, sample: pl.DataFrame) -> None:
        row = self._select(sample, [e for name in self.text_columns for e in self._profile_exprs(name)]).row(0, named=True)
        # A column of numbers only is no date column: its dates are not worth parsing.
        worded = [name for name in self.text_columns if row[f"{name}\0not_number"]]
        if worded:
            row |= self._select(sample, [e for name in worded for e in self._date_profile_exprs(name)]).row(0, named=True)
        for name in self.text_columns:
            declared = self.declared.get(name)
            # Spaces in numbers are looked for where the first rows have them ('.' beside a decimal comma always).
            spaced = row.get(f"{name}\0grouped", False)
            groups = "".join(g for g in self.group_chars if spaced or g not in _SPACE_GROUPS)
            self.profiles[name] = _Profile(
                strip=bool(row[f"{name}\0strip"]),
                maybe_int=not row[f"{name}\0not_int"] or declared is ColumnType.INTEGER,
                maybe_bool=not row[f"{name}\0not_bool"] or declared is ColumnType.BOOLEAN,
                maybe_big=bool(row[f"{name}\0big"]),
                date_formats=self._profile_dates(name, row),
                groups=groups,
                maybe_coded=declared is None and bool(row[f"{name}\0number"] and row[f"{name}\0not_number"]),
            )

    # -- sweep one -----------------------------------------------------------------
    def _count_exprs(self, name: str) -> list[pl.Expr]:
        profile = self.profiles[name]
        text = self._text(name)
        number = _number_text(text, self.decimal, profile.groups)
        as_float = number.cast(pl.Float64, strict=False)
        exprs = [
            (text.str.len_bytes() > 0).sum().alias(f"{name}\0nn"),
            as_float.is_finite().sum().alias(f"{name}\0float"),
        ]
        exprs += self._group_count_exprs(name, profile.groups)
        if profile.maybe_coded:
            exprs += self._coded_count_exprs(name)
        if profile.maybe_int:
            as_int = number.cast(pl.Int64, strict=False)
            exprs += [
                as_int.is_not_null().sum().alias(f"{name}\0int"),
                (as_int.is_not_null() & text.str.starts_with("0") & (text.str.len_bytes() > 1)).sum().alias(f"{name}\0lead0"),
            ]
        # Whole numbers in any spelling (116.0, 1e+05): pandas writes an integer column with missing values as floats.
        exprs.append(whole_numbers(as_float).sum().alias(f"{name}\0intlike"))
        if profile.maybe_big:
            exprs.append((as_float.abs() >= 2.0**63).sum().alias(f"{name}\0big"))
        # Cells with more than d decimals, so a release can write numbers as precisely as the file does.
        decimals = number.str.extract(r"^[+-]?\d*\.(\d+)$", 1).str.len_chars().fill_null(0)
        exprs.append(number.str.contains("[eE]").sum().alias(f"{name}\0exp"))
        exprs += [(decimals > d).sum().alias(f"{name}\0dec>{d}") for d in _DECIMALS]
        if self.declared.get(name) in (None, ColumnType.NUMERIC):
            exprs += self._decoration_count_exprs(name, text)
        if profile.maybe_bool:
            words = _BOOL_DECLARED_CASES if self.declared.get(name) is ColumnType.BOOLEAN else _BOOL_CASES
            exprs.append(text.is_in(words).sum().alias(f"{name}\0bool"))
            # Each spelling's count, so a release writes the flag as the file mostly does.
            exprs += [(text == word).sum().alias(f"{name}\0spelt\0{word}") for word in dict.fromkeys(words)]
        if profile.date_formats:
            exprs += self._date_count_exprs(name, profile.date_formats)
        return exprs

    def _group_count_exprs(self, name: str, groups: str) -> list[pl.Expr]:
        """How many cells are numbers grouped by each thousands separator: a column must keep to one."""
        if not groups:
            return []
        text = self._text(name)
        grouped = text.str.contains(_grouped_number(groups, self.decimal))
        return [(grouped & text.str.contains(g, literal=True)).sum().alias(f"{name}\0group\0{g}") for g in groups]

    def _coded_count_exprs(self, name: str) -> list[pl.Expr]:
        """The top- or bottom-coded values ('3+', '< 1 year'): how many, and the first few forms of each batch."""
        text = self._text(name)
        coded = text.str.contains(_CODED)
        forms = text.filter(coded).unique(maintain_order=True).head(_MAX_CODES + 1).implode()
        return [coded.sum().alias(f"{name}\0coded"), forms.alias(f"{name}\0codes")]

    def _date_count_exprs(self, name: str, formats: tuple[str, ...]) -> list[pl.Expr]:
        text = self._text(name)
        parsed = {f: _parse_date(text, f).is_not_null() for f in formats}
        exprs = [p.sum().alias(f"{name}\0date\0{f}") for f, p in parsed.items()]
        exprs.append(pl.any_horizontal(list(parsed.values())).sum().alias(f"{name}\0dates"))
        # Dates written shorter than zero-padded (1/5/2016 for 01/05/2016): the release drops the padding too.
        exprs += [(p & (text.str.len_chars() < _padded_width(f))).sum().alias(f"{name}\0short\0{f}")
                  for f, p in parsed.items() if any(field in f for field in _UNPADDED)]
        for day, month in _DAY_MONTH:
            if day in parsed and month in parsed:
                exprs += self._day_month_exprs(name, parsed[day], parsed[month], day, month)
        return exprs

    def _day_month_exprs(self, name: str, day_first: pl.Expr, month_first: pl.Expr, day: str, month: str) -> list[pl.Expr]:
        """The counts that settle a column's d/m against m/d order (`_day_or_month`), keyed by the day-first format."""
        text = self._text(name)
        exprs = [(day_first & ~month_first).sum().alias(f"{name}\0only\0{day}"),
                 (month_first & ~day_first).sum().alias(f"{name}\0only\0{month}")]
        # Sums and sums of squares of each field of the ambiguous dates add up over batches and tell
        # whether a field never changes (n * sum of squares == sum squared): that field is the day.
        both = day_first & month_first
        exprs.append(both.sum().alias(f"{name}\0both\0{day}"))
        for field in (1, 2):
            value = text.str.extract(r"^(\d{1,2})/(\d{1,2})/", field).cast(pl.Int64, strict=False)
            value = pl.when(both).then(value).otherwise(0)
            exprs.append(value.sum().alias(f"{name}\0field{field}\0{day}"))
            exprs.append((value * value).sum().alias(f"{name}\0field{field}^2\0{day}"))
        return exprs

    def _sweep_counts(self, exprs: list[pl.Expr]) -> Counter:
        """The counts summed over every batch; a list (the top-coded forms) is gathered into `self.forms`."""
        totals: Counter = Counter()
        for batch in self.batches():
            if not batch.height:
                continue
            for key, value in self._select(batch, exprs).row(0, named=True).items():
                if isinstance(value, list):
                    self.forms.setdefault(key, set()).update(value)
                else:
                    totals[key] += int(value or 0)
        return totals

    # -- decisions ---------------------------------------------------------------
    def _decide_dates(self, name: str, stats: Counter, formats: tuple[str, ...]) -> _Plan:
        counts = {f: stats[f"{name}\0date\0{f}"] for f in formats}
        used = [f for f in formats if counts[f] > 0]
        for day, month in _DAY_MONTH:
            if day in used and month in used:
                self._day_or_month(name, stats, used, day, month)
        self.date_columns[name] = list(used)
        if used:
            best = max(used, key=lambda f: counts[f])
            self.spellings[name] = {"date_format": _unpadded(best) if stats[f"{name}\0short\0{best}"] else best}
        return _Plan("date", tuple(used), any("%H" in f for f in used))

    def _day_or_month(self, name: str, stats: Counter, used: list[str], day_first: str, month_first: str) -> None:
        """Keep one of a column's day-first and month-first formats in `used` (the one more dates fit), or both in
        that order when some dates fit only the other."""
        day, month = stats[f"{name}\0date\0{day_first}"], stats[f"{name}\0date\0{month_first}"]
        winner, loser = (day_first, month_first) if day >= month else (month_first, day_first)
        if day == month:
            constant = self._constant_field(name, stats, day_first)
            if constant == 2:
                winner, loser = month_first, day_first
            reading = (f"the {'first' if constant == 1 else 'second'} field never changes while the other "
                       f"does, so it is the day: read as {'day' if constant == 1 else 'month'} first"
                       if constant else "read as day first")
            self.warnings.append(f"column {name}: every {day_first.replace('%', '')} date is ambiguous (day and month "
                                 f"both <= 12); {reading}. Write dates as YYYY-MM-DD to remove the doubt.")
        used.remove(loser)
        if stats[f"{name}\0only\0{loser}"] > 0:
            self.warnings.append(f"column {name}: mixes day-first and month-first dates; ambiguous ones were read as {winner}.")
            used.insert(used.index(winner) + 1, loser)

    @staticmethod
    def _constant_field(name: str, stats: Counter, day_first: str) -> int | None:
        """Which field (1 or 2) of a column's ambiguous d/m/Y dates never changes while the other does, or None.

        A monthly column names each month by one fixed day: Fannie Mae's reporting period 02/01/2019 (MM/01/YYYY)
        keeps the second field at 01, the same first of the month written day first (01/02/2019) the first. The
        field that stays put is the day; when both stay put (one date) or both move, nothing is settled.
        """
        n = stats[f"{name}\0both\0{day_first}"]
        if n < 2:
            return None
        fixed = [n * stats[f"{name}\0field{f}^2\0{day_first}"] == stats[f"{name}\0field{f}\0{day_first}"] ** 2 for f in (1, 2)]
        if fixed[0] == fixed[1]:
            return None
        return 1 if fixed[0] else 2

    def _bool_plan(self, name: str, stats: Counter) -> _Plan:
        """The Boolean plan, recording the file's most frequent spelling of each truth value."""
        spelt = {key.rsplit("\0", 1)[1]: count for key, count in stats.items() if key.startswith(f"{name}\0spelt\0") and count}
        best: dict[bool, str] = {}
        for truth, words in ((True, _BOOL_DECLARED_TRUE), (False, _BOOL_DECLARED_FALSE)):
            found = [w for w in spelt if w.lower() in words]
            if found:
                best[truth] = max(found, key=lambda w: spelt[w])
        if len(best) == 1:
            # A flag that is always one value: the other in the same style ('Yes' -> 'No').
            (truth, word), = best.items()
            other = counterpart_spelling(word)
            if other is not None:
                best[not truth] = other
        if len(best) == 2:
            self.spellings[name] = {"true_as": best[True], "false_as": best[False]}
        return _Plan("bool")

    def _record_decimals(self, name: str, stats: Counter) -> None:
        """Record the most decimals any cell of a number column has (none recorded past the largest counted), and
        whether every cell has that many (a fixed-point column: "0.00", "12.50").

        A whole-number column read as integers records them too (1 when the file writes 116.0), so a release
        spells its whole numbers back with the same zero fraction.
        """
        if stats[f"{name}\0exp"]:
            return
        places = next((d for d in _DECIMALS if not stats[f"{name}\0dec>{d}"]), None)
        if places is not None:
            self.spellings[name] = {"decimals": places}
            if places and stats[f"{name}\0dec>{places - 1}"] == stats[f"{name}\0nn"]:
                # every cell has all the places ("0.00", "12.50"): the release pads its numbers the same way
                self.spellings[name]["fixed_decimals"] = True

    def _decoration(self, name: str, stats: Counter) -> _Plan | None:
        """The plan of a column whose every cell is a decorated number ("$1,200.50", "12.5%"), recording how the file
        decorates it so a release writes it back so; None when the column is not one.

        A decoration counts only when the file uses it throughout: a percent sign or a currency sign on every cell,
        thousands commas wherever a number reaches them.
        """
        nn = stats[f"{name}\0nn"]
        if not nn or stats[f"{name}\0decorated"] < nn:
            return None
        pct, grouped = stats[f"{name}\0pct"], stats[f"{name}\0grouped"]
        signs = [sign for sign in _CURRENCY if stats[f"{name}\0cur{sign}"]]
        if len(signs) > 1 or pct not in (0, nn) or (signs and stats[f"{name}\0cur{signs[0]}"] < nn):
            return None
        if self.decimal == ",":
            return self._comma_decoration(name, stats, signs, pct, nn)
        if not (pct or grouped or signs):
            return None
        spelling: dict[str, Any] = {"prefix": signs[0] if signs else None, "suffix": "%" if pct else None,
                                    "grouping": bool(grouped)}
        places = next((d for d in _DECIMALS if not stats[f"{name}\0ddec>{d}"]), None)
        if places is not None:
            spelling["decimals"] = places
        self.spellings[name] = {k: v for k, v in spelling.items() if v is not None and v is not False}
        return _Plan("decorated")

    def _decoration_count_exprs(self, name: str, text: pl.Expr) -> list[pl.Expr]:
        """The counts `_decoration` reads: cells that are decorated numbers in the file's decimal convention ("$1,200.50"
        in a decimal-point file, "1.234,56 €" in a decimal-comma one), with a percent sign, grouped, with each
        currency sign, and with more than d places; in a decimal-comma file also grouped by a space, with the sign
        after the number, and with a space between them."""
        comma = self.decimal == ","
        decorated = text.str.contains(_DECORATED_COMMA if comma else _DECORATED)
        plain = text.str.replace_all(_DECORATION_COMMA if comma else _DECORATION, "")
        exprs = [
            decorated.sum().alias(f"{name}\0decorated"),
            (decorated & text.str.contains("%", literal=True)).sum().alias(f"{name}\0pct"),
            (decorated & text.str.contains(r"\d\.\d{3}" if comma else r"\d,\d")).sum().alias(f"{name}\0grouped"),
        ]
        if comma:
            exprs += [
                (decorated & text.str.contains(rf"\d[{_SPACES}]\d{{3}}")).sum().alias(f"{name}\0spacegrouped"),
                # where the sign stands (after the number: "1.234,56 €") and whether a space parts them
                (decorated & text.str.contains(rf"\d[{_SPACES}]?[{_CURRENCY}%]$")).sum().alias(f"{name}\0after"),
                (decorated & text.str.contains(rf"(?:[{_CURRENCY}][{_SPACES}][+-]?\d|\d[{_SPACES}][{_CURRENCY}%]$)"))
                .sum().alias(f"{name}\0spaced"),
            ]
        exprs += [(decorated & text.str.contains(sign, literal=True)).sum().alias(f"{name}\0cur{sign}")
                  for sign in _CURRENCY]
        places = plain.str.extract(r"^[+-]?\d*,(\d+)$" if comma else r"^[+-]?\d*\.(\d+)$", 1).str.len_chars().fill_null(0)
        return exprs + [(decorated & (places > d)).sum().alias(f"{name}\0ddec>{d}") for d in _DECIMALS]

    def _comma_decoration(self, name: str, stats: Counter, signs: list[str], pct: int, nn: int) -> _Plan | None:
        """`_decoration` in a decimal-comma file: a currency or percent sign on every cell, before or after the
        number, spaced from it or not, throughout alike ("1.234,56 €"); grouping alone is a plain grouped number."""
        if not (pct or signs) or (signs and pct):
            return None
        after, spaced = stats[f"{name}\0after"], stats[f"{name}\0spaced"]
        if after not in (0, nn) or spaced not in (0, nn):
            return None
        sign = "%" if pct else signs[0]
        gap = " " if spaced else ""
        group = " " if stats[f"{name}\0spacegrouped"] else ("." if stats[f"{name}\0grouped"] else "")
        spelling: dict[str, Any] = {"prefix": None if after else sign + gap, "suffix": gap + sign if after else None,
                                    "grouping": group + ","}
        places = next((d for d in _DECIMALS if not stats[f"{name}\0ddec>{d}"]), None)
        if places is not None:
            spelling["decimals"] = places
        self.spellings[name] = {k: v for k, v in spelling.items() if v is not None}
        return _Plan("decorated")

    def _settle_grouping(self, name: str, stats: Counter) -> None:
        """Take the thousands separator most of a column's grouped numbers use as its own; a number grouped by another
        is no number of the column (one file, one spelling), so it is taken off the counts of numbers."""
        used = {g: stats[f"{name}\0group\0{g}"] for g in self.profiles[name].groups if stats[f"{name}\0group\0{g}"]}
        if not used:
            return
        main = max(used, key=lambda g: used[g])
        self.groups[name] = main
        others = sum(used.values()) - used[main]
        for key in ("int", "float", "intlike"):
            stats[f"{name}\0{key}"] = max(0, stats[f"{name}\0{key}"] - others)

    def _record_grouping(self, name: str, plan: _Plan) -> None:
        """Record a grouped number column's separator and decimal mark ("1 234,56": " ,") for the release."""
        group = self.groups.get(name)
        if group and plan.kind in ("int", "int_float", "float"):
            spelling = self.spellings.setdefault(name, {})
            if plan.kind == "int":
                spelling["decimals"] = 0
            spelling["grouping"] = group + self.decimal

    def _top_coded(self, name: str, stats: Counter) -> bool:
        """Whether a column is numbers beside one or two top- or bottom-coded values ('0, 1, 2, 3+'): a count's
        classes, read as categories with their values as written; noted for the reading notes."""
        nn, n_float, n_coded = (stats[f"{name}\0{k}"] for k in ("nn", "float", "coded"))
        forms = sorted(self.forms.get(f"{name}\0codes", ()))
        if not (n_float and n_coded and n_float + n_coded == nn and len(forms) <= _MAX_CODES):
            return False
        shown = " and ".join(repr(form) for form in forms)
        self.warnings.append(f"column {name}: {n_coded} of {nn} values are top- or bottom-coded ({shown}) beside plain "
                             "numbers, so the column was read as categories with every value kept as written.")
        return True

    def _decide(self, name: str, stats: Counter, problems: list[tuple[str, str]]) -> _Plan:
        plan = self._decide_kind(name, stats, problems)
        self._record_grouping(name, plan)
        return plan

    def _decide_kind(self, name: str, stats: Counter, problems: list[tuple[str, str]]) -> _Plan:
        self._settle_grouping(name, stats)
        declared = self.declared.get(name)
        formats = self.profiles[name].date_formats
        nn = stats[f"{name}\0nn"]
        n_int, n_float, n_bool, n_dates = (stats[f"{name}\0{k}"] for k in ("int", "float", "bool", "dates"))
        if declared is ColumnType.NUMERIC:
            if n_float < nn:
                problems.append((name, "numeric"))
            return _Plan("float")
        if declared is ColumnType.INTEGER:
            if n_int == nn:
                return _Plan("int")
            if stats[f"{name}\0intlike"] < nn:
                problems.append((name, "integer"))
            else:
                self._record_decimals(name, stats)
            return _Plan("int_float")
        if declared is ColumnType.BOOLEAN:
            if n_bool < nn:
                problems.append((name, "boolean"))
            return self._bool_plan(name, stats)
        if declared is ColumnType.DATETIME:
            if n_dates < nn:
                problems.append((name, "datetime"))
                return _Plan("string")
            return self._decide_dates(name, stats, formats)
        if nn == 0:
            return _Plan("string")
        if n_bool == nn:
            return self._bool_plan(name, stats)
        if n_int == nn:
            return _Plan("string") if stats[f"{name}\0lead0"] else _Plan("int")
        if n_float == nn:
            if stats[f"{name}\0big"] and n_int + stats[f"{name}\0big"] == nn:
                self.warnings.append(f"column {name}: whole numbers too large for 64-bit integers; kept as text (identifiers).")
                return _Plan("string")
            self._record_decimals(name, stats)
            # Every cell whole (116.0, 3, 1e+05): counts with missing values as pandas and R write them, released as
            # whole numbers; the recorded decimals spell them back as the file did (116.0).
            return _Plan("int_float") if stats[f"{name}\0intlike"] == nn else _Plan("float")
        if formats and n_dates == nn:
            return self._decide_dates(name, stats, formats)
        decorated = self._decoration(name, stats)
        if decorated is not None:
            return decorated
        if self._top_coded(name, stats):
            return _Plan("string")
        if n_float >= 0.9 * nn:
            if not self.mixed_as_text:
                problems.append((name, "numeric"))
            return _Plan("string")
        if formats and n_dates >= 0.9 * nn:
            self.warnings.append(f"column {name}: {nn - n_dates} of {nn} values are not dates in any known format, so the column was kept as text.")
        return _Plan("string")

    def _bad_expr(self, name: str, kind: str, formats: tuple[str, ...]) -> pl.Expr:
        """True for a non-empty cell that does not fit `kind`."""
        text = self._text(name)
        number = _number_text(text, self.decimal, self.groups.get(name, ""))
        if kind == "numeric":
            fits = number.cast(pl.Float64, strict=False).is_finite()
        elif kind == "integer":
            as_float = number.cast(pl.Float64, strict=False)
            fits = number.cast(pl.Int64, strict=False).is_not_null() | (as_float.is_finite() & (as_float == as_float.round(0)))
        elif kind == "boolean":
            fits = text.is_in(_BOOL_DECLARED_CASES)
        else:
            fits = pl.any_horizontal([_parse_date(text, f).is_not_null() for f in formats])
        return (text.str.len_bytes() > 0) & ~fits.fill_null(False)

    def _examples(self, name: str, kind: str, formats: tuple[str, ...], limit: int = 5) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        offset = 0
        bad = self._bad_expr(name, kind, formats)
        with closing(self.batches()) as batches:
            for batch in batches:
                index = "__row"
                while index in batch.columns:
                    index += "_"
                hits = self._select(batch.with_row_index(index, offset=offset), [pl.col(index), self.text_columns[name].alias("value"), bad.alias("bad")])
                found += hits.filter(pl.col("bad")).head(limit - len(found)).select(index, "value").rows()
                offset += batch.height
                if len(found) >= limit:
                    break
        return found

    def _problem_error(self, name: str, kind: str, stats: Counter) -> InvalidDataError:
        formats = self.profiles[name].date_formats or DATE_FORMATS
        examples = self._examples(name, kind, formats)
        shown = ", ".join(f"{value!r} ({self._where(index)})" for index, value in examples)
        nn = stats[f"{name}\0nn"]
        fits = {"numeric": "float", "integer": "intlike", "boolean": "bool", "datetime": "dates"}[kind]
        bad = nn - stats[f"{name}\0{fits}"]
        declared = self.declared.get(name)
        if declared is None:
            reason = f"{nn - bad} of {nn} values are numbers but {bad} are not, e.g. {shown}."
            fix = _NUMERIC_FIX.format(column=name)
            if 0 < bad <= 3 and examples and all(len(str(value).split()) >= 3 for _, value in examples):
                # a sentence among numbers is a note inside the table (Lending Club's "Loans that do not meet the
                # credit policy" between two sections), not a value to keep by re-typing the column
                where = ", ".join(self._where(index) for index, _ in examples)
                fix = (f"delete {where}: {'it holds' if bad == 1 else 'they hold'} a sentence, a note or section "
                       "title inside the table, not a loan.")
            elif self.decimal == "." and any(COMMA_EVIDENCE.match(str(value).strip()) for _, value in examples):
                fix += " If the numbers use a decimal comma, set `csv.decimal: ','` in tenant.yaml."
        else:
            expected = {"numeric": "numbers", "integer": "whole numbers", "boolean": "true/false, yes/no or 1/0", "datetime": "dates"}[kind]
            reason = f"is declared {declared.value} in tenant.yaml but {bad} of {nn} values are not {expected}, e.g. {shown}."
            fix = f"correct those cells, or change `column_types: {{{name}: ...}}` in tenant.yaml to the type the column really has."
        return InvalidDataError(reason, tenant=self.tenant, file=self.file, column=name, fix=fix)

    # -- sweep two ---------------------------------------------------------------
    def _cast(self, name: str, plan: _Plan) -> pl.Expr:
        text = self._text(name)
        if plan.kind == "string":
            return self.text_columns[name].alias(name)
        if plan.kind == "bool":
            mapping = {w: True for w in _BOOL_DECLARED_TRUE} | {w: False for w in _BOOL_DECLARED_FALSE}
            return text.str.to_lowercase().replace_strict(mapping, default=None, return_dtype=pl.Boolean).alias(name)
        if plan.kind == "date":
            return _date_expr(text, plan.formats, plan.datetime).alias(name)
        if plan.kind == "decorated":
            if self.decimal == ",":
                plain = text.str.replace_all(_DECORATION_COMMA, "").str.replace(",", ".", literal=True)
                return plain.cast(pl.Float64, strict=False).alias(name)
            return text.str.replace_all(_DECORATION, "").cast(pl.Float64, strict=False).alias(name)
        number = _number_text(text, self.decimal, self.groups.get(name, ""))
        if plan.kind == "int":
            return number.cast(pl.Int64, strict=False).alias(name)
        if plan.kind == "int_float":
            return number.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).alias(name)
        return number.cast(pl.Float64, strict=False).alias(name)

    def _recount(self, typed: list[str], stats: Counter) -> None:
        """Count once more what the first rows did not show was worth counting.

        A column that is mostly dates in the first rows' formats may mix in others further down: every format is
        counted for it. A column whose first rows were all numbers, refused as numbers with some text, may hold
        top-coded values ('3+') further down: they are counted (a sweep only where the file would be refused).
        """
        dates = [n for n in typed if self.profiles[n].date_formats not in ((), DATE_FORMATS)
                 and 0 < stats[f"{n}\0dates"] < stats[f"{n}\0nn"] and stats[f"{n}\0float"] < stats[f"{n}\0nn"]]
        coded = [n for n in typed if self.declared.get(n) is None and not self.profiles[n].maybe_coded
                 and not self.mixed_as_text and 0.9 * stats[f"{n}\0nn"] <= stats[f"{n}\0float"] < stats[f"{n}\0nn"]]
        for n in dates:
            self.profiles[n].date_formats = DATE_FORMATS
        exprs = [e for n in dates for e in self._date_count_exprs(n, DATE_FORMATS)]
        exprs += [e for n in coded for e in self._coded_count_exprs(n)]
        if exprs:
            # replaced, not added: a format counted in both sweeps is counted once
            for key, value in self._sweep_counts(exprs).items():
                stats[key] = value

    def run(self) -> pl.DataFrame:
        """Type the table; raise InvalidDataError for header-only files and bad columns."""
        with closing(self.batches()) as batches:
            first = next(batches, None)
        if first is None or first.height == 0:
            raise _header_only_error(self.tenant, self.file)
        if self.text_columns:
            self._profile(first.head(SAMPLE_ROWS))
        skip = (ColumnType.CATEGORICAL, ColumnType.IDENTIFIER, ColumnType.TEXT)
        typed = [n for n in self.text_columns if self.declared.get(n) not in skip]
        exprs = [e for n in typed for e in self._count_exprs(n)]
        stats = self._sweep_counts(exprs) if exprs else Counter()
        self._recount(typed, stats)
        problems: list[tuple[str, str]] = []
        plans = {n: (self._decide(n, stats, problems) if n in typed else _Plan("string")) for n in self.text_columns}
        if problems:
            errors = [self._problem_error(name, kind, stats) for name, kind in problems]
            if len(errors) == 1:
                raise errors[0]
            raise ValidationErrors(errors, tenant=self.tenant, file=self.file)
        columns = [self._cast(n, plans[n]) if n in plans else self.direct[n].alias(n) for n in self.order]
        parts = [self._select(batch, columns) for batch in self.batches()]
        # No rechunk: copying the parts into one buffer would double the peak.
        return pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]
