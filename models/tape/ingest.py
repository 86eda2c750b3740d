"""Reading uploaded loan tables safely: CSV and Parquet in, typed polars frames out.

Everything a lender uploads is untrusted, so this module:

- reads CSV through polars as text only (never evaluating a cell), after
  sniffing the encoding (UTF-8, UTF-8 with BOM, UTF-16/32 with BOM, a strict
  Windows-1252 fallback), the delimiter and the decimal mark;
- types every column over the whole file (`models.tape.text_types`), so one
  bad cell is reported instead of silently becoming null, and a CSV gives the
  same types whatever its locale;
- streams: the file is scanned lazily twice (statistics, then the typed
  columns) and only the typed result is held in memory, which keeps the peak
  well under three times the file size;
- refuses a file that changes while it is read (size, mtime, inode and SHA-256
  are compared before and after);
- keeps formula-like cells (``=...``, ``+...``, ``@...``) as inert text and
  counts them (`models.tape.formulas` neutralises them in every CSV written
  for people).

The train/holdout split is `models.tape.split`; performance histories are read
by `models.tape.performance`.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import stat
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generator

import polars as pl

from models.errors import InvalidDataError, TenantConfigError
from models.tape.formulas import formula_counts
from models.tape.schema import ColumnType
from models.tape.text_types import COMMA_EVIDENCE, NUMBER_SIGNS, TextTyper, polars_error, whole_numbers

SNIFF_BYTES = 64 * 1024
HASH_CHUNK = 1 << 20
CSV_CHUNK_MIN, CSV_CHUNK_MAX = 1 << 20, 16 << 20
MAX_CELL_BYTES = 256 << 20
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")

_DOT_EVIDENCE = re.compile(r"^[+-]?\d+\.\d+$")
_AMBIGUOUS_THOUSANDS = re.compile(r"^[+-]?\d{1,3}\.\d{3}$")
_SEP_HINT = re.compile(r"^sep=(.)\s*$")

# Bytes that never occur in 8-bit text; NUL also betrays UTF-16 without a BOM.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13))
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)

_BOMS: tuple[tuple[bytes, str, str], ...] = (
    # (BOM, codec that consumes it, name reported); UTF-32 before UTF-16 because
    # the UTF-32 LE BOM starts with the UTF-16 LE one.
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)

_WRONG_ENCODING_FIX = "re-save the file as UTF-8 (CSV UTF-8 in Excel), or set `csv.encoding` in tenant.yaml to its encoding."


@dataclass
class ReadOptions:
    """How to read a CSV upload, from tenant.yaml's optional `csv:` block.

    Attributes:
        encoding: a Python codec name; None sniffs it.
        delimiter: one character; None sniffs it among , ; tab and |.
        decimal: "." or ","; None sniffs it (a comma only when the delimiter is
            not a comma and the numbers look like 1.234,56 or 12,5).
        null_values: cells read as missing, compared exactly: pandas' own list
            (the spreadsheet's `#N/A`, `nan`, `<NA>`, ...) and `-` and `?`.
        header: whether line 1 (after any title lines) names the columns;
            None sniffs it: a first line holding a number with a fraction or
            a sign (30.83, -1), or repeating a value beside a number, is data
            (UCI's german.data, an agency's pipe-delimited file).
        columns: the loans file's column names, in file order: they name a
            file without a header (else column_1, column_2, ...) and replace
            the names of one with a header.
    """

    encoding: str | None = None
    delimiter: str | None = None
    decimal: str | None = None
    null_values: tuple[str, ...] = (
        "", "NA", "N/A", "n/a", "null", "NULL", "None", "-", "?", "NaN",
        # the rest of pandas' defaults (read_csv's na_values), which lenders' exports meet: a spreadsheet's #N/A
        "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "nan",
    )
    header: bool | None = None
    columns: tuple[str, ...] | None = None
    history: bool = False  # the performance file: a headerless one is named through tenant.yaml's performance block


@dataclass
class IngestReport:
    """What reading one file found; JSON-serialisable, shown as Dagster metadata.

    Attributes:
        file: the file's name (never its full path).
        sha256: the SHA-256 of the file's bytes as read.
        size_bytes: the file's size.
        rows: data rows read.
        columns: columns read.
        encoding: the text encoding used, or "parquet".
        delimiter: the CSV delimiter, None for Parquet.
        decimal: the decimal mark, None for Parquet.
        date_columns: column -> the date formats found in it.
        formula_cells: column -> count of formula-like cells kept as text.
        spellings: column -> how the file wrote it, for spelling a release back:
            {"true_as": "Yes", "false_as": "No"} for a flag read as Boolean,
            {"date_format": "%b-%Y"} (the most frequent format) for dates,
            {"decimals": 2} (the most any cell has) for numbers with a decimal mark.
        warnings: things a reviewer should know (encoding fallback, ...).
    """

    file: str
    sha256: str
    size_bytes: int
    rows: int
    columns: int
    encoding: str
    delimiter: str | None
    decimal: str | None
    date_columns: dict[str, list[str]] = field(default_factory=dict)
    formula_cells: dict[str, int] = field(default_factory=dict)
    spellings: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types."""
        return asdict(self)


# --------------------------------------------------------------------------- files


def file_sha256(path: Path, chunk: int = HASH_CHUNK) -> str:
    """The hex SHA-256 of the file at `path`, read in `chunk`-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _identity(path: Path, *, tenant: str) -> tuple[int, int, int]:
    """(size, mtime_ns, inode) of a regular, non-link file, else InvalidDataError."""
    if path.is_symlink():
        raise InvalidDataError(
            "is a symbolic link; uploads must be plain files.", tenant=tenant, file=path.name, fix="copy the file in instead of linking it."
        )
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InvalidDataError(
            "does not exist (it may have been moved while CreditTwin was reading it).",
            tenant=tenant,
            file=path.name,
            fix="upload the file again and wait for the next sensor tick.",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidDataError("is not a regular file.", tenant=tenant, file=path.name, fix="upload a plain CSV or Parquet file.")
    return info.st_size, info.st_mtime_ns, info.st_ino


def _changed_error(path: Path, tenant: str) -> InvalidDataError:
    return InvalidDataError(
        "file changed while it was being read.",
        tenant=tenant,
        file=path.name,
        fix="wait until the upload is complete and retry (the landing sensor retries on its next tick).",
    )


def _check_unchanged(path: Path, before: tuple[int, int, int], sha256: str, *, tenant: str) -> None:
    """Raise when the file at `path` is no longer the one that was read."""
    try:
        after = _identity(path, tenant=tenant)
    except InvalidDataError:
        raise _changed_error(path, tenant) from None
    if after != before or file_sha256(path) != sha256:
        raise _changed_error(path, tenant)


# --------------------------------------------------------------------- entry point


def read_table(
    path: Path,
    *,
    tenant: str,
    options: ReadOptions | None = None,
    column_types: dict[str, str] | None = None,
    mixed_as_text: bool = False,
) -> tuple[pl.DataFrame, IngestReport]:
    """Read an uploaded CSV or Parquet file into a typed polars frame.

    Args:
        path: the uploaded file (.csv/.tsv/.txt or .parquet/.pq).
        tenant: the tenant id, named in every error.
        options: the tenant's `csv:` settings; None sniffs everything.
        column_types: tenant.yaml's `column_types` (column -> ColumnType value);
            declared types override inference; columns absent from the file are
            ignored here (the caller reports them).
        mixed_as_text: read a column of mostly numbers with some words as text
            instead of refusing it (a performance history's status column
            holds months-behind codes 0, 1, 2 beside CO and PIF).

    Returns:
        The frame (Int64, Float64, Boolean, Date, Datetime or String columns, in
        file order) and an `IngestReport`.

    Raises:
        InvalidDataError: empty file, header without rows, wrong encoding,
            malformed CSV, a mostly numeric column with text in it, a declared
            type the values do not fit, or a file changed while being read.
        TenantConfigError: invalid `options` or `column_types`.
    """
    path = Path(path)
    options = options or ReadOptions()
    declared = _declared_types(column_types, tenant=tenant, file=path.name)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise InvalidDataError(
            f"has an unsupported extension '{path.suffix}'.",
            tenant=tenant,
            file=path.name,
            fix="upload the tape as .csv or .parquet.",
        )
    before = _identity(path, tenant=tenant)
    if suffix in PARQUET_SUFFIXES:
        frame, report = _read_parquet(path, tenant=tenant, declared=declared, size=before[0])
    else:
        frame, report = _read_csv(path, tenant=tenant, options=options, declared=declared, size=before[0],
                                  mixed_as_text=mixed_as_text)
    _check_unchanged(path, before, report.sha256, tenant=tenant)
    return frame, report


def _declared_types(column_types: dict[str, str] | None, *, tenant: str, file: str) -> dict[str, ColumnType]:
    declared: dict[str, ColumnType] = {}
    for column, value in (column_types or {}).items():
        try:
            declared[column] = ColumnType(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(t.value for t in ColumnType)
            raise TenantConfigError(
                f"unknown column type '{value}' in column_types.",
                tenant=tenant,
                file=file,
                column=column,
                fix=f"use one of {allowed}.",
            ) from None
    return declared


def _empty_error(tenant: str, file: str) -> InvalidDataError:
    return InvalidDataError(
        "file is empty.", tenant=tenant, file=file, fix="upload the loan tape again with a header row and at least one data row."
    )


# ------------------------------------------------------------------------------ CSV


@dataclass
class _ByteScan:
    sha256: str
    size: int
    bom: tuple[bytes, str, str] | None
    utf8_valid: bool
    has_control: bool
    blank: bool


def _scan_bytes(path: Path, *, expected_size: int, tenant: str) -> _ByteScan:
    """One streaming pass: hash, BOM, UTF-8 validity, control bytes, blankness."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size, utf8_valid, has_control, blank, bom = 0, True, False, True, None
    with open(path, "rb") as handle:
        while block := handle.read(HASH_CHUNK):
            digest.update(block)
            body = block
            if size == 0:
                bom = next((b for b in _BOMS if block.startswith(b[0])), None)
                if bom is not None:
                    body = block[len(bom[0]) :]
            size += len(block)
            wide = bom is not None and bom[1] in ("utf-16", "utf-32")
            if wide:
                # Wide encodings are checked while transcoding; their bytes hold NULs.
                blank = blank and not body.strip(b" \t\r\n\x00")
                continue
            blank = blank and not body.strip(b" \t\r\n")
            has_control = has_control or bool(block.translate(None, _NOT_CONTROL))
            if utf8_valid:
                try:
                    decoder.decode(body)
                except UnicodeDecodeError:
                    utf8_valid = False
    if utf8_valid:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_valid = False
    if size != expected_size:
        raise _changed_error(path, tenant)
    return _ByteScan(digest.hexdigest(), size, bom, utf8_valid, has_control, blank)


def _wrong_encoding(reason: str, *, tenant: str, file: str) -> InvalidDataError:
    return InvalidDataError(reason, tenant=tenant, file=file, fix=_WRONG_ENCODING_FIX)


def _choose_encoding(scan: _ByteScan, options: ReadOptions, *, tenant: str, file: str) -> tuple[str, str | None, list[str]]:
    """(encoding reported, codec to transcode with or None for UTF-8 as is, warnings)."""
    if options.encoding:
        try:
            codec = codecs.lookup(options.encoding).name
        except LookupError:
            raise TenantConfigError(
                f"unknown encoding '{options.encoding}' in csv.encoding.",
                tenant=tenant,
                file=file,
                fix="use a standard name such as utf-8, cp1252, latin-1 or utf-16.",
            ) from None
        if codec in ("utf-8", "utf-8-sig"):
            if not scan.utf8_valid:
                raise _wrong_encoding("wrong encoding: the file is not valid UTF-8 although csv.encoding says so.", tenant=tenant, file=file)
            return codec, None, []
        if scan.has_control and not codec.startswith(("utf-16", "utf-32")):
            raise _wrong_encoding("wrong encoding: the file holds NUL or control bytes, so it is not text.", tenant=tenant, file=file)
        return codec, codec, []
    if scan.bom is not None:
        _, codec, name = scan.bom
        if codec == "utf-8-sig":
            if not scan.utf8_valid:
                raise _wrong_encoding("wrong encoding: the file starts with a UTF-8 BOM but is not valid UTF-8.", tenant=tenant, file=file)
            return name, None, []
        return name, codec, []
    if scan.has_control:
        raise InvalidDataError(
            "wrong encoding: the file holds NUL or control bytes (binary data, or UTF-16 without a byte-order mark).",
            tenant=tenant,
            file=file,
            fix=_WRONG_ENCODING_FIX,
        )
    if scan.utf8_valid:
        return "utf-8", None, []
    warning = (
        f"{file} is not UTF-8; it was read as Windows-1252 (cp1252). If accented characters look wrong, "
        "re-save it as UTF-8 or set csv.encoding in tenant.yaml."
    )
    return "cp1252", "cp1252", [warning]


def _transcode(source: Path, target: Path, codec: str, *, tenant: str, file: str) -> None:
    """Stream `source` from `codec` into UTF-8 at `target`, strictly."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    offset, blank = 0, True
    with open(source, "rb") as fin, open(target, "w", encoding="utf-8", newline="") as fout:
        while True:
            block = fin.read(HASH_CHUNK)
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                raise InvalidDataError(
                    f"wrong encoding: bytes at offset {offset + exc.start} cannot be decoded as {codec}.",
                    tenant=tenant,
                    file=file,
                    fix=_WRONG_ENCODING_FIX,
                ) from None
            if "\x00" in text:
                raise InvalidDataError(
                    f"wrong encoding: decoding as {codec} gives NUL characters, so the file is not {codec} text.",
                    tenant=tenant,
                    file=file,
                    fix=_WRONG_ENCODING_FIX,
                )
            blank = blank and not text.strip(" \t\r\n\ufeff")
            fout.write(text)
            offset += len(block)
            if not block:
                break
    if blank:
        raise _empty_error(tenant, file)


def _head_text(path: Path) -> str:
    """The first ~64 KB of a UTF-8 file as text, cut at the last line end when there is more."""
    with open(path, "rb") as handle:
        raw = handle.read(SNIFF_BYTES + 1)
    complete = len(raw) <= SNIFF_BYTES
    text = codecs.getincrementaldecoder("utf-8-sig")("replace").decode(raw[:SNIFF_BYTES])
    if not complete and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def _sniff_delimiter(text: str) -> str:
    """The candidate that splits the lines into the most consistent field counts (> 1)."""
    best: tuple[tuple[bool, float, int], str] | None = None
    for delimiter in DELIMITERS:
        try:
            counts = [len(row) for row in csv.reader(io.StringIO(text), delimiter=delimiter, quotechar='"') if row]
        except csv.Error:
            continue
        if not counts:
            continue
        mode, _ = Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        score = (counts[0] == mode, sum(c == mode for c in counts) / len(counts), mode)
        if best is None or score > best[0]:
            best = (score, delimiter)
    if best is None:
        # A space-separated table (statlog's german.data layout): only when no usual delimiter splits the lines
        # and single spaces split nearly every line into the same number of fields.
        counts = [len(row) for row in csv.reader(io.StringIO(text), delimiter=" ", quotechar='"') if row]
        if counts:
            mode, seen = Counter(counts).most_common(1)[0]
            if mode >= 2 and seen >= 0.95 * len(counts):
                return " "
    return best[1] if best else ","


# What is left of "$12,500" once its sign is off (thousands commas, no fraction) says nothing of the decimal mark.
_COMMA_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+$")


def _sniff_decimal(rows: list[list[str]]) -> str:
    comma = dot = 0
    for row in rows[1:]:
        for cell in row:
            cell, signs = NUMBER_SIGNS.subn(r"\1", cell.strip())
            if signs and _COMMA_THOUSANDS.match(cell):
                continue
            if COMMA_EVIDENCE.match(cell):
                comma += 1
            elif _DOT_EVIDENCE.match(cell) and not _AMBIGUOUS_THOUSANDS.match(cell):
                dot += 1
    return "," if comma > dot else "."


# The name a column with an empty header field carries while it is read (it is dropped or refused afterwards).
EMPTY_HEADER_PREFIX = "(empty header field) "


@dataclass
class _Dialect:
    delimiter: str
    decimal: str
    skip_rows: int
    names: list[str]
    unnamed: list[str] = field(default_factory=list)  # columns whose header field is empty
    notes: list[str] = field(default_factory=list)  # what the reader decided on its own, for reading_notes
    header: bool = True  # False: the first line (after skip_rows) is already data


def _sniff_dialect(text: str, options: ReadOptions, *, tenant: str, file: str) -> _Dialect:
    """Delimiter, decimal mark, an Excel 'sep=' line and the header names."""
    skip_rows = 0
    first_line = text.split("\n", 1)[0].rstrip("\r")
    hint = _SEP_HINT.match(first_line)
    if hint:
        skip_rows = 1
        text = text.split("\n", 1)[1] if "\n" in text else ""
    if options.delimiter:
        delimiter = options.delimiter
        if delimiter in ('"', "\n", "\r"):
            raise TenantConfigError(
                f"csv.delimiter {delimiter!r} cannot be a quote or a line break.", tenant=tenant, file=file, fix="use , ; | or a tab."
            )
    elif hint:
        delimiter = hint.group(1)
    else:
        delimiter = _sniff_delimiter(text)
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter, quotechar='"') if row]
    except csv.Error as exc:
        raise InvalidDataError(
            f"could not be read as CSV ({exc}).", tenant=tenant, file=file, fix="check the quoting, or set csv.delimiter in tenant.yaml."
        ) from None
    if not rows:
        raise _empty_error(tenant, file)
    notes: list[str] = []
    titles = _title_lines(rows)
    if titles:
        # a report title above the header (a raw Lending Club download's "Notes offered by Prospectus ...")
        skip_rows += titles
        rows = rows[titles:]
        notes.append(f"line{'s' if titles > 1 else ''} 1{f'-{titles}' if titles > 1 else ''} above the header "
                     f"{'hold' if titles > 1 else 'holds'} a single field ({'titles' if titles > 1 else 'a title'}, "
                     f"not a header of {len(rows[0])} columns) and {'were' if titles > 1 else 'was'} skipped")
    header = options.header if options.header is not None else not _data_line(rows[0])
    if not header or options.columns is not None:
        names = _given_names(rows[0], options, header=header, sniffed=options.header is None, notes=notes,
                             tenant=tenant, file=file)
        decimal = _decimal_mark(options, delimiter, rows, tenant=tenant, file=file)
        return _Dialect(delimiter=delimiter, decimal=decimal, skip_rows=skip_rows, names=names, notes=notes, header=header)
    names = [name.strip() for name in rows[0]]
    empty: list[str] = []
    for position, name in enumerate(names, start=1):
        if name:
            continue
        if position == 1:
            # pandas' to_csv writes its row index under an empty name; pandas reads it back as 'Unnamed: 0',
            # which the schema knows as an export's row number
            names[0] = "Unnamed: 0"
            notes.append("header field 1 is empty: read as the export's row index 'Unnamed: 0'")
        else:
            names[position - 1] = f"{EMPTY_HEADER_PREFIX}{position}"
            empty.append(names[position - 1])
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InvalidDataError(
            "the header repeats a column name.",
            tenant=tenant,
            file=file,
            column=duplicated[0],
            fix=f"give each column a unique name (repeated: {', '.join(duplicated)}).",
        )
    decimal = _decimal_mark(options, delimiter, rows, tenant=tenant, file=file)
    return _Dialect(delimiter=delimiter, decimal=decimal, skip_rows=skip_rows, names=names, unnamed=empty, notes=notes)


def _decimal_mark(options: ReadOptions, delimiter: str, rows: list[list[str]], *, tenant: str, file: str) -> str:
    if options.decimal is not None:
        if options.decimal not in (".", ","):
            raise TenantConfigError(f"csv.decimal must be '.' or ',', got {options.decimal!r}.", tenant=tenant, file=file, fix="set csv.decimal to '.' or ','.")
        return options.decimal
    if delimiter == ",":
        return "."
    return _sniff_decimal(rows)


def numbered_columns(width: int) -> list[str]:
    """The names a file without a header line is read under: column_1, column_2, ..., column_`width`."""
    return [f"column_{i}" for i in range(1, width + 1)]


_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$")


def _data_line(row: list[str]) -> bool:
    """Whether a file's first line reads as data rather than as column names.

    Column names are words, sometimes whole numbers (a wide history's months
    1, 2, ..., 24, a year), and never repeat. A first line holding a number
    with a fraction, a sign or an exponent (30.83, -1, 1e5), or repeating a
    value beside a number (german.data's "A11 6 A34 ... 4 ... 4"), is a loan.
    """
    fields = [value.strip() for value in row]
    numbers = [value for value in fields if _NUMBER.match(value)]
    if not numbers:
        return False
    if any(not value.isdigit() for value in numbers):
        return True
    filled = [value for value in fields if value]
    return len(set(filled)) < len(filled)


def _given_names(
    first: list[str], options: ReadOptions, *, header: bool, sniffed: bool, notes: list[str], tenant: str, file: str
) -> list[str]:
    """The column names of a file read without its own header, or renamed by ``csv.columns``; notes what was done."""
    width = len(first)
    if options.columns is not None:
        names = [str(name).strip() for name in options.columns]
        if len(names) != width:
            raise TenantConfigError(
                f"csv.columns in tenant.yaml lists {len(names)} name{'s' if len(names) != 1 else ''}, but the file's "
                f"lines have {width} field{'s' if width != 1 else ''}.",
                tenant=tenant, file=file,
                fix=f"list exactly {width} column names under csv.columns, in the order of the file's fields.",
            )
        blank = [str(i) for i, name in enumerate(names, start=1) if not name]
        repeated = sorted({name for name in names if name and names.count(name) > 1})
        if blank or repeated:
            raise TenantConfigError(
                "csv.columns in tenant.yaml " + (f"leaves name {', '.join(blank)} empty" if blank else
                                                 f"repeats {', '.join(repeated)}") + ".",
                tenant=tenant, file=file, fix="give every field of the file its own non-empty name under csv.columns.",
            )
        if header:
            notes.append(f"the header's {width} names were replaced by csv.columns from tenant.yaml")
        else:
            notes.append(f"the file has no header line; its {width} columns are named by csv.columns in tenant.yaml")
        return names
    names = numbered_columns(width)
    example = next((value.strip() for value in first if _NUMBER.match(value.strip()) and not value.strip().isdigit()), None)
    why = (f"line 1 holds data, not column names ({'it holds the number ' + repr(example) if example else 'a value repeats beside a number'}), "
           if sniffed else "csv.header is false in tenant.yaml, ")
    how = ("map the history's fields under performance in tenant.yaml (e.g. loan_id: column_1, period: column_2)"
           if options.history else "to use the lender's own names, list them under csv.columns in tenant.yaml, in file order")
    notes.append(why + f"so the file was read without a header and its {width} columns named column_1 to column_{width}; "
                 + how)
    return names


def _title_lines(rows: list[list[str]]) -> int:
    """How many leading single-field lines stand above a header of several fields (at most 3).

    Such a line is a report's title, not a header: the lines after it agree on
    one field count of 2 or more, which the title line does not have.
    """
    counts = [len(row) for row in rows[:50]]
    titles = 0
    while titles < min(3, len(counts) - 1) and counts[titles] == 1:
        titles += 1
    if not titles:
        return 0
    rest = counts[titles:]
    mode, seen = Counter(rest).most_common(1)[0]
    return titles if mode >= 2 and rest[0] == mode and seen >= 0.9 * len(rest) else 0


def _drop_unnamed(frame: pl.DataFrame, dialect: _Dialect, *, tenant: str, file: str) -> pl.DataFrame:
    """Drop the columns with an empty header field that hold no value (Excel's trailing ',,,'); refuse the others."""
    if not dialect.unnamed:
        return frame
    holding = [name for name in dialect.unnamed if frame.get_column(name).null_count() < frame.height]
    if holding:
        position = int(holding[0][len(EMPTY_HEADER_PREFIX):])
        raise InvalidDataError(
            f"header field {position} is empty, but the column under it holds values.",
            tenant=tenant,
            file=file,
            fix=f"give column {position} a name in the header row.",
        )
    dialect.notes.append(f"{len(dialect.unnamed)} column{'s' if len(dialect.unnamed) > 1 else ''} with an empty "
                         "header field and no value (a spreadsheet's trailing separators) "
                         f"{'were' if len(dialect.unnamed) > 1 else 'was'} dropped")
    return frame.drop(dialect.unnamed)


def _read_csv(
    path: Path, *, tenant: str, options: ReadOptions, declared: dict[str, ColumnType], size: int,
    mixed_as_text: bool = False,
) -> tuple[pl.DataFrame, IngestReport]:
    """Sniff, transcode when needed, and type a CSV upload."""
    file = path.name
    if size == 0:
        raise _empty_error(tenant, file)
    scan = _scan_bytes(path, expected_size=size, tenant=tenant)
    encoding, codec, warnings = _choose_encoding(scan, options, tenant=tenant, file=file)
    with tempfile.TemporaryDirectory(prefix="credittwin-ingest-") as tmp:
        source = path
        if codec is not None:
            source = Path(tmp) / "utf8.csv"
            _transcode(path, source, codec, tenant=tenant, file=file)
        elif scan.blank:
            raise _empty_error(tenant, file)
        text = _head_text(source)
        dialect = _sniff_dialect(text, options, tenant=tenant, file=file)
        chunks = _CsvChunks(source, dialect, null_values=options.null_values, tenant=tenant, file=file)
        typer = TextTyper(
            chunks.batches,
            text_columns={name: pl.col(name) for name in dialect.names},
            direct={},
            order=dialect.names,
            decimal=dialect.decimal,
            delimiter=dialect.delimiter,
            declared=declared,
            tenant=tenant,
            file=file,
            first_line=chunks.first_data_line,
            read_fix=_CSV_FIX,
            mixed_as_text=mixed_as_text,
        )
        frame = _drop_unnamed(typer.run(), dialect, tenant=tenant, file=file)
    report = IngestReport(
        file=file,
        sha256=scan.sha256,
        size_bytes=scan.size,
        rows=frame.height,
        columns=frame.width,
        encoding=encoding,
        delimiter=dialect.delimiter,
        decimal=dialect.decimal,
        date_columns=typer.date_columns,
        formula_cells=formula_counts(frame),
        spellings=typer.spellings,
        warnings=warnings + dialect.notes + chunks.notes + typer.warnings,
    )
    return frame, report


_SUMMARY_WORD = re.compile(r"^\s*(grand\s+)?(sub)?(totals?|sum|count|average|mean)\b", re.IGNORECASE)
_CSV_FIX = "check that every row has as many fields as the header and that quotes are balanced, or set csv.delimiter in tenant.yaml."


class _CsvChunks:
    """A UTF-8 CSV as a series of text-only polars frames (one per chunk of the file).

    The file is read with plain buffered reads and cut at line ends outside
    quotes, so only one chunk of raw text is in memory at a time. (polars' own
    scanner memory-maps the whole file, which puts the file's size on top of
    the result in the process's resident memory.) A chunk is a sixteenth of
    the file, between 1 and 16 MiB: typing a chunk briefly takes several times
    its size, which must stay small next to the file.
    """

    def __init__(self, path: Path, dialect: _Dialect, *, null_values: tuple[str, ...], tenant: str, file: str) -> None:
        self.path = path
        self.dialect = dialect
        self.schema = {name: pl.String for name in dialect.names}
        self.null_values = list(null_values)
        self.tenant = tenant
        self.file = file
        self.data_offset, header_lines = self._locate_data()
        self.first_data_line = 1 + header_lines
        self._summary_notes: list[str] = []  # summary lines dropped from the end of the file
        self._short: dict[int, int] = {}  # line number -> fields, of the lines shorter than the header
        self._judged: set[int] = set()  # first line numbers of the chunks already judged (the typer reads twice)
        self._summary_rows: int | None = None  # how many, decided on the first pass over the batches
        self.chunk_bytes = min(CSV_CHUNK_MAX, max(CSV_CHUNK_MIN, path.stat().st_size // 16))

    def _error(self, reason: str) -> InvalidDataError:
        return InvalidDataError(reason, tenant=self.tenant, file=self.file, fix=_CSV_FIX)

    @property
    def notes(self) -> list[str]:
        """What the reader decided on its own while reading the rows, for reading_notes."""
        notes = list(self._summary_notes)
        if self._short:
            width = len(self.dialect.names)
            lines = sorted(self._short)
            shown = ", ".join(f"line {n} has {self._short[n]}" for n in lines[:5]) + (f", and {len(lines) - 5} more" if len(lines) > 5 else "")
            notes.append(f"{len(lines)} line{'s' if len(lines) > 1 else ''} ha{'ve' if len(lines) > 1 else 's'} fewer "
                         f"fields than the header's {width} ({shown}); the missing last fields were read as empty")
        return notes

    def _check_short_lines(self, data: bytes, line: int) -> None:
        """Record the chunk's lines with fewer fields than the header; refuse a loan split over two lines.

        With a fixed schema polars pads a short line with nulls. A line break
        inside an unquoted field (a free-text purpose or an address) splits one
        loan into two short lines whose fields add up to the header's plus one:
        read as two loans, both wrong, so it is refused. Other short lines (an
        export that drops trailing empty fields) are read as empty and named in
        the reading notes. Only chunks without a quote character are judged,
        where every line is surely one record.
        """
        width = len(self.dialect.names)
        delimiter = self.dialect.delimiter.encode()
        if width < 2 or line in self._judged or b'"' in data:
            return
        self._judged.add(line)
        records = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if data.count(delimiter) >= (width - 1) * records:
            return  # every line complete (a longer one is polars' own error), the common case, at no per-line cost
        lines = pl.Series(data.decode("utf-8", errors="replace").split("\n"))
        counts = lines.str.count_matches(self.dialect.delimiter, literal=True) + 1
        blank = lines.str.strip_chars().str.len_chars() == 0
        short = (~blank & (counts < width)).arg_true().to_list()
        fields = counts.to_list()
        for position in short:
            self._short.setdefault(line + position, fields[position])
        for first, second in zip(short, short[1:]):
            if second == first + 1 and fields[first] + fields[second] - 1 == width:
                raise InvalidDataError(
                    f"lines {line + first} and {line + second} hold {fields[first]} and {fields[second]} fields where "
                    f"the header has {width}: one loan split over two lines by a line break inside a field.",
                    tenant=self.tenant, file=self.file,
                    fix=f"remove the line break from that field of line {line + first} (or put the field in double "
                    "quotes) and upload the file again.",
                )

    def _locate_data(self) -> tuple[int, int]:
        """Byte offset of the first data row and the number of lines before it."""
        with open(self.path, "rb") as handle:
            head = handle.read(SNIFF_BYTES * 4)
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        for _ in range(self.dialect.skip_rows):
            start = head.index(b"\n", start) + 1
        if not self.dialect.header:
            return start, head.count(b"\n", 0, start)
        end = _record_end(head, start)
        if end is None:
            if len(head) < SNIFF_BYTES * 4:
                return len(head), head.count(b"\n", 0, len(head)) + 1
            raise self._error("the header row is longer than 256 KB or has an unclosed quote.")
        return end, head.count(b"\n", 0, end)

    def batches(self) -> Generator[pl.DataFrame, None, None]:
        """Text-only frames of consecutive rows, in file order, without the file's closing summary lines."""
        last: pl.DataFrame | None = None
        for frame in self._frames():
            if last is not None:
                yield last
            last = frame
        if last is not None:
            yield self._without_summary_lines(last)

    def _without_summary_lines(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` (the file's last rows) less the summary lines a report or spreadsheet closes with.

        A closing line is a summary, not a loan, when it holds one value in a
        table of three or more columns (Lending Club's "Total amount funded in
        policy code 1: ...") or starts with a word such as Total, Sum or Count
        and fills at most half of the columns (a spreadsheet's totals row). At most
        five such lines, each named in the reading notes with its line number.
        """
        if self._summary_rows is None:  # the typer reads the batches twice: the tail is judged once
            self._summary_rows = self._count_summary_rows(frame)
        return frame.head(frame.height - self._summary_rows)

    def _count_summary_rows(self, frame: pl.DataFrame) -> int:
        """How many of `frame`'s last rows are summary lines (noted), refusing a cut-off last line when none is."""
        width = frame.width
        if frame.height == 0 or width < 3:
            return 0
        tail = frame.tail(6)
        filled = tail.select(pl.sum_horizontal(pl.all().str.strip_chars().str.len_chars().fill_null(0) > 0)).to_series()
        first = tail.select(pl.coalesce(pl.all().str.strip_chars().replace("", None))).to_series()
        drop = 0
        for count, value in zip(reversed(filled.to_list()), reversed(first.to_list())):
            if drop >= 5 or frame.height - drop <= 1:
                break
            summary = count == 1 or (count <= width // 2 and value is not None and _SUMMARY_WORD.match(value))
            if not summary:
                break
            drop += 1
        if drop:
            lines = self._last_line_numbers(drop)
            for number in lines:  # a summary line is left out, not read as a short loan
                self._short.pop(number, None)
            self._summary_notes.append(f"the last {'line' if drop == 1 else f'{drop} lines'} "
                              f"({', '.join(str(n) for n in lines)}) {'were' if drop > 1 else 'was'} read as a "
                              "summary of the table (a single value, or a row of totals), not as "
                              f"{'loans' if drop > 1 else 'a loan'}, and left out")
        else:
            self._refuse_a_cut_off_last_line()
        return drop

    def _refuse_a_cut_off_last_line(self) -> None:
        """`InvalidDataError` when the file's last line has fewer fields than the header: an upload cut off.

        With a fixed schema polars pads a short row with nulls, so a transfer that
        stopped mid-line would add a loan with made-up missing values. Only the
        last line is read (a cut-off upload is cut at its end), and only when the
        file's tail has no quote, where a line is surely one record.
        """
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            handle.seek(max(self.data_offset, size - (1 << 16)))
            tail = handle.read()
        if b'"' in tail:
            return
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if len(lines) < 2:  # the tail may start mid-line; its last line is then the only one and may be partial
            return
        fields = len(lines[-1].rstrip(b"\r").split(self.dialect.delimiter.encode()))
        if fields < len(self.dialect.names):
            number = self._last_line_numbers(1)[0]
            raise InvalidDataError(
                f"the last line ({number}) has {fields} field{'s' if fields != 1 else ''} where the header has "
                f"{len(self.dialect.names)}: the file looks cut off.",
                tenant=self.tenant, file=self.file,
                fix="upload the whole file again (check that the export or the transfer finished).",
            )

    def _last_line_numbers(self, count: int) -> list[int]:
        """The numbers of the file's last `count` non-blank lines (read only when summary lines were found)."""
        from collections import deque

        numbers: deque[int] = deque(maxlen=count)
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    numbers.append(number)
        return list(numbers)

    def _frames(self) -> Generator[pl.DataFrame, None, None]:
        """Each chunk of the file as a text-only frame."""
        with open(self.path, "rb") as handle:
            handle.seek(self.data_offset)
            pending = b""
            line = self.first_data_line
            while True:
                block = handle.read(self.chunk_bytes)
                data = pending + block if pending else block
                if not block:
                    if data.strip():
                        yield self._parse(data, line)
                    return
                cut = _last_record_end(data)
                if cut is None:
                    if len(data) > MAX_CELL_BYTES:
                        raise self._error(f"a quoted cell starting near line {line} never ends (over {MAX_CELL_BYTES >> 20} MB without a closing quote).")
                    pending = data
                    continue
                yield self._parse(data[:cut], line)
                line += data.count(b"\n", 0, cut)
                pending = data[cut:]

    def _parse(self, data: bytes, line: int) -> pl.DataFrame:
        self._check_short_lines(data, line)
        try:
            frame = pl.read_csv(
                data,
                has_header=False,
                schema=self.schema,
                separator=self.dialect.delimiter,
                quote_char='"',
                null_values=self.null_values,
                infer_schema=False,
                raise_if_empty=False,
            )
        except pl.exceptions.PolarsError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise self._error(f"could not be read as CSV in the rows starting at line {line} ({detail}).") from None
        if data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data:
            # With a fixed schema polars turns a blank line into a row of nulls;
            # a blank line is no record, so drop rows with no value at all.
            frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
        return frame


def _record_end(data: bytes, start: int) -> int | None:
    """The offset just past the first line end at or after `start` that is outside quotes."""
    position = start
    while True:
        newline = data.find(b"\n", position)
        if newline < 0:
            return None
        if data.count(b'"', start, newline) % 2 == 0:
            return newline + 1
        position = newline + 1


def _last_record_end(data: bytes) -> int | None:
    """The offset just past the last line end in `data` that is outside quotes.

    `data` starts at a record boundary, so a line end is outside quotes when an
    even number of quote characters precede it ("" escapes come in pairs).
    """
    end = len(data)
    quotes_total = data.count(b'"')
    while True:
        newline = data.rfind(b"\n", 0, end)
        if newline < 0:
            return None
        if quotes_total == 0 or data.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        end = newline


# -------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path, *, tenant: str, declared: dict[str, ColumnType], size: int) -> tuple[pl.DataFrame, IngestReport]:
    """Read a Parquet upload; text columns are typed like CSV columns."""
    file = path.name
    if size == 0:
        raise _empty_error(tenant, file)
    fix = "export the tape again as Parquet (or as CSV)."
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise InvalidDataError("is not a Parquet file (its magic bytes are missing).", tenant=tenant, file=file, fix=fix)
    sha256 = file_sha256(path)
    lazy = pl.scan_parquet(path)
    try:
        schema = lazy.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise polars_error(exc, tenant=tenant, file=file, what="Parquet", fix=fix) from None
    text_columns: dict[str, pl.Expr] = {}
    direct: dict[str, pl.Expr] = {}
    for name, dtype in schema.items():
        wanted = declared.get(name)
        column = pl.col(name)
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
            raise InvalidDataError(
                f"has a {dtype} column, which a loan tape cannot hold.",
                tenant=tenant,
                file=file,
                column=name,
                fix="flatten the column into plain numbers, dates or text before export.",
            )
        if dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
            text_columns[name] = column.cast(pl.String)
        elif wanted in (ColumnType.CATEGORICAL, ColumnType.IDENTIFIER, ColumnType.TEXT):
            direct[name] = column.cast(pl.String)
        elif wanted is None:
            direct[name] = _normalised_parquet(column, dtype)
        elif wanted is ColumnType.NUMERIC and dtype.is_numeric():
            direct[name] = column.cast(pl.Float64)
        elif wanted is ColumnType.INTEGER and dtype.is_integer():
            direct[name] = column.cast(pl.Int64)
        elif (wanted is ColumnType.BOOLEAN and dtype == pl.Boolean) or (wanted is ColumnType.DATETIME and dtype.is_temporal()):
            direct[name] = column
        else:
            # A declared type the stored type does not give (e.g. float -> integer):
            # go through the text path, which checks every value.
            text_columns[name] = column.cast(pl.String)

    def batches() -> Generator[pl.DataFrame, None, None]:
        try:
            yield from pl.scan_parquet(path).collect_batches()
        except pl.exceptions.PolarsError as exc:
            raise polars_error(exc, tenant=tenant, file=file, what="Parquet", fix=fix) from None

    typer = TextTyper(
        batches,
        text_columns=text_columns,
        direct=direct,
        order=list(schema.names()),
        decimal=".",
        declared=declared,
        tenant=tenant,
        file=file,
        first_line=None,
        read_fix=fix,
    )
    frame = typer.run()
    undeclared_floats = [n for n, t in schema.items() if declared.get(n) is None
                         and (t.is_float() or (t.is_decimal() and not t.scale))]
    frame = _whole_floats_as_integers(frame, undeclared_floats)
    for name, dtype in schema.items():
        # a SQL export's DECIMAL(12, 2) holds exactly its scale's places: the release writes them so (1275.62, not
        # the float 1275.619259 a twin samples)
        if dtype.is_decimal() and dtype.scale and frame.schema[name].is_float():
            typer.spellings.setdefault(name, {}).update(decimals=int(dtype.scale), fixed_decimals=True)
    report = IngestReport(
        file=file,
        sha256=sha256,
        size_bytes=size,
        rows=frame.height,
        columns=frame.width,
        encoding="parquet",
        delimiter=None,
        decimal=None,
        date_columns=typer.date_columns,
        formula_cells=formula_counts(frame),
        spellings=typer.spellings,
        warnings=typer.warnings,
    )
    return frame, report


def _whole_floats_as_integers(frame: pl.DataFrame, floats: list[str]) -> pl.DataFrame:
    """`frame` with each of the undeclared float columns `floats` whose every value is whole read as integers.

    pandas stores an integer column with missing values as floats (3.0, null), in Parquet as in CSV; the CSV reader
    types such a column as integers with nulls (`TextTyper`), and so does this, so a count is released whole.
    """
    if not floats:
        return frame
    present = [pl.col(name).drop_nulls() for name in floats]
    verdict = frame.select([(whole_numbers(col).all() & (col.len() > 0)).alias(name) for col, name in zip(present, floats)])
    whole = [name for name in floats if verdict.get_column(name).item()]
    return frame.with_columns(pl.col(whole).cast(pl.Int64)) if whole else frame


def _normalised_parquet(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Parquet's many widths as the few types CSV typing gives, so both agree."""
    if dtype.is_integer():
        return column.cast(pl.Int64)
    if dtype.is_float() or dtype.is_decimal():
        return column.cast(pl.Float64)
    return column


# ---------------------------------------------------------------------- duplicates


def find_duplicate_ids(df: pl.DataFrame, column: str) -> tuple[int, list]:
    """How many distinct ids in `column` occur more than once, and up to five of them.

    Nulls are not counted. Examples come in order of first appearance.

    Raises:
        InvalidDataError: `column` is not in `df`.
    """
    if column not in df.columns:
        raise InvalidDataError("is not a column of the table.", column=column, fix="name the loan id column under id_columns in tenant.yaml.")
    ids = df.get_column(column).drop_nulls()
    duplicated = ids.filter(ids.is_duplicated()).unique(maintain_order=True)
    return duplicated.len(), duplicated.head(5).to_list()
