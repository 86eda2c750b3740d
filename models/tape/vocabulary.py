"""The tape's own words: which rows defaulted, and how released values are spelled.

Ingest types every column (a `Yes`/`No` column becomes Boolean, `Mar-2018`
becomes a Date) and records in the schema how the lender wrote it
(`ColumnSpec.true_as` / `false_as`, `date_format`, `dtype`). Two questions then
have one answer each, here:

* `target_indicator`: is this row defaulted? The declared `target.positive` is
  matched against the value as written in the file, case-insensitively, whatever
  type the column was read as: `'Yes'` matches a Boolean column's True when the
  file wrote Yes, `1` matches 1 and 1.0, `true` (YAML's `yes`) matches
  true/yes/y/t/1. Every model that reads the target (twin, risk model,
  validation, drift) calls it, so they cannot disagree on the default rate.
* `render_release`: a typed table spelled back in the tape's vocabulary before
  it leaves the platform: Booleans as the file wrote them (`Yes`/`No`,
  `Y`/`N`, `TRUE`/`FALSE`), integers as integers, numbers with the file's
  decimals, dates in their own format.
  Generalisation labels of a k-anonymised quasi-identifier stay labels; only a
  Boolean group's members are spelled in the tape's words.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

from models.errors import TenantConfigError

if TYPE_CHECKING:  # polars is imported where used to keep imports light
    import polars as pl

    from models.tape.schema import ColumnSpec, TableSchema

TRUE_WORDS = ("true", "yes", "y", "t", "1")
FALSE_WORDS = ("false", "no", "n", "f", "0")
# Every lower-case text spelling of a truth value (a 0/1 flag exported as floats writes 1.0): one list for ingest,
# the audit's distance and the risk model's encoding alike.
TRUE_TEXT = TRUE_WORDS + ("1.0",)
FALSE_TEXT = FALSE_WORDS + ("0.0",)
_COUNTERPART = dict(zip(TRUE_WORDS + FALSE_WORDS, FALSE_WORDS + TRUE_WORDS))
# Labels `models.privacy.anonymize` writes; a Boolean group is written "false|true".
_GROUP_SEPARATOR = "|"
_NUMERIC_DTYPES = ("Int64", "Float64")
_WHOLE = re.compile(r"^[+-]?\d+$")


def truth_of(value: Any) -> bool | None:
    """The truth value a flag value stands for (True, 1, 'yes', 'Y', 'TRUE', ...), or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return {1: True, 0: False}.get(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    try:
        return {1.0: True, 0.0: False}.get(float(text))
    except ValueError:
        pass
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def as_truths(series: "pl.Series", *, strict: bool = True) -> "pl.Series | None":
    """`series` as a Boolean flag: each value read by `truth_of` (Yes/No, Y/N, TRUE/FALSE, 1/0, in any dtype).

    With `strict`, None when a non-null value is no truth value; otherwise such
    values become null. Only the distinct values are read, so a long column
    costs one pass.
    """
    import polars as pl

    if series.dtype == pl.Boolean:
        return series
    truths = {value: truth_of(value) for value in series.drop_nulls().unique().to_list()}
    if strict and any(truth is None for truth in truths.values()):
        return None
    if not truths:
        return series.cast(pl.Boolean)
    return series.replace_strict(truths, default=None, return_dtype=pl.Boolean)


def int_if_lossless(series: "pl.Series") -> "pl.Series":
    """`series` as Int64 when every non-null value reads as an integer; else unchanged (text ids, codes)."""
    import polars as pl

    as_int = series.cast(pl.Int64, strict=False)
    return as_int if as_int.null_count() == series.null_count() else series


def counterpart_spelling(spelling: str) -> str | None:
    """The other truth value in the same style: 'Yes' -> 'No', 'TRUE' -> 'FALSE', 'y' -> 'n', '1' -> '0'."""
    other = _COUNTERPART.get(spelling.strip().lower())
    if other is None:
        return None
    if spelling.isupper():
        return other.upper()
    if spelling[:1].isupper():
        return other.title()
    return other


def target_indicator(column: "pl.Series", positive: Sequence[Any]) -> "pl.Series":
    """A Boolean Series: True where `column` holds one of the `positive` values (nulls are False).

    The one rule for "is this row defaulted", whatever type ingest gave the column:

    * Boolean (the file wrote yes/no, Y/N, true/false...): a positive stands for
      the truth value it spells (`'Yes'`, `'y'`, `true`, `1` -> True; `'no'`,
      `0`, `false` -> False);
    * numeric: compared as numbers (`1` matches 1 and 1.0; `true` matches 1);
    * text: compared case-insensitively and without surrounding blanks
      (`'bad'` matches `Bad`); a Boolean positive matches every spelling of its
      truth value (YAML reads an unquoted `yes` as true).
    """
    import polars as pl

    dtype = column.dtype
    if dtype == pl.Boolean:
        truths = {t for t in (truth_of(p) for p in positive) if t is not None}
        return column.is_in(pl.Series(sorted(truths), dtype=pl.Boolean).implode()).fill_null(False)
    if dtype.is_numeric():
        numbers = []
        for p in positive:
            number = _as_number(p)
            if number is not None:
                numbers.append(number)
        return column.cast(pl.Float64).is_in(pl.Series(numbers, dtype=pl.Float64).implode()).fill_null(False)
    texts: set[str] = set()
    for p in positive:
        if isinstance(p, bool):
            texts |= set(TRUE_WORDS if p else FALSE_WORDS)
            continue
        texts.add(str(p).strip().lower())
        number = _as_number(p)
        if number is not None and number.is_integer():
            texts.add(str(int(number)))  # positive 1.0 matches a text "1"
    text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
    return text.is_in(pl.Series(sorted(texts), dtype=pl.String).implode()).fill_null(False)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            truth = truth_of(value)
            return None if truth is None else float(truth)
    return None


def check_target_positive(
    column: "pl.Series", spec: "ColumnSpec", positive: Sequence[Any], *, tenant: str | None, file: str | None
) -> None:
    """Raise `TenantConfigError` when `positive` matches no value of the target `column`.

    The error lists the values found, as the file writes them, so the analyst
    can copy the right one into tenant.yaml.
    """
    if column.len() == 0 or bool(target_indicator(column, positive).any()):
        return
    written = render_column(column.drop_nulls().unique(), spec)
    values = sorted({str(v) for v in written.to_list()})
    shown = ", ".join(repr(v) for v in values[:10]) + (f" and {len(values) - 10} more" if len(values) > 10 else "")
    declared = positive[0] if len(positive) == 1 else list(positive)
    raise TenantConfigError(
        f"target.positive {declared!r} in tenant.yaml matches none of the default flag's values; the file holds {shown}.",
        tenant=tenant,
        file=file,
        column=column.name,
        fix=f"set target.positive to the value(s) that mean 'defaulted', as written in the file "
        f"(e.g. `target: {{column: {column.name}, positive: {values[0]!r}}}`)."
        if values
        else "upload a tape whose default flag has values, or declare another target column.",
    )


def render_column(series: "pl.Series", spec: "ColumnSpec") -> "pl.Series":
    """`series` spelled as the tape writes column `spec`; returned as is when nothing changes.

    * a Boolean written with its own words (`spec.true_as` / `false_as`) comes
      back in those words; a text column of k-anonymity labels keeps its labels
      but each member of a group (`false|true`) is spelled in the tape's words,
      and a 0/1 flag's members with the file's zero fraction (`0.0|1.0`);
    * a date or timestamp comes back in `spec.date_format`, except an ISO date
      (`%Y-%m-%d`), which a Date already writes that way (and Parquet keeps typed);
    * a column the tape held as integers (`spec.dtype` Int64) comes back as
      integers when its values are whole (a float 3.0 becomes 3), and a Boolean
      held as numbers (a 0/1 flag) comes back as 0/1; when the file wrote those
      whole numbers with a zero fraction (116.0, `spec.decimals`), so does the
      release;
    * a number column comes back with no more decimals than the file wrote
      (`spec.decimals`): 1227.9521468 is released as 1227.95 when the file
      writes cents; decorated as the file decorates it ("$1,200.50",
      "12.5%": `spec.prefix`, `spec.suffix`, `spec.grouping`), or grouped as
      it groups thousands ("1 234,56", "1.234,56": `spec.grouping` holds the
      separator and the decimal mark, " ," and ".,"; True is "," and ".").
    """
    import polars as pl

    from models.tape.schema import ColumnType

    dtype = series.dtype
    if spec.true_as is not None and spec.false_as is not None:
        words = {True: spec.true_as, False: spec.false_as}
        if dtype == pl.Boolean:
            return series.replace_strict(words, return_dtype=pl.String)
        if dtype == pl.String:
            # "*" and "(missing)" have no truth value and stay as they are
            return _spell_members(series, lambda member: words.get(truth_of(member), member))
        return series
    if spec.date_format is not None and dtype.is_temporal() and not (dtype == pl.Date and spec.date_format == "%Y-%m-%d"):
        return series.dt.strftime(spec.date_format)
    if spec.dtype in _NUMERIC_DTYPES and dtype == pl.Boolean:
        return _whole_as_written(series.cast(getattr(pl, spec.dtype)), spec)
    if (spec.prefix or spec.suffix or spec.grouping) and dtype.is_numeric():
        return _decorated(series, spec)
    if spec.decimals is not None and spec.dtype == "Float64" and dtype.is_float():
        return series.round(spec.decimals)
    if spec.dtype == "Int64" and dtype == pl.String and spec.type is ColumnType.IDENTIFIER:
        # regenerated keys of an integer id column: integers again, as the released histories write them
        return int_if_lossless(series)
    if spec.dtype == "Int64" and dtype == pl.String and spec.decimals:
        # k-anonymity labels of a column the file wrote 1.0: a group "0|1" or a lone 1 as "0.0|1.0" and "1.0"
        fraction = "." + "0" * spec.decimals
        return _spell_members(series, lambda member: member + fraction if _WHOLE.match(member) else member)
    if spec.dtype == "Int64" and dtype.is_float():
        values = series.drop_nulls().drop_nans()
        if series.is_nan().any() or not bool((values == values.round(0)).all()):
            return series
        return _whole_as_written(series.cast(pl.Int64), spec)
    if spec.dtype == "Int64" and dtype.is_integer():
        return _whole_as_written(series, spec)
    return series


def _grouping_marks(grouping: bool | str | None) -> tuple[str, str]:
    """(thousands separator, decimal mark) of `ColumnSpec.grouping`: True is "1,234.5"; a string is the separator and
    the mark (" ," is "1 234,5", ".," "1.234,5"); nothing is "1234.5"."""
    if isinstance(grouping, str) and len(grouping) == 2:
        return grouping[0], grouping[1]
    if isinstance(grouping, str) and len(grouping) == 1:  # "," is an ungrouped decimal comma: "1234,5"
        return "", grouping
    return ("," if grouping else ""), "."


def _decorated(series: "pl.Series", spec: "ColumnSpec") -> "pl.Series":
    """Numbers written as the file decorates them: "$1,200.50", "12.5%", "-$40.00", "1 234,56" (`spec.prefix`,
    `spec.suffix`, `spec.grouping`, with `spec.decimals` places)."""
    import polars as pl

    places = spec.decimals if spec.decimals is not None else 2
    separator, mark = _grouping_marks(spec.grouping)
    pattern = f"{{:{',' if separator else ''}.{places}f}}"
    marks = str.maketrans({",": separator, ".": mark})

    def write(value: float) -> str:
        text = pattern.format(abs(value)).translate(marks)
        return f"{'-' if value < 0 else ''}{spec.prefix or ''}{text}{spec.suffix or ''}"

    return series.cast(pl.Float64).round(places).map_elements(write, return_dtype=pl.String, skip_nulls=True)


def _spell_members(series: "pl.Series", spell: Callable[[str], str]) -> "pl.Series":
    """`series` of labels with each member of a group (`0|1`, or a lone value) spelled by `spell`."""
    mapping = {}
    for label in series.drop_nulls().unique().to_list():
        spelled = _GROUP_SEPARATOR.join(spell(m) for m in label.split(_GROUP_SEPARATOR))
        if spelled != label:
            mapping[label] = spelled
    return series.replace(mapping) if mapping else series


def _whole_as_written(series: "pl.Series", spec: "ColumnSpec") -> "pl.Series":
    """Whole numbers of an integer column as the file wrote them: with a zero fraction (116.0) when it did.

    pandas writes an integer column that has missing values as floats; ingest reads it as integers and records
    the fraction's places (`spec.decimals`), so the release is written the same way.
    """
    import polars as pl

    return series.cast(pl.Float64) if spec.decimals else series


def render_release(frame: "pl.DataFrame", schema: "TableSchema") -> "pl.DataFrame":
    """`frame` with every column the schema knows spelled as the tape writes it (see `render_column`).

    Usable on any table whose columns share names with `schema` (the released
    loans, or a table with its own schema); other columns pass through.
    """
    changed = []
    for name in frame.columns:
        if name not in schema:
            continue
        series = frame.get_column(name)
        spelled = render_column(series, schema[name])
        if spelled is not series:
            changed.append(spelled.alias(name))
    return frame.with_columns(changed) if changed else frame


def fixed_point_text(frame: "pl.DataFrame", schema: "TableSchema", *, decimal: str = ".") -> "pl.DataFrame":
    """`frame` (a rendered release) for a CSV: number columns the file wrote with a fixed number of places
    (`ColumnSpec.fixed_decimals`: "0.00", "12.50", "1234,00") as text with exactly those places and the file's
    decimal mark; a CSV writer drops trailing zeros (0.0, 12.5). Parquet keeps the numbers; other columns pass through.
    """
    import polars as pl

    exprs = []
    for name, dtype in frame.schema.items():
        spec = schema[name] if name in schema else None
        if spec is None or not spec.fixed_decimals or not spec.decimals or not dtype.is_numeric():
            continue
        scale = 10 ** int(spec.decimals)
        scaled = (pl.col(name).cast(pl.Float64) * scale).round(0)
        if bool(frame.select((scaled.is_finite() & (scaled.abs() >= 2.0**62)).any()).item()):
            continue  # beyond exact 64-bit fixed point: the writer's own spelling
        units = pl.when(scaled.is_finite()).then(scaled).cast(pl.Int64)
        whole, fraction = (units.abs() // scale).cast(pl.String), (units.abs() % scale).cast(pl.String).str.zfill(int(spec.decimals))
        text = pl.when(units < 0).then(pl.lit("-")).otherwise(pl.lit("")) + whole + pl.lit(decimal) + fraction
        exprs.append(pl.when(units.is_not_null()).then(text).otherwise(pl.col(name).cast(pl.String)).alias(name))
    return frame.with_columns(exprs) if exprs else frame
