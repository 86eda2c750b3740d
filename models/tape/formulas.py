"""Formula-like cells (CSV injection): kept inert on the way in, neutralised in every CSV written for people.

Reading keeps a cell such as ``=cmd|' /C calc'!A0`` as verbatim text and counts
such cells (`formula_counts`, reported by `models.tape.ingest`); every CSV
CreditTwin writes for people goes through `formula_safe_csv` (over
`neutralise_formulas`), so a spreadsheet shows them as text.
"""

from __future__ import annotations

import csv
import io
import re

import polars as pl

# A spreadsheet evaluates a cell starting with one of these; OWASP's CSV
# injection guidance adds tab and carriage return to '=', '+', '-', '@'.
FORMULA_PATTERN = r"^[=+\-@\t\r]"
# ... unless the whole cell is a plain number ("-5", "+1,5", "-1.234,56", "-2.5e3", "-7%"): digits and
# separators alone cannot call a function. "-2+3+cmd|' /C calc'!A0" starts with a digit too, and is a formula.
_PLAIN_NUMBER = r"^[+-]?[0-9.,]*[0-9][0-9.,]*(?:[eE][+-]?[0-9]+)?%?$"


def formula_counts(frame: pl.DataFrame) -> dict[str, int]:
    """Per text column of `frame` that has any, how many of its cells are formula-like."""
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not strings or frame.height == 0:
        return {}
    counts = frame.select(_formula_like(pl.col(n)).sum().alias(n) for n in strings).row(0, named=True)
    return {name: int(count) for name, count in counts.items() if count}


def _formula_like(text: pl.Expr) -> pl.Expr:
    """Whether each text cell is one a spreadsheet would evaluate (OWASP CSV injection), numbers excepted."""
    return text.str.contains(FORMULA_PATTERN) & ~text.str.contains(_PLAIN_NUMBER)


def _neutralised(text: str) -> str:
    return "'" + text if re.match(FORMULA_PATTERN, text) and not re.match(_PLAIN_NUMBER, text) else text


def neutralise_formulas(df: pl.DataFrame) -> pl.DataFrame:
    """Prefix formula-like text cells with a single quote so a spreadsheet shows them as text.

    Use on a frame about to be exported as CSV; the stored data (Parquet) keeps the
    verbatim values. Text columns (String, Categorical, Enum; the latter two come
    back as String) change; numbers, dates and a text cell holding a plain number
    ("-5") stay as they are.
    """
    text_types = (pl.String, pl.Categorical, pl.Enum)
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, text_types):
            text = pl.col(name).cast(pl.String)
            exprs.append(pl.when(_formula_like(text)).then(pl.lit("'") + text).otherwise(text).alias(name))
    return df.with_columns(exprs) if exprs else df


def formula_safe_csv(df: pl.DataFrame, *, delimiter: str = ",", decimal: str = ".") -> bytes:
    """`df` as CSV bytes for people to open, formula-like text cells and column names neutralised.

    Every CSV CreditTwin writes for people (the release, reports) goes through
    here, so a cell such as ``=cmd|' /C calc'!A0`` that a tape carried into a
    synthetic category shows as text in a spreadsheet instead of running. The
    header is written separately so that neutralised names cannot collide with
    other columns. `delimiter` and `decimal` write the table the way the lender's
    file was written (a German spreadsheet's ';' and decimal comma), so it opens
    in the same spreadsheet as the tape did.
    """
    if decimal == "," and delimiter == ",":
        delimiter = ";"  # a decimal comma cannot share the comma with the delimiter
    header = io.StringIO()
    csv.writer(header, delimiter=delimiter, lineterminator="\n").writerow([_neutralised(name) for name in df.columns])
    body = neutralise_formulas(df).write_csv(include_header=False, separator=delimiter, decimal_comma=decimal == ",")
    return header.getvalue().encode("utf-8") + body.encode("utf-8")
