"""Column types and the table schema that every model reads.

`raw_loan_tape` infers a `TableSchema` from the uploaded loans table (with the
tenant's `column_types` overrides applied) and saves it as JSON beside the data;
the copula, the cascade, the privacy and the validation code all read the same
schema, so a column is treated the same way everywhere.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from models.tape.names import names_a_person, word_key

if TYPE_CHECKING:  # polars is imported where used to keep imports light
    import polars as pl


SPLIT_COLUMN = "_split"
"""The column of a stored tape that marks each loan "train" or "holdout" (`models.tape.split.split_by_unit`)."""
TENANT_FILE = "tenant.yaml"
"""The tenant contract's file name in a landing folder."""


class ColumnType(str, Enum):
    """What a column holds, which decides how every model treats it."""

    NUMERIC = "numeric"  # continuous real values
    INTEGER = "integer"  # counts, terms, scores: discrete but ordered
    CATEGORICAL = "categorical"  # unordered labels
    BOOLEAN = "boolean"  # two values (flags, the default target)
    DATETIME = "datetime"  # dates and timestamps
    IDENTIFIER = "identifier"  # keys: regenerated, never copied or modelled
    TEXT = "text"  # free text: left out of models, listed as left out


_ID_NAME = re.compile(r"(^id$|_id$|^id_|_key$|uuid|guid|_number$|^account|^loan_?no)", re.IGNORECASE)
# Row numbers that exports add: R's `rownames`, pandas' `Unnamed: 0` and `index`.
_ROW_NUMBER_NAME = re.compile(r"^(rownames|row_?names|unnamed:?\s*\d*|index|row|rowid)$", re.IGNORECASE)
def _named_like_a_key(name: str) -> bool:
    """loan_id, but also 'Customer ID', 'LoanID' and 'Account Number' as spreadsheets and core systems write them."""
    return bool(_ID_NAME.search(name) or _ID_NAME.search(word_key(name)))


# Names that mark a key by themselves, with no look at the values (the DP plan may only read the header).
_KEY_NAME = re.compile(r"(^id$|[_ .]id$|^id[_ .]|uuid|guid|[a-z]I[Dd]$)")


def identifier_by_name(name: str) -> bool:
    """Whether a column's name alone marks it as a key or an export's row number (rownames, id, loan_id, customerID).

    Public: it reads only the header, so the DP plan can regenerate such columns
    without spending budget on them. Narrower than schema inference, which also
    checks that the values are unique: a name like account_balance is not a key.
    """
    return bool(_ROW_NUMBER_NAME.search(name) or _KEY_NAME.search(name) or _KEY_NAME.search(name.lower()))


# Written spellings ingest records per column (see `ColumnSpec`).
SPELLING_KEYS = ("true_as", "false_as", "date_format", "decimals", "fixed_decimals", "prefix", "suffix", "grouping")
_BOOL_STRINGS = {"true", "false", "yes", "no", "y", "n", "t", "f"}
_TEXT_SAMPLE = 50_000


@dataclass
class ColumnSpec:
    """One column of a table: its type, role and summary figures."""

    name: str
    type: ColumnType
    nullable: bool = False
    null_rate: float = 0.0
    n_unique: int = 0
    declared: bool = False  # True when tenant.yaml fixed the type
    roles: list[str] = field(default_factory=list)  # target, id, quasi_identifier, sensitive
    # How the tape writes the column, so a release can be spelled back (`models.tape.vocabulary.render_column`):
    dtype: str | None = None  # the type ingest read it as: Boolean, Int64, Float64, String, Date, Datetime
    true_as: str | None = None  # a Boolean's most frequent spelling of true in the file ("Yes", "Y", "TRUE")
    false_as: str | None = None  # ... and of false
    date_format: str | None = None  # a date column's most frequent strptime format ("%b-%Y")
    decimals: int | None = None  # the most decimal places a number of the column has in the file
    # True when the file writes every number of the column with exactly `decimals` places ("0.00", "12.50", "3.00")
    fixed_decimals: bool | None = None
    prefix: str | None = None  # a number's currency sign as the file writes it ("$1,200.50": "$")
    suffix: str | None = None  # ... its percent sign ("12.5%": "%")
    # ... how it groups thousands: True for "1,234.5", or two characters, the group separator and the decimal mark
    # (" ," for "1 234,5", ".," for "1.234,5"; see `models.tape.vocabulary._grouping_marks`)
    grouping: bool | str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = self.type.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ColumnSpec":
        data = dict(data)
        data["type"] = ColumnType(data["type"])
        # Schemas saved before a field existed load with its default.
        return cls(**data)


@dataclass
class TableSchema:
    """The typed columns of a table plus the roles the tenant declared.

    Attributes:
        columns: every column in table order.
        id_column: the loan id column (used for the train/holdout split and to
            join the performance history), or None when the tape has none.
        target: the default flag column, or None when the tenant declared none.
        target_positive: the raw values of `target` that mean "defaulted".
    """

    columns: list[ColumnSpec]
    id_column: str | None = None
    target: str | None = None
    target_positive: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.columns}

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> ColumnSpec:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def of_type(self, *types: ColumnType) -> list[str]:
        """Names of the columns whose type is one of `types`, in table order."""
        return [c.name for c in self.columns if c.type in types]

    def with_role(self, role: str) -> list[str]:
        return [c.name for c in self.columns if role in c.roles]

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "id_column": self.id_column,
            "target": self.target,
            "target_positive": list(self.target_positive),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableSchema":
        return cls(
            columns=[ColumnSpec.from_dict(c) for c in data["columns"]],
            id_column=data.get("id_column"),
            target=data.get("target"),
            target_positive=list(data.get("target_positive") or []),
        )


def _infer_one(series: "pl.Series", n_rows: int) -> ColumnType:
    import polars as pl

    dtype = series.dtype
    non_null = series.drop_nulls()
    n_unique = non_null.n_unique() if len(non_null) else 0
    looks_like_id = _named_like_a_key(series.name)
    if dtype == pl.Boolean:
        return ColumnType.BOOLEAN
    if dtype.is_temporal():
        return ColumnType.DATETIME
    if dtype.is_integer():
        if (looks_like_id or _ROW_NUMBER_NAME.search(series.name)) and n_unique == len(non_null) and n_unique > 1:
            return ColumnType.IDENTIFIER
        if _is_row_number(series):
            return ColumnType.IDENTIFIER
        if n_unique <= 2 and set(non_null.unique().to_list()) <= {0, 1}:
            return ColumnType.BOOLEAN
        return ColumnType.INTEGER
    if dtype.is_float():
        if n_unique <= 2 and set(non_null.unique().to_list()) <= {0.0, 1.0}:
            return ColumnType.BOOLEAN
        return ColumnType.NUMERIC
    if dtype in (pl.String, pl.Categorical, pl.Enum):
        values = non_null.cast(pl.String)
        if n_unique and n_unique <= 2 and {v.lower() for v in values.unique().to_list()} <= _BOOL_STRINGS:
            return ColumnType.BOOLEAN
        if looks_like_id and n_unique == len(values) and n_unique > 1:
            return ColumnType.IDENTIFIER
        if names_a_person(series.name) and (n_unique >= 20 or n_unique > len(values) / 2):
            return ColumnType.IDENTIFIER
        if len(values):
            # Word counts and lengths are averages: a seeded sample decides as well as a million rows.
            sample = values.sample(_TEXT_SAMPLE, seed=0) if len(values) > _TEXT_SAMPLE else values
            words = sample.str.count_matches(r"\s+").mean() or 0.0
            lengths = sample.str.len_chars().mean() or 0.0
            distinct_share = n_unique / max(len(values), 1)
            if (words >= 3 or lengths > 40) and distinct_share > 0.5:
                return ColumnType.TEXT
        return ColumnType.CATEGORICAL
    return ColumnType.TEXT


def _is_row_number(series: "pl.Series") -> bool:
    """True for 1..n or 0..n-1 in order: a row number an export added, whatever its name."""
    import polars as pl

    n = series.len()
    if n < 2 or series.null_count() or series[0] not in (0, 1):
        return False
    start = int(series[0])
    return bool((series == pl.int_range(start, start + n, eager=True, dtype=series.dtype)).all())


def _dtype_name(dtype: "pl.DataType") -> str:
    """The dtype's base name (Int64, Boolean, Date, Datetime, ...), without time unit or zone."""
    return dtype.base_type().__name__


def infer_schema(
    table: "pl.DataFrame",
    *,
    column_types: dict[str, str] | None = None,
    id_columns: list[str] | None = None,
    target: str | None = None,
    target_positive: list[Any] | None = None,
    quasi_identifiers: list[str] | None = None,
    sensitive_columns: list[str] | None = None,
    spellings: dict[str, dict[str, str]] | None = None,
) -> TableSchema:
    """Infer a `TableSchema` for `table`, with declared types and roles applied.

    Declared `column_types` win over inference; `id_columns` are identifiers.
    The first identifier column (declared first, else inferred) is the loan id.
    `spellings` (`IngestReport.spellings`) says how the file wrote each column
    (true_as / false_as / date_format); each column's dtype is recorded too.
    """
    column_types = dict(column_types or {})
    id_columns = list(id_columns or [])
    n_rows = table.height
    specs: list[ColumnSpec] = []
    for name in table.columns:
        series = table.get_column(name)
        if name in column_types:
            ctype, declared = ColumnType(column_types[name]), True
        elif name in id_columns:
            ctype, declared = ColumnType.IDENTIFIER, True
        else:
            ctype, declared = _infer_one(series, n_rows), False
        nulls = series.null_count()
        roles = []
        if name == target:
            roles.append("target")
            if ctype not in (ColumnType.BOOLEAN, ColumnType.CATEGORICAL):
                ctype = ColumnType.BOOLEAN
        if name in id_columns or ctype is ColumnType.IDENTIFIER:
            roles.append("id")
        if name in (quasi_identifiers or []):
            roles.append("quasi_identifier")
        if name in (sensitive_columns or []):
            roles.append("sensitive")
        specs.append(
            ColumnSpec(
                name=name,
                type=ctype,
                nullable=nulls > 0,
                null_rate=round(nulls / n_rows, 6) if n_rows else 0.0,
                n_unique=int(series.n_unique()),
                declared=declared,
                roles=roles,
                dtype=_dtype_name(series.dtype),
                **{k: v for k, v in (spellings or {}).get(name, {}).items() if k in SPELLING_KEYS},
            )
        )
    inferred = [s.name for s in specs if s.type is ColumnType.IDENTIFIER]
    # A key named like one (loan_id) is the loan id before a row number an export added in front of it.
    # A person's name or contact detail is a key to regenerate, never the loan id while another key exists.
    inferred.sort(key=lambda n: (names_a_person(n), not _named_like_a_key(n) or bool(_ROW_NUMBER_NAME.search(n))))
    ids = [n for n in id_columns if n in table.columns] or inferred
    return TableSchema(
        columns=specs,
        id_column=ids[0] if ids else None,
        target=target,
        target_positive=list(target_positive or []),
    )


def normalise_column_name(name: str) -> str:
    """A column name as matched against aliases: lower case, spaces and dashes read as underscores."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def resolve_aliases(
    columns: list[str], aliases: dict[str, tuple[str, ...]], *, resolved: dict[str, str] | None = None
) -> dict[str, str]:
    """Map each canonical name of `aliases` to the column of `columns` that holds it.

    Canonical names are tried in the order of `aliases`, each with its aliases
    in order; the first alias a column answers to wins, and a column serves one
    canonical name at most. Names already in `resolved` (declared mappings)
    keep their column. Matching uses `normalise_column_name`; when two columns
    normalise alike, the first in sorted order is used, so the result never
    depends on column positions.
    """
    out = dict(resolved or {})
    by_normalised: dict[str, str] = {}
    for name in sorted(columns):
        by_normalised.setdefault(normalise_column_name(name), name)
    claimed = set(out.values())
    for canonical, names in aliases.items():
        if canonical in out:
            continue
        for alias in names:
            actual = by_normalised.get(alias)
            if actual is not None and actual not in claimed:
                out[canonical] = actual
                claimed.add(actual)
                break
    return out
