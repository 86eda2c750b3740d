"""Reading uploaded loan tapes safely: CSV and Parquet in, typed polars frames out.

Everything a lender uploads is untrusted, so this module:

- reads CSV through polars as text only (never evaluating a cell), after
  sniffing the encoding (UTF-8, UTF-8 with BOM, UTF-16/32 with BOM, a strict
  Windows-1252 fallback), the delimiter and the decimal mark;
- types every column itself with polars expressions over the whole file, so one
  bad cell is reported instead of silently becoming null, and a CSV gives the
  same types whatever its locale;
- streams: the file is scanned lazily twice (statistics, then the typed
  columns) and only the typed result is held in memory, which keeps the peak
  well under three times the file size;
- refuses a file that changes while it is read (size, mtime, inode and SHA-256
  are compared before and after);
- keeps formula-like cells (``=...``, ``+...``, ``@...``) as inert text and
  counts them, with `formula_safe_csv` (over `neutralise_formulas`) for every CSV
  written for people.

It also splits a tape deterministically into train and holdout by a stable hash
of the loan id, and validates a performance history against its loans file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import re
import stat
import tempfile
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator

import numpy as np
import polars as pl

from models.errors import InvalidDataError, TenantConfigError, ValidationErrors
from models.tape.schema import ColumnType, normalise_column_name, resolve_aliases
from models.sequences.states import STATES, canonical_states
from models.sequences.histories import month_index
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT, counterpart_spelling

SNIFF_BYTES = 64 * 1024
SAMPLE_ROWS = 10_000
HASH_CHUNK = 1 << 20
CSV_CHUNK_MIN, CSV_CHUNK_MAX = 1 << 20, 16 << 20
MAX_CELL_BYTES = 256 << 20
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Tried on every text column that may hold dates; a column may mix them (each
# row takes the first format that parses it).
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
)
_DAY_FIRST, _MONTH_FIRST = "%d/%m/%Y", "%m/%d/%Y"
# Decimal places counted per number column; a column with more is released at full precision.
_DECIMALS = (0, 1, 2, 3, 4, 5, 6)

BOOL_TRUE = ("true", "yes", "y")
BOOL_FALSE = ("false", "no", "n")
# Only a column declared boolean also accepts 0/1, so an integer 0/1 column
# stays Int64 and the schema decides whether it is a flag.
_BOOL_DECLARED_TRUE = TRUE_TEXT
_BOOL_DECLARED_FALSE = FALSE_TEXT

# A spreadsheet evaluates a cell starting with one of these; OWASP's CSV
# injection guidance adds tab and carriage return to '=', '+', '-', '@'.
FORMULA_PATTERN = r"^[=+\-@\t\r]"
# ... unless the whole cell is a plain number ("-5", "+1,5", "-1.234,56", "-2.5e3", "-7%"): digits and
# separators alone cannot call a function. "-2+3+cmd|' /C calc'!A0" starts with a digit too, and is a formula.
_PLAIN_NUMBER = r"^[+-]?[0-9.,]*[0-9][0-9.,]*(?:[eE][+-]?[0-9]+)?%?$"

# A decimal-comma number, optionally with '.' thousands groups: 12,5 / 1.234,56 / 1.234
_COMMA_NUMBER = r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?$"
_COMMA_EVIDENCE = re.compile(r"^[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+$")
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
_NUMERIC_FIX = (
    "correct those cells (write a missing value as an empty cell or NA), or declare the column as text "
    "with `column_types: {{{column}: categorical}}` in tenant.yaml."
)


@dataclass
class ReadOptions:
    """How to read a CSV upload, from tenant.yaml's optional `csv:` block.

    Attributes:
        encoding: a Python codec name; None sniffs it.
        delimiter: one character; None sniffs it among , ; tab and |.
        decimal: "." or ","; None sniffs it (a comma only when the delimiter is
            not a comma and the numbers look like 1.234,56 or 12,5).
        null_values: cells read as missing, compared exactly.
    """

    encoding: str | None = None
    delimiter: str | None = None
    decimal: str | None = None
    null_values: tuple[str, ...] = ("", "NA", "N/A", "n/a", "null", "NULL", "None", "-", "?", "NaN")


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
) -> tuple[pl.DataFrame, IngestReport]:
    """Read an uploaded CSV or Parquet file into a typed polars frame.

    Args:
        path: the uploaded file (.csv/.tsv/.txt or .parquet/.pq).
        tenant: the tenant id, named in every error.
        options: the tenant's `csv:` settings; None sniffs everything.
        column_types: tenant.yaml's `column_types` (column -> ColumnType value);
            declared types override inference; columns absent from the file are
            ignored here (the caller reports them).

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
        frame, report = _read_csv(path, tenant=tenant, options=options, declared=declared, size=before[0])
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


def _header_only_error(tenant: str, file: str) -> InvalidDataError:
    return InvalidDataError(
        "has a header but no rows.", tenant=tenant, file=file, fix="export the tape again including its data rows, not only the column names."
    )


def _polars_error(exc: Exception, *, tenant: str, file: str, what: str, fix: str) -> InvalidDataError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return InvalidDataError(f"could not be read as {what} ({first_line}).", tenant=tenant, file=file, fix=fix)


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
    return best[1] if best else ","


def _sniff_decimal(rows: list[list[str]]) -> str:
    comma = dot = 0
    for row in rows[1:]:
        for cell in row:
            cell = cell.strip()
            if _COMMA_EVIDENCE.match(cell):
                comma += 1
            elif _DOT_EVIDENCE.match(cell) and not _AMBIGUOUS_THOUSANDS.match(cell):
                dot += 1
    return "," if comma > dot else "."


@dataclass
class _Dialect:
    delimiter: str
    decimal: str
    skip_rows: int
    names: list[str]


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
    names = [name.strip() for name in rows[0]]
    for position, name in enumerate(names, start=1):
        if not name:
            raise InvalidDataError(
                f"header field {position} is empty.",
                tenant=tenant,
                file=file,
                fix="give every column a name in the header row (delete an unnamed index column).",
            )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InvalidDataError(
            "the header repeats a column name.",
            tenant=tenant,
            file=file,
            column=duplicated[0],
            fix=f"give each column a unique name (repeated: {', '.join(duplicated)}).",
        )
    if options.decimal is not None:
        if options.decimal not in (".", ","):
            raise TenantConfigError(f"csv.decimal must be '.' or ',', got {options.decimal!r}.", tenant=tenant, file=file, fix="set csv.decimal to '.' or ','.")
        decimal = options.decimal
    elif delimiter == ",":
        decimal = "."
    else:
        decimal = _sniff_decimal(rows)
    return _Dialect(delimiter=delimiter, decimal=decimal, skip_rows=skip_rows, names=names)


def _read_csv(path: Path, *, tenant: str, options: ReadOptions, declared: dict[str, ColumnType], size: int) -> tuple[pl.DataFrame, IngestReport]:
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
        typer = _Typer(
            chunks.batches,
            text_columns={name: pl.col(name) for name in dialect.names},
            direct={},
            order=dialect.names,
            decimal=dialect.decimal,
            declared=declared,
            tenant=tenant,
            file=file,
            first_line=chunks.first_data_line,
            read_fix=_CSV_FIX,
        )
        frame = typer.run()
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
        formula_cells=_formula_counts(frame),
        spellings=typer.spellings,
        warnings=warnings + typer.warnings,
    )
    return frame, report


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
        self.chunk_bytes = min(CSV_CHUNK_MAX, max(CSV_CHUNK_MIN, path.stat().st_size // 16))

    def _error(self, reason: str) -> InvalidDataError:
        return InvalidDataError(reason, tenant=self.tenant, file=self.file, fix=_CSV_FIX)

    def _locate_data(self) -> tuple[int, int]:
        """Byte offset of the first data row and the number of lines before it."""
        with open(self.path, "rb") as handle:
            head = handle.read(SNIFF_BYTES * 4)
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        for _ in range(self.dialect.skip_rows):
            start = head.index(b"\n", start) + 1
        end = _record_end(head, start)
        if end is None:
            if len(head) < SNIFF_BYTES * 4:
                return len(head), head.count(b"\n", 0, len(head)) + 1
            raise self._error("the header row is longer than 256 KB or has an unclosed quote.")
        return end, head.count(b"\n", 0, end)

    def batches(self) -> Generator[pl.DataFrame, None, None]:
        """Text-only frames of consecutive rows, in file order."""
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
        raise _polars_error(exc, tenant=tenant, file=file, what="Parquet", fix=fix) from None
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
            raise _polars_error(exc, tenant=tenant, file=file, what="Parquet", fix=fix) from None

    typer = _Typer(
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
        formula_cells=_formula_counts(frame),
        spellings=typer.spellings,
        warnings=typer.warnings,
    )
    return frame, report


def _normalised_parquet(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Parquet's many widths as the few types CSV typing gives, so both agree."""
    if dtype.is_integer():
        return column.cast(pl.Int64)
    if dtype.is_float() or dtype.is_decimal():
        return column.cast(pl.Float64)
    return column


# ----------------------------------------------------------------------- typing text


@dataclass
class _Plan:
    kind: str  # string | int | int_float | float | bool | date
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


def _number_text(text: pl.Expr, decimal: str) -> pl.Expr:
    """Text that polars' float/int casts accept: decimal commas and '.' thousands undone."""
    if decimal != ",":
        return text
    grouped = text.str.contains(_COMMA_NUMBER)
    return pl.when(grouped).then(text.str.replace_all(".", "", literal=True).str.replace(",", ".", literal=True)).otherwise(text)


def _parse_date(text: pl.Expr, fmt: str) -> pl.Expr:
    dtype = pl.Datetime("us") if "%H" in fmt else pl.Date
    return text.str.strptime(dtype, fmt, strict=False, exact=True)


def _date_expr(text: pl.Expr, formats: tuple[str, ...], as_datetime: bool) -> pl.Expr:
    parsed = [_parse_date(text, f) for f in formats]
    if as_datetime:
        parsed = [p.cast(pl.Datetime("us")) for p in parsed]
    return parsed[0] if len(parsed) == 1 else pl.coalesce(parsed)


_BOOL_CASES = tuple(w2 for w in BOOL_TRUE + BOOL_FALSE for w2 in (w, w.upper(), w.title()))
_BOOL_DECLARED_CASES = tuple(w2 for w in _BOOL_DECLARED_TRUE + _BOOL_DECLARED_FALSE for w2 in (w, w.upper(), w.title()))


class _Typer:
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
    ) -> None:
        self.batches = batches
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
            return batch.select(exprs)
        except pl.exceptions.PolarsError as exc:
            raise _polars_error(exc, tenant=self.tenant, file=self.file, what="a table", fix=self.read_fix) from None

    # -- profiles from the first rows --------------------------------------------
    def _profile(self, sample: pl.DataFrame) -> None:
        exprs: list[pl.Expr] = []
        for name in self.text_columns:
            raw = self.text_columns[name]
            text = raw.str.strip_chars()
            present = text.str.len_bytes() > 0
            number = _number_text(text, self.decimal).cast(pl.Float64, strict=False)
            parsed = [_parse_date(text, f).is_not_null() for f in DATE_FORMATS]
            exprs += [
                (raw != text).any().alias(f"{name}\0strip"),
                (present & _number_text(text, self.decimal).cast(pl.Int64, strict=False).is_null()).any().alias(f"{name}\0not_int"),
                (present & ~text.is_in(_BOOL_CASES)).any().alias(f"{name}\0not_bool"),
                (number.abs() >= 2.0**63).any().alias(f"{name}\0big"),
                (present & ~pl.any_horizontal(parsed)).any().alias(f"{name}\0not_date"),
                present.any().alias(f"{name}\0any"),
            ]
            exprs += [p.any().alias(f"{name}\0{f}") for p, f in zip(parsed, DATE_FORMATS)]
        row = self._select(sample, exprs).row(0, named=True)
        for name in self.text_columns:
            declared = self.declared.get(name)
            formats: tuple[str, ...] = ()
            if declared is ColumnType.DATETIME or not row[f"{name}\0any"]:
                formats = DATE_FORMATS
            elif declared is None and not row[f"{name}\0not_date"]:
                found = {f for f in DATE_FORMATS if row[f"{name}\0{f}"]}
                if found & {_DAY_FIRST, _MONTH_FIRST}:
                    found |= {_DAY_FIRST, _MONTH_FIRST}
                formats = tuple(f for f in DATE_FORMATS if f in found)
            self.profiles[name] = _Profile(
                strip=bool(row[f"{name}\0strip"]),
                maybe_int=not row[f"{name}\0not_int"] or declared is ColumnType.INTEGER,
                maybe_bool=not row[f"{name}\0not_bool"] or declared is ColumnType.BOOLEAN,
                maybe_big=bool(row[f"{name}\0big"]),
                date_formats=formats,
            )

    # -- sweep one -----------------------------------------------------------------
    def _count_exprs(self, name: str) -> list[pl.Expr]:
        profile = self.profiles[name]
        text = self._text(name)
        number = _number_text(text, self.decimal)
        as_float = number.cast(pl.Float64, strict=False)
        exprs = [
            (text.str.len_bytes() > 0).sum().alias(f"{name}\0nn"),
            as_float.is_finite().sum().alias(f"{name}\0float"),
        ]
        if profile.maybe_int:
            as_int = number.cast(pl.Int64, strict=False)
            exprs += [
                as_int.is_not_null().sum().alias(f"{name}\0int"),
                (as_int.is_not_null() & text.str.starts_with("0") & (text.str.len_bytes() > 1)).sum().alias(f"{name}\0lead0"),
            ]
        if self.declared.get(name) is ColumnType.INTEGER:
            exprs.append((as_float.is_finite() & (as_float.abs() < 2.0**63) & (as_float == as_float.round(0))).sum().alias(f"{name}\0intlike"))
        if profile.maybe_big:
            exprs.append((as_float.abs() >= 2.0**63).sum().alias(f"{name}\0big"))
        # Cells with more than d decimals, so a release can write numbers as precisely as the file does.
        decimals = number.str.extract(r"^[+-]?\d*\.(\d+)$", 1).str.len_chars().fill_null(0)
        exprs.append(number.str.contains("[eE]").sum().alias(f"{name}\0exp"))
        exprs += [(decimals > d).sum().alias(f"{name}\0dec>{d}") for d in _DECIMALS]
        if profile.maybe_bool:
            words = _BOOL_DECLARED_CASES if self.declared.get(name) is ColumnType.BOOLEAN else _BOOL_CASES
            exprs.append(text.is_in(words).sum().alias(f"{name}\0bool"))
            # Each spelling's count, so a release writes the flag as the file mostly does.
            exprs += [(text == word).sum().alias(f"{name}\0spelt\0{word}") for word in dict.fromkeys(words)]
        if profile.date_formats:
            exprs += self._date_count_exprs(name, profile.date_formats)
        return exprs

    def _date_count_exprs(self, name: str, formats: tuple[str, ...]) -> list[pl.Expr]:
        text = self._text(name)
        parsed = {f: _parse_date(text, f).is_not_null() for f in formats}
        exprs = [p.sum().alias(f"{name}\0date\0{f}") for f, p in parsed.items()]
        exprs.append(pl.any_horizontal(list(parsed.values())).sum().alias(f"{name}\0dates"))
        if _DAY_FIRST in parsed and _MONTH_FIRST in parsed:
            exprs.append((parsed[_DAY_FIRST] & ~parsed[_MONTH_FIRST]).sum().alias(f"{name}\0only\0{_DAY_FIRST}"))
            exprs.append((parsed[_MONTH_FIRST] & ~parsed[_DAY_FIRST]).sum().alias(f"{name}\0only\0{_MONTH_FIRST}"))
        return exprs

    def _sweep_counts(self, exprs: list[pl.Expr]) -> Counter:
        totals: Counter = Counter()
        for batch in self.batches():
            if batch.height:
                totals.update({k: int(v or 0) for k, v in self._select(batch, exprs).row(0, named=True).items()})
        return totals

    # -- decisions ---------------------------------------------------------------
    def _decide_dates(self, name: str, stats: Counter, formats: tuple[str, ...]) -> _Plan:
        counts = {f: stats[f"{name}\0date\0{f}"] for f in formats}
        used = [f for f in formats if counts[f] > 0]
        if _DAY_FIRST in used and _MONTH_FIRST in used:
            day, month = counts[_DAY_FIRST], counts[_MONTH_FIRST]
            winner, loser = (_DAY_FIRST, _MONTH_FIRST) if day >= month else (_MONTH_FIRST, _DAY_FIRST)
            if day == month:
                self.warnings.append(
                    f"column {name}: every d/m/Y date is ambiguous (day and month both <= 12); read as day first. "
                    "Write dates as YYYY-MM-DD to remove the doubt."
                )
            used.remove(loser)
            if stats[f"{name}\0only\0{loser}"] > 0:
                self.warnings.append(f"column {name}: mixes day-first and month-first dates; ambiguous ones were read as {winner}.")
                used.insert(used.index(winner) + 1, loser)
        self.date_columns[name] = list(used)
        if used:
            self.spellings[name] = {"date_format": max(used, key=lambda f: counts[f])}
        return _Plan("date", tuple(used), any("%H" in f for f in used))

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
        """Record the most decimals any cell of a number column has (none recorded past the largest counted)."""
        if stats[f"{name}\0exp"]:
            return
        places = next((d for d in _DECIMALS if not stats[f"{name}\0dec>{d}"]), None)
        if places is not None:
            self.spellings[name] = {"decimals": places}

    def _decide(self, name: str, stats: Counter, problems: list[tuple[str, str]]) -> _Plan:
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
            return _Plan("float")
        if formats and n_dates == nn:
            return self._decide_dates(name, stats, formats)
        if n_float >= 0.9 * nn:
            problems.append((name, "numeric"))
            return _Plan("string")
        if formats and n_dates >= 0.9 * nn:
            self.warnings.append(f"column {name}: {nn - n_dates} of {nn} values are not dates in any known format, so the column was kept as text.")
        return _Plan("string")

    def _bad_expr(self, name: str, kind: str, formats: tuple[str, ...]) -> pl.Expr:
        """True for a non-empty cell that does not fit `kind`."""
        text = self._text(name)
        number = _number_text(text, self.decimal)
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
            if self.decimal == "." and any(_COMMA_EVIDENCE.match(str(value).strip()) for _, value in examples):
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
        number = _number_text(text, self.decimal)
        if plan.kind == "int":
            return number.cast(pl.Int64, strict=False).alias(name)
        if plan.kind == "int_float":
            return number.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).alias(name)
        return number.cast(pl.Float64, strict=False).alias(name)

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
        # A column that is mostly dates in the first rows' formats may mix in
        # others further down: count every format for those columns once more.
        retry = [
            n
            for n in typed
            if self.profiles[n].date_formats not in ((), DATE_FORMATS)
            and 0 < stats[f"{n}\0dates"] < stats[f"{n}\0nn"]
            and stats[f"{n}\0float"] < stats[f"{n}\0nn"]
        ]
        if retry:
            for n in retry:
                self.profiles[n].date_formats = DATE_FORMATS
            stats.update(self._sweep_counts([e for n in retry for e in self._date_count_exprs(n, DATE_FORMATS)]))
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


def _formula_counts(frame: pl.DataFrame) -> dict[str, int]:
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


def formula_safe_csv(df: pl.DataFrame) -> bytes:
    """`df` as CSV bytes for people to open, formula-like text cells and column names neutralised.

    Every CSV CreditTwin writes for people (the release, reports) goes through
    here, so a cell such as ``=cmd|' /C calc'!A0`` that a tape carried into a
    synthetic category shows as text in a spreadsheet instead of running. The
    header is written separately so that neutralised names cannot collide with
    other columns.
    """
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([_neutralised(name) for name in df.columns])
    return header.getvalue().encode("utf-8") + neutralise_formulas(df).write_csv(include_header=False).encode("utf-8")


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


# --------------------------------------------------------------------------- split

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _stable_unit_hash(ids: pl.Series, salt: str) -> np.ndarray:
    """A number in [0, 1) per id, identical in every process, machine and library version.

    FNV-1a (64-bit) over the UTF-8 bytes of `salt`, a NUL and the id, then
    MurmurHash3's 64-bit finaliser to spread FNV's weak low bits. Both are fixed
    published algorithms computed here with NumPy on the Arrow string buffers,
    so unlike polars' `hash` (which may change between versions) a loan never
    moves between train and holdout after an upgrade.
    """
    array = ids.cast(pl.String).to_arrow()
    if hasattr(array, "combine_chunks"):
        array = array.combine_chunks()
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, dtype=np.uint8)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    seed = _FNV_OFFSET
    with np.errstate(over="ignore"):
        for byte in salt.encode("utf-8") + b"\x00":
            seed = (seed ^ np.uint64(byte)) * _FNV_PRIME
        hashes = np.full(len(array), seed, dtype=np.uint64)
        # Visit ids longest first so step j touches only the ids longer than j:
        # total work is the total number of bytes, whatever the longest id.
        order = np.argsort(-lengths, kind="stable")
        sorted_starts, sorted_lengths = starts[order], lengths[order]
        sorted_hashes = hashes[order]
        longest = int(sorted_lengths[0]) if len(sorted_lengths) else 0
        active = len(order)
        for j in range(longest):
            while active and sorted_lengths[active - 1] <= j:
                active -= 1
            byte_values = data[sorted_starts[:active] + j].astype(np.uint64)
            sorted_hashes[:active] = (sorted_hashes[:active] ^ byte_values) * _FNV_PRIME
        hashes[order] = sorted_hashes
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xFF51AFD7ED558CCD)
        hashes ^= hashes >> np.uint64(33)
        hashes *= np.uint64(0xC4CEB9FE1A85EC53)
        hashes ^= hashes >> np.uint64(33)
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_train_holdout(df: pl.DataFrame, id_column: str, holdout_share: float = 0.2, salt: str = "credittwin") -> pl.Series:
    """"train" or "holdout" per row, decided by a stable hash of the row's id.

    The same id always lands on the same side (across runs, processes, machines
    and polars versions), so re-uploading a tape with extra loans keeps the old
    loans where they were. Ids are compared as text, so 123 and "123" agree.

    Args:
        df: the loans table.
        id_column: the column keying the split (the loan id, or a privacy unit's id as
            `split_by_unit` passes it); it must have no nulls.
        holdout_share: the expected share of holdout rows, 0 < share < 1.
        salt: changes the split as a whole (e.g. for a fresh holdout).

    Returns:
        A String Series named "split", aligned with `df`.
    """
    if not isinstance(holdout_share, (int, float)) or not math.isfinite(holdout_share) or not 0.0 < holdout_share < 1.0:
        raise InvalidDataError(
            f"holdout share must be strictly between 0 and 1, got {holdout_share!r}.",
            column=id_column,
            fix="set holdout_share in tenant.yaml to a number such as 0.2.",
        )
    if id_column not in df.columns:
        raise InvalidDataError("is not a column of the loans table.", column=id_column, fix="name the loan id column under id_columns in tenant.yaml.")
    ids = df.get_column(id_column)
    if ids.null_count():
        raise InvalidDataError(
            f"{ids.null_count()} rows have no loan id, so they cannot be split deterministically.",
            column=id_column,
            fix="give every loan an id, or drop rows without one before upload.",
        )
    holdout = _stable_unit_hash(ids, salt) < holdout_share
    return pl.Series("split", holdout, dtype=pl.Boolean).replace_strict({True: "holdout", False: "train"}, return_dtype=pl.String)


def split_by_unit(
    df: pl.DataFrame,
    unit_column: str | None,
    id_column: str | None,
    holdout_share: float = 0.2,
    salt: str = "credittwin",
) -> pl.Series:
    """"train" or "holdout" per row, with every loan of one privacy unit (a borrower) on the same side.

    The side is `split_train_holdout`'s stable hash of the unit's id: the value
    of `unit_column`, so a borrower's loans never sit on both sides of the
    membership audit. A loan whose unit is null is a unit of its own (as
    `models.twin.dp.bound_units` counts it), keyed by its loan id or, without one,
    its row number, behind a prefix no unit id starts with. Without a
    `unit_column` each loan is its own unit: the split by loan id (or by row
    number when there is no loan id), exactly as before units existed.

    Args:
        df: the loans table.
        unit_column: the column naming the privacy unit, or None.
        id_column: the loan id column, or None.
        holdout_share: the expected share of holdout units, 0 < share < 1.
        salt: changes the split as a whole.

    Returns:
        A String Series named "split", aligned with `df`.
    """
    row = pl.int_range(0, pl.len()).cast(pl.String)
    if unit_column is None:
        if id_column is not None:
            return split_train_holdout(df, id_column, holdout_share=holdout_share, salt=salt)
        keys = df.select(row.alias("_unit"))
    else:
        if unit_column not in df.columns:
            raise InvalidDataError("is not a column of the loans table.", column=unit_column,
                                   fix="name the borrower column under privacy.unit_column in tenant.yaml.")
        # The NUL prefix keeps a loan standing alone from sharing a key with a real unit id.
        own = pl.lit("\0row\0") + row
        if id_column is not None:
            loan = pl.lit("\0loan\0") + pl.col(id_column).cast(pl.String)
            own = pl.when(pl.col(id_column).is_not_null()).then(loan).otherwise(own)
        keys = df.select(pl.coalesce(pl.col(unit_column).cast(pl.String), own).alias("_unit"))
    return split_train_holdout(keys, "_unit", holdout_share=holdout_share, salt=salt)


# --------------------------------------------------------------------- performance

PERFORMANCE_COLUMNS: tuple[str, ...] = ("loan_id", "period", "status", "days_past_due", "balance", "payment")
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
        "upb", "unpaid_principal_balance", "ending_balance",
    ),
    "payment": ("payment", "payment_amount", "amount_paid", "paid_amount", "total_payment", "installment_paid", "actual_payment"),
}
_REPORTING_MONTH_ALIASES = ("reporting_month", "report_month", "reporting_date", "report_date", "as_of_date", "asof_date", "snapshot_date", "date")


def _resolve_performance_columns(
    perf: pl.DataFrame, *, mapping: dict, loan_id_column: str, tenant: str | None, file: str | None
) -> dict[str, str]:
    """Canonical name -> the performance file's column, from `mapping` then aliases."""
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
        raise InvalidDataError(
            f"required performance column(s) not found: {', '.join(missing)}.",
            tenant=tenant,
            file=file,
            column=missing[0].split(" ")[0],
            fix="rename the columns to loan_id, period, status (or days_past_due), or map them under `performance:` in tenant.yaml.",
        )
    return resolved



# Month spellings of a text period column, tried in order; each must read every value with a plausible year.
_MONTH_TEXT_FORMATS = ("%Y-%m", "%Y/%m", "%m/%Y", "%m-%Y", "%m.%Y", "%Y.%m", "%b-%Y", "%b %Y", "%B %Y", "%b-%y", "%b %y", "%Y%m")
# Whole-date spellings: the reader's numeric day formats, plus the compact 20190331 of servicing extracts.
_DATE_TEXT_FORMATS = tuple(f for f in DATE_FORMATS if "%d" in f and "%H" not in f and "%b" not in f) + ("%Y%m%d",)


def _text_months(values: pl.Series) -> tuple[pl.Series, str] | None:
    """Text periods ("03/2019", "Mar-2019", "201903", "31/03/2019") as Dates, with the one format that reads them all."""
    text = values.cast(pl.String).str.strip_chars()
    for formats, prefix in ((_MONTH_TEXT_FORMATS, "01 "), (_DATE_TEXT_FORMATS, "")):
        for fmt in formats:
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
    month (a date, "2019-03", "Mar-2019", 201903) counts months on book from
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
        dates = _yyyymm(values.cast(pl.Int64))
        if dates is not None:
            described["format"] = "%Y%m"
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
        f"a date), but it holds {dtype} values such as {examples}.",
        tenant=tenant,
        file=file,
        column=source,
        fix="write the period as a whole month on book (1, 2, ...) or as a month such as 2019-03, or map "
        "performance.period in tenant.yaml to the column that holds it.",
    )


def _status_expr(work: pl.DataFrame, cols: dict[str, str], *, tenant: str | None, file: str | None) -> tuple[pl.Expr, dict[str, str]]:
    """(the canonical status, the file's most frequent spelling of each canonical state it names).

    Labels are read by `models.sequences.states.canonical_states`; rows without a label
    (or a file without a status column) take the bucket of their days past due.
    """
    derived = None
    if "days_past_due" in cols:
        dpd = pl.col("days_past_due")
        derived = (
            pl.when(dpd < 30).then(pl.lit("current")).when(dpd < 60).then(pl.lit("dpd30")).when(dpd < 90).then(pl.lit("dpd60")).otherwise(pl.lit("dpd90"))
        )
    if "status" not in cols:
        return derived, {}
    series = work.get_column("status")
    if series.dtype.is_float():
        # 30.0 from a numeric status column means the label "30".
        series = series.cast(pl.Int64, strict=False)
    raw = series.cast(pl.String)
    # Read the few distinct labels, not every row (tens of millions on a large book).
    counts = raw.drop_nulls().value_counts(sort=True)
    labels = counts.get_column(raw.name).to_list()
    canonical = canonical_states(labels)
    unknown = [label for label in labels if canonical[label] is None]
    if unknown:
        raise InvalidDataError(
            f"unknown status label(s): {', '.join(map(repr, unknown[:10]))}.",
            tenant=tenant,
            file=file,
            column=cols["status"],
            fix=f"spell them as one of {', '.join(STATES)}, as days past due (30, 30-59, 90+ DPD), months behind "
            "(0, 1, 2, 3) or a common name (Current, Charged Off, Paid in Full), or correct them before upload.",
        )
    spelling: dict[str, str] = {}
    for label in labels:  # most frequent first
        spelling.setdefault(canonical[label], label)
    mapped = raw.replace_strict(canonical, default=None, return_dtype=pl.String)
    if derived is None or mapped.null_count() == 0:
        # Days past due only stand in for missing labels: skip building them for 20M rows when none is missing.
        return pl.lit(mapped), spelling
    return pl.coalesce(pl.lit(mapped), derived), spelling


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
            ``format`` and ``day``). `models.sequences.histories.render_history` writes
            a synthetic history back in this vocabulary.
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
    date period keeps its most frequent format.

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
    cols = _resolve_performance_columns(perf, mapping=dict(mapping or {}), loan_id_column=loan_id_column, tenant=tenant, file=file)
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
    if month is None:
        used = set(cols.values())
        extra = next((c for c in perf.columns if c not in used and normalise_column_name(c) in _REPORTING_MONTH_ALIASES and perf.schema[c] == pl.Date), None)
        if extra is not None:
            month = pl.lit(perf.get_column(extra)).alias("reporting_month")
    status, spelling = _status_expr(work, cols, tenant=tenant, file=file)
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
    in_order = ((loan > loan.shift(1)) | ((loan == loan.shift(1)) & (month > month.shift(1)))).slice(1).all()
    if not out.select(in_order).item():
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
    vocabulary = {"file": file, "columns": dict(cols), "dtypes": dtypes, "status": spelling, "period": period_form}
    return PerformanceHistory(frame=out, vocabulary=vocabulary)
