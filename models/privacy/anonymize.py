"""k-anonymity and distinct l-diversity of a released portfolio, by Mondrian generalisation.

`anonymize` rewrites the quasi-identifier (QI) columns of a table so that every
combination of released QI values is shared by at least `k` rows, and every such
equivalence class holds at least `l` distinct non-null values of each sensitive
column: by default the schema's target (the default flag) and every column the
schema marks sensitive (tenant.yaml's `sensitive_columns`).
`verify_k_anonymity` re-checks a released table with a plain polars group-by and
shares no code with `anonymize`; the asset check that blocks a release calls it.
`l_diversity_scope` is the one place that decides which columns l protects and
whether l-diversity applies at all; the anonymizer, its asset check, the audit
and the certificate all ask it.

How the generalisation works (multidimensional Mondrian, LeFevre et al. 2006):

* Every QI is encoded once as integer codes: numeric and integer columns by the
  dense rank of their values, categorical and boolean columns by a fixed order of
  their categories (by the rate of the rarer sensitive value when the sensitive
  column (the first one: the target when there is one) is binary, so that
  neighbouring categories carry similar risk, else by
  frequency; ties by label). Cutting that order gives category groups.
* Partitions are split top-down on the dimension of largest normalised width
  (value span / global span for numbers, code span / domain size for categories;
  ties broken by a seeded order of the QIs). A partition is cut near its median;
  a cut is kept only when both halves hold at least `k` rows and `l` distinct
  values of every sensitive column, otherwise the next-widest dimension is tried, and when none
  works the partition is final. A child that would fail the policy is therefore
  never created: its rows stay merged in the parent.
  All partitions of one depth are split together with vectorised NumPy (one sort
  per attempt over every row still being split), an explicit frontier instead of
  recursion, so 100k rows take a fraction of a second.
* Numeric cuts are moved, within the middle quarter of the partition, to the
  roundest number available (45000 rather than 44817.23), and a cut never equals
  the column's real minimum or maximum. Ranges are released as strings:
  ``"< 30"``, ``"[30, 45)"``, ``">= 45"``, ``"*"`` (any value). The outermost
  ranges are open-ended, so the real extremes of the data are never published.
* Categorical QIs are released as the sorted, ``|``-joined group of categories
  present in the class (``"north|south"``); the whole domain is ``"*"``, and a
  group of more than 12 categories is named ``"<n> values #<hash>"`` with its
  members listed in `AnonymizationResult.generalisations`.

Missing values. In a categorical QI a null is the category ``"(missing)"`` and is
grouped like any other. In a numeric QI a null is its own group: the rows are
first stratified by which numeric QIs are null, each stratum is generalised on
its own, and the null QIs are released as ``"(missing)"``. A stratum too small
(fewer than `k` rows) or not `l`-diverse is merged upward: all such strata are
pooled and every numeric QI whose null-ness differs inside the pool is released
as ``"*|(missing)"``. Only a pool that still fails is suppressed (its rows are
dropped), and suppression above `max_suppression` raises an error.

Information loss is the normalised certainty penalty (NCP, also called GCP),
in [0, 1]: per row and QI, a numeric range costs its width (open ends clipped to
the real minimum and maximum) over the column's span, a category group costs
(size - 1) / (domain size - 1), an exact value or ``"(missing)"`` costs 0, ``"*"``
costs 1; a suppressed row costs 1 on every QI. The figure is the mean over all
input rows and QIs.

Everything is a pure function of its arguments: no module-level state, so two
tenants can be anonymised at once in threads; the seed only breaks ties between
QIs of equal width, so the same input, policy and seed give the same output.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from models.errors import CreditTwinError, InvalidDataError, TenantConfigError, ValidationErrors
from models.tape.names import name_words
from models.tape.schema import ColumnType, TableSchema

MISSING_LABEL = "(missing)"
ANY_LABEL = "*"
ANY_OR_MISSING_LABEL = "*|(missing)"
MAX_LISTED_CATEGORIES = 12  # larger groups get a short hashed name; members go to `generalisations`

# Canonical names that usually make a borrower re-identifiable, in priority order.
CANONICAL_QUASI_IDENTIFIERS: tuple[str, ...] = (
    "age", "gender", "sex", "marital_status", "region", "state", "zip", "zip_code", "zipcode",
    "postcode", "postal_code", "city", "country", "annual_income", "income", "annual_inc",
    "employment_years", "emp_length", "employment_length", "home_ownership", "occupation",
    "education",
)

# Beyond those exact names, the words that mark a column describing the borrower: (any of these words, and one of
# these too when given, and none of these), in priority order. Words of the loan or the account are not the
# borrower's: a loan's age, a debt-to-income ratio, an income's verification.
_LOAN_WORDS = frozenset({"loan", "account", "acct", "credit", "oldest", "newest", "file", "mob", "vehicle", "car",
                         "property", "collateral", "note", "mortgage", "facility", "contract", "card"})
# Words of a code or a business party, not of a person ("partner_code", a dealer's partner).
_CODE_WORDS = frozenset({"code", "id", "name", "channel", "dealer", "broker", "agent", "program", "type"})
# Words of a spending, a change or a share: "2020_housing_exp", "edu_cost", "pan_inc_chg_pct" are amounts a
# borrower spent or how one moved, not who the borrower is (their housing, education or income is).
_FLOW_WORDS = frozenset({"exp", "expense", "expenses", "expenditure", "expenditures", "cost", "costs", "spend",
                         "spending", "spent", "chg", "change", "changes", "pct", "percent", "share", "fee", "fees"})
_QI_WORD_RULES: tuple[tuple[frozenset[str], frozenset[str], frozenset[str]], ...] = (
    # "retire_age" is an age a borrower plans to stop working at, not theirs
    (frozenset({"age", "birth", "dob"}), frozenset(), _LOAN_WORDS | {"date", "retire", "retirement", "retiring"}),
    (frozenset({"senior"}), frozenset({"citizen", "citizens", "age"}), _LOAN_WORDS),
    (frozenset({"gender", "sex", "female", "male"}), frozenset(), frozenset()),
    (frozenset({"marital", "married", "marriage", "spouse", "partner"}), frozenset(), _CODE_WORDS),
    (frozenset({"race", "ethnicity", "ethnic", "nationality", "citizenship", "religion", "white", "black", "hispanic",
                "hispan", "latino", "asian", "afam", "nonwhite", "minority"}), frozenset(), _LOAN_WORDS),
    (frozenset({"zip", "zipcode", "postcode", "postal", "state", "region", "city", "county", "country", "province",
                "district", "msa", "cbsa"}), frozenset(),
     # a mortgaged property's state or ZIP is where its owner lives: only an account's or a loan's own state is not
     frozenset({"loan", "account", "acct", "status", "lien", "note", "facility", "contract", "card"})),
    (frozenset({"income", "inc", "salary", "earnings", "wage", "wages"}), frozenset(),
     frozenset({"to", "ratio", "dti", "verified", "verification", "verif", "source", "type", "status"})),
    (frozenset({"emp", "employment", "employed", "job", "work"}),
     frozenset({"length", "years", "yrs", "duration", "since", "tenure", "time"}), frozenset()),
    (frozenset({"home", "housing", "homeownership", "residence", "residential"}), frozenset(),
     frozenset({"value", "price", "equity", "loan", "improvement", "phone", "address"})),
    (frozenset({"education", "educ", "edu", "degree", "schooling", "occupation", "profession", "job"}), frozenset(),
     frozenset({"loan"})),
    (frozenset({"dependents", "dependants", "children", "kids", "household"}), frozenset(), frozenset()),
)

_NUMERIC_TYPES = (ColumnType.NUMERIC, ColumnType.INTEGER)
_GROUP_TYPES = (ColumnType.CATEGORICAL, ColumnType.BOOLEAN)
_CUT_WINDOW = 8  # a numeric cut may move by size/8 rows from the median to land on a round number
_NICE_MULTIPLIERS = (10, 5, 2)  # round steps 10^e, 5*10^(e-1), 2*10^(e-1)
_NICE_DEPTH = 18  # decades searched below the leading one before giving up on roundness


# --------------------------------------------------------------------------- public types


@dataclass
class AnonymizationPolicy:
    """What a released table must satisfy.

    Attributes:
        k: every combination of released QI values is shared by at least k rows (>= 2).
        l: every equivalence class holds at least l distinct non-null values of the
            sensitive column (distinct l-diversity; 1 switches it off).
        quasi_identifiers: the QI columns; empty means `default_quasi_identifiers(schema)`.
        sensitive: the columns whose values must be diverse (a name or a list); None means
            the schema's target and the columns it marks sensitive (see `l_diversity_scope`).
        max_suppression: the largest share of rows that may be dropped, in [0, 1).
        seed: breaks ties between QIs of equal width; nothing else is random.
    """

    k: int = 5
    l: int = 2  # noqa: E741 - the conventional name
    quasi_identifiers: list[str] = field(default_factory=list)
    sensitive: list[str] | str | None = None
    max_suppression: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.quasi_identifiers = list(self.quasi_identifiers)
        if isinstance(self.sensitive, str):
            self.sensitive = [self.sensitive]
        elif self.sensitive is not None:
            self.sensitive = list(self.sensitive)
        self.validate()

    def validate(self, *, tenant: str | None = None) -> None:
        """Raise one `TenantConfigError` listing every setting out of range."""
        problems: list[tuple[str, str]] = []

        def bad(message: str, fix: str) -> None:
            problems.append((message, fix))

        if not _is_int(self.k) or self.k < 2:
            bad(f"privacy.k must be an integer of at least 2, got {self.k!r}.",
                "set privacy.k to 2 or more (default 5).")
        if not _is_int(self.l) or self.l < 1:
            bad(f"privacy.l must be an integer of at least 1, got {self.l!r}.",
                "set privacy.l to 1 or more (default 2).")
        if isinstance(self.max_suppression, bool) or not isinstance(self.max_suppression, (int, float)) or not (
            0.0 <= float(self.max_suppression) < 1.0
        ):
            bad(
                f"max_suppression must be a number in [0, 1), got {self.max_suppression!r}.",
                "give the largest share of rows that may be dropped, e.g. 0.05.",
            )
        if not _is_int(self.seed):
            bad(f"seed must be an integer, got {self.seed!r}.", "pass an integer seed.")
        names = self.quasi_identifiers
        if not all(isinstance(n, str) and n for n in names):
            bad(f"quasi_identifiers must be non-empty column names, got {names!r}.", "list column names as strings.")
        elif len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            bad(f"quasi_identifiers lists {dup} more than once.", "list each quasi-identifier once.")
        sensitive = self.sensitive
        if sensitive is not None and not all(isinstance(n, str) and n for n in sensitive):
            bad(f"sensitive must be column names or None, got {sensitive!r}.", "name the sensitive columns.")
        elif sensitive is not None and len(set(sensitive)) != len(sensitive):
            dup = sorted({n for n in sensitive if sensitive.count(n) > 1})
            bad(f"sensitive lists {dup} more than once.", "list each sensitive column once.")
        if problems:
            raise TenantConfigError(
                " ".join(message for message, _ in problems),
                tenant=tenant,
                file="tenant.yaml",
                fix=" ".join(fix for _, fix in problems),
            )


L_NOT_APPLICABLE = (
    "not applicable: the release has no target and no sensitive column, so l-diversity has nothing to protect "
    "and the release is k-anonymous only; declare sensitive_columns in tenant.yaml to have it enforced"
)


@dataclass(frozen=True)
class LDiversityScope:
    """Which released columns distinct l-diversity protects, and whether it applies.

    Built by `l_diversity_scope`; the anonymizer, the `anonymized_portfolio`
    check, the audit's rule and the certificate all read their decision here.

    Attributes:
        required: the policy's l (tenant.yaml ``privacy.l``).
        columns: the sensitive columns in the release; every class must hold at
            least `required` distinct non-null values of each of them.
        not_released: sensitive columns the release does not carry, so it
            discloses nothing of them and l is not measured on them.
    """

    required: int
    columns: tuple[str, ...] = ()
    not_released: tuple[str, ...] = ()

    @property
    def not_applicable(self) -> str | None:
        """Why l-diversity does not apply (an l above 1 asked, no sensitive column released), else None."""
        return L_NOT_APPLICABLE if self.required > 1 and not self.columns else None

    @property
    def enforced_l(self) -> int:
        """The l every class must reach: the policy's where there is a sensitive column, else 1 (k alone)."""
        return int(self.required) if self.columns else 1


def l_diversity_scope(
    schema: TableSchema | None,
    columns: list[str] | tuple[str, ...],
    l: int,  # noqa: E741 - the conventional name
    *,
    sensitive: list[str] | tuple[str, ...] | None = None,
    declared: list[str] | tuple[str, ...] = (),
) -> LDiversityScope:
    """The sensitive columns of a release with the columns `columns`, and the l they must reach.

    The sensitive columns are `sensitive` when given, else the schema's target,
    then the columns the schema marks ``sensitive`` (tenant.yaml's
    ``sensitive_columns``), then `declared`, in that order without repeats.
    Those the release lacks are listed as not released rather than enforced:
    a column that is not published cannot be disclosed by it.
    """
    if sensitive is not None:
        names = list(sensitive)
    else:
        names = [schema.target] if schema is not None and schema.target else []
        names += schema.with_role("sensitive") if schema is not None else []
        names += list(declared)
    names = list(dict.fromkeys(n for n in names if n))
    present = set(columns)
    return LDiversityScope(
        required=int(l),
        columns=tuple(n for n in names if n in present),
        not_released=tuple(n for n in names if n not in present),
    )


@dataclass
class AnonymizationResult:
    """A released table and the figures a reviewer needs to accept it.

    Attributes:
        table: the input rows minus the suppressed ones, in input order, with every
            QI column replaced by its generalised label (String).
        k_achieved: the size of the smallest equivalence class.
        l_achieved: the fewest distinct values of a sensitive column in a class, over every
            sensitive column; None without a sensitive column, when l-diversity is not
            measured (see `l_not_measured`).
        rows_suppressed: rows dropped because no generalisation could protect them.
        suppression_rate: rows_suppressed / input rows.
        information_loss: normalised certainty penalty in [0, 1] (see the module docstring).
        class_sizes: histogram of equivalence-class sizes, {"5-9": classes, "10-19": ...}.
        generalisations: per QI, the ranges (with their cut points) or groups released.
        quasi_identifiers: the QIs used.
        sensitive: the sensitive columns l was enforced on (empty when none).
        k: the policy's k.
        l: the policy's l.
        rows_in: input rows.
        class_count: number of equivalence classes.
        loss_by_column: information loss of each QI alone.
        suppressed_groups: the null patterns whose rows were suppressed, with counts.
        l_by_column: per sensitive column, the fewest distinct values it has in a class.
        sensitive_not_released: sensitive columns the table does not carry (not measured).
    """

    table: pl.DataFrame
    k_achieved: int
    l_achieved: int | None
    rows_suppressed: int
    suppression_rate: float
    information_loss: float
    class_sizes: dict[str, int]
    generalisations: dict[str, dict[str, Any]]
    quasi_identifiers: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    k: int = 0
    l: int = 0  # noqa: E741 - the conventional name
    rows_in: int = 0
    class_count: int = 0
    loss_by_column: dict[str, float] = field(default_factory=dict)
    suppressed_groups: list[dict[str, Any]] = field(default_factory=list)
    l_by_column: dict[str, int] = field(default_factory=dict)
    sensitive_not_released: list[str] = field(default_factory=list)

    @property
    def l_scope(self) -> LDiversityScope:
        """The l-diversity decision this result was generalised under."""
        return LDiversityScope(self.l, tuple(self.sensitive), tuple(self.sensitive_not_released))

    @property
    def l_not_measured(self) -> str | None:
        """Why l-diversity was not measured (no sensitive column), or None when it was."""
        return self.l_scope.not_applicable

    def to_dict(self) -> dict[str, Any]:
        """Every figure except the table, JSON-ready (for asset metadata and reports)."""
        return {
            "k": self.k,
            "l": self.l,
            "k_achieved": self.k_achieved,
            "l_achieved": self.l_achieved,
            "l_not_measured": self.l_not_measured,
            "l_by_column": dict(self.l_by_column),
            "quasi_identifiers": list(self.quasi_identifiers),
            "sensitive": list(self.sensitive),
            "sensitive_not_released": list(self.sensitive_not_released),
            "rows_in": self.rows_in,
            "rows_out": self.table.height,
            "rows_suppressed": self.rows_suppressed,
            "suppression_rate": self.suppression_rate,
            "suppressed_groups": [dict(g) for g in self.suppressed_groups],
            "information_loss": self.information_loss,
            "loss_by_column": dict(self.loss_by_column),
            "class_count": self.class_count,
            "class_sizes": dict(self.class_sizes),
            "generalisations": {name: dict(spec) for name, spec in self.generalisations.items()},
        }


@dataclass
class VerificationResult:
    """The independent re-check of a released table.

    Attributes:
        passed: True when every class has >= k rows and >= l distinct values of each
            sensitive column.
        k_min: the smallest class size (0 for an empty table).
        l_min: the fewest distinct non-null values of a sensitive column in a class,
            over every sensitive column (None without a sensitive column).
        violating_classes: how many classes break k or l.
        examples: up to five violating classes: their QI values, size and distinct count
            (the fewest over the sensitive columns; per column as well when there are several).
        l_by_column: per sensitive column, the fewest distinct non-null values in a class.
    """

    passed: bool
    k_min: int
    l_min: int | None
    violating_classes: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    l_by_column: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON values."""
        return {
            "passed": self.passed,
            "k_min": self.k_min,
            "l_min": self.l_min,
            "l_by_column": dict(self.l_by_column),
            "violating_classes": self.violating_classes,
            "examples": [dict(e) for e in self.examples],
        }


# --------------------------------------------------------------------------- the independent check


def verify_k_anonymity(
    table: pl.DataFrame,
    quasi_identifiers: list[str],
    sensitive: str | list[str] | tuple[str, ...] | None,
    k: int,
    l: int,  # noqa: E741 - the conventional name
) -> VerificationResult:
    """Re-check k-anonymity and distinct l-diversity of `table` by a plain group-by.

    The classes are the groups of identical values of `quasi_identifiers` as
    released (nulls form a group of their own); l counts distinct non-null values
    of each `sensitive` column (one name or several) and is not checked when
    `l` <= 1. An empty table does not pass: nothing that failed upstream is ever
    certified.
    """
    qis = list(quasi_identifiers)
    secrets = [sensitive] if isinstance(sensitive, str) else list(sensitive or [])
    wanted = qis + secrets
    missing = [c for c in wanted if c not in table.columns]
    if missing or not qis:
        raise InvalidDataError(
            f"cannot verify k-anonymity: column(s) {missing or 'quasi_identifiers (none given)'} are not in "
            f"the released table (it has {table.columns}).",
            column=missing[0] if missing else None,
            fix="pass the quasi-identifier and sensitive columns of the released table.",
        )
    if l > 1 and not secrets:
        raise InvalidDataError(
            f"l-diversity l={l} asked without a sensitive column.",
            fix="name the sensitive column, or pass l=1 to check k only.",
        )
    distinct = [f"__distinct_{i}" for i in range(len(secrets))]
    aggs = [pl.len().alias("__size")]
    aggs += [pl.col(name).drop_nulls().n_unique().alias(alias) for name, alias in zip(secrets, distinct)]
    classes = table.group_by(qis).agg(aggs)
    if classes.height == 0:
        return VerificationResult(passed=False, k_min=0, l_min=0 if secrets else None, violating_classes=0,
                                  l_by_column={name: 0 for name in secrets})
    if secrets:
        classes = classes.with_columns(pl.min_horizontal(distinct).alias("__distinct"))
    bad = pl.col("__size") < k
    if secrets and l > 1:
        bad = bad | (pl.col("__distinct") < l)
    violating = classes.filter(bad).sort(["__size"] + qis)
    k_min = int(classes.get_column("__size").min())
    by_column = {name: int(classes.get_column(alias).min()) for name, alias in zip(secrets, distinct)}
    examples = []
    for row in violating.head(5).iter_rows(named=True):
        example = {c: row[c] for c in qis}
        example["size"] = row["__size"]
        if secrets:
            example["distinct_sensitive"] = row["__distinct"]
        if len(secrets) > 1:
            example["distinct_by_column"] = {name: row[alias] for name, alias in zip(secrets, distinct)}
        examples.append(example)
    return VerificationResult(
        passed=violating.height == 0,
        k_min=k_min,
        l_min=min(by_column.values()) if by_column else None,
        violating_classes=violating.height,
        examples=examples,
        l_by_column=by_column,
    )


# --------------------------------------------------------------------------- defaults and validation


def _quasi_identifier_rank(name: str) -> int | None:
    """Where a column's name puts it in `_QI_WORD_RULES` (its priority), or None when it names no quasi-identifier."""
    words = name_words(name)
    key = "_".join(words)
    if key in CANONICAL_QUASI_IDENTIFIERS:
        return CANONICAL_QUASI_IDENTIFIERS.index(key)
    found = set(words)
    if found & _FLOW_WORDS:
        return None
    for rank, (wanted, together, unless) in enumerate(_QI_WORD_RULES, start=len(CANONICAL_QUASI_IDENTIFIERS)):
        if found & wanted and (not together or found & together) and not found & unless:
            return rank
    return None


def default_quasi_identifiers(schema: TableSchema) -> list[str]:
    """The QIs to use when the tenant declared none.

    Columns with the schema role ``quasi_identifier`` win; otherwise the
    columns whose name says they describe the borrower (age, sex, marital
    status, where they live, income, employment, home ownership, education,
    dependents), read word by word as `models.tape.names.name_words` splits
    it ("MaritalStatus", "ZIP Code", "customer_age", "addr_state", "female"),
    in the order of `CANONICAL_QUASI_IDENTIFIERS` and then `_QI_WORD_RULES`,
    skipping the target, identifiers, sensitive columns and types that cannot
    be generalised (text, datetime). A word of the loan's own ("loan_age",
    "debt_to_income", "verified_income") does not count.
    """
    declared = schema.with_role("quasi_identifier")
    if declared:
        return declared
    ranked: list[tuple[int, int, str]] = []
    for position, spec in enumerate(schema.columns):
        excluded = {"target", "id", "sensitive"} & set(spec.roles)
        if excluded or spec.name == schema.target or spec.name == schema.id_column:
            continue
        if spec.type in _NUMERIC_TYPES or spec.type in _GROUP_TYPES:
            rank = _quasi_identifier_rank(spec.name)
            if rank is not None:
                ranked.append((rank, position, spec.name))
    return [name for _, _, name in sorted(ranked)]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _kind(name: str, table: pl.DataFrame, schema: TableSchema) -> str | None:
    """'numeric' or 'group' for a QI that can be generalised, else None."""
    dtype = table.schema[name]
    if name in schema:
        ctype = schema[name].type
        if ctype in _NUMERIC_TYPES and dtype.is_numeric():
            return "numeric"
        if ctype is ColumnType.DATETIME and dtype.is_temporal():
            return "date"
        if ctype in _GROUP_TYPES or (ctype in _NUMERIC_TYPES and not dtype.is_numeric()):
            return "group"
        return None
    if dtype.is_numeric() and dtype != pl.Boolean:
        return "numeric"
    if dtype.is_temporal():
        return "date"
    if dtype in (pl.String, pl.Categorical, pl.Boolean) or isinstance(dtype, pl.Enum):
        return "group"
    return None


def _resolve(
    table: pl.DataFrame, schema: TableSchema, policy: AnonymizationPolicy, tenant: str | None
) -> tuple[list[str], dict[str, str], LDiversityScope]:
    """Check the table against the policy; return the QIs, their kinds and the l-diversity scope."""
    if not isinstance(table, pl.DataFrame):
        raise InvalidDataError(
            f"anonymize needs a polars DataFrame, got {type(table).__name__}.",
            tenant=tenant,
            fix="collect a LazyFrame (or convert pandas with pl.from_pandas) before anonymising.",
        )
    policy.validate(tenant=tenant)
    qis = list(policy.quasi_identifiers) or default_quasi_identifiers(schema)
    if not qis:
        raise InvalidDataError(
            "no quasi-identifiers: none declared and no column's name says it describes the borrower "
            f"({', '.join(CANONICAL_QUASI_IDENTIFIERS[:8])}, marital status, dependents, ...).",
            tenant=tenant,
            fix="list the columns that could identify a borrower under quasi_identifiers in tenant.yaml.",
        )
    scope = l_diversity_scope(schema, table.columns, policy.l, sensitive=policy.sensitive)
    available = ", ".join(table.columns)
    problems: list[CreditTwinError] = []
    kinds: dict[str, str] = {}
    for name in qis:
        if name not in table.columns:
            problems.append(InvalidDataError(
                f"quasi-identifier '{name}' is not a column of the table; available columns: {available}.",
                tenant=tenant, column=name,
                fix="correct the name under quasi_identifiers in tenant.yaml or drop it.",
            ))
            continue
        series = table.get_column(name)
        kind = _kind(name, table, schema)
        if kind is None:
            problems.append(InvalidDataError(
                f"quasi-identifier '{name}' has type {schema[name].type.value if name in schema else series.dtype} "
                "which cannot be generalised into ranges or groups.",
                tenant=tenant, column=name,
                fix="drop it from quasi_identifiers, or derive a numeric or categorical column (e.g. a year) "
                "and declare that instead.",
            ))
            continue
        # A constant or all-null quasi-identifier puts every row in one group: it is trivially k-anonymous
        # and released as it is (see `_numeric_labels`), never a reason to refuse the tape.
        kinds[name] = kind
    # Columns named in the policy must be in the table; the schema's sensitive columns that the release
    # does not carry are recorded as not released (`l_diversity_scope`). Without any sensitive column
    # l-diversity does not apply: `anonymize` records it as not measured.
    if policy.sensitive is not None:
        for name in scope.not_released:
            problems.append(InvalidDataError(
                f"sensitive column '{name}' is not a column of the table; available columns: {available}.",
                tenant=tenant, column=name, fix="name an existing sensitive column (the default flag).",
            ))
    for name in scope.columns:
        if name in qis:
            problems.append(InvalidDataError(
                f"'{name}' is both a sensitive column and a quasi-identifier.",
                tenant=tenant, column=name,
                fix=f"remove '{name}' from quasi_identifiers or from sensitive_columns in tenant.yaml.",
            ))
            continue
        if policy.l > 1:
            distinct = table.get_column(name).drop_nulls().n_unique()
            if distinct < policy.l:
                problems.append(InvalidDataError(
                    f"sensitive column '{name}' has {distinct} distinct non-null value(s), fewer than l={policy.l}, "
                    "so no class can be l-diverse.",
                    tenant=tenant, column=name,
                    fix=f"lower privacy.l to {max(distinct, 1)} or remove '{name}' from sensitive_columns.",
                ))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ValidationErrors(problems, tenant=tenant)
    if table.height < policy.k:
        raise InvalidDataError(
            f"the table has {table.height} row(s), fewer than k={policy.k}, so no class can reach size k "
            f"on quasi-identifiers {qis}.",
            tenant=tenant, column=", ".join(qis),
            fix="release more rows, or lower privacy.k in tenant.yaml (minimum 2).",
        )
    return qis, kinds, scope


# --------------------------------------------------------------------------- encoding


@dataclass
class _Encoded:
    """Every QI as integer codes, numeric values and what the codes mean."""

    codes: np.ndarray  # d x n, one contiguous row per QI: the frontier gathers one QI at a time
    values: np.ndarray  # d x n
    null: np.ndarray  # n x d: numeric QI is null (categorical nulls are a category)
    numeric: np.ndarray  # d bools
    gmin: np.ndarray  # d: real minimum of numeric QIs (NaN for groups)
    gmax: np.ndarray
    levels: list[np.ndarray]  # numeric: the sorted distinct values (code i is levels[i]); empty for groups
    domain: list[list[str]]  # categorical: label of each code, in code order (empty for numeric)
    sensitive: list[np.ndarray]  # per sensitive column, n codes, -1 for null
    dates: np.ndarray  # d bools: a numeric QI that is a date, coded as days since 1970-01-01


def _sensitive_codes(table: pl.DataFrame, sensitive: str | None) -> tuple[np.ndarray, int | None]:
    """Codes of one sensitive column (-1 for null) and, when it is binary, the code of the rarer value."""
    if sensitive is None:
        return np.full(table.height, -1, dtype=np.int64), None
    series = table.get_column(sensitive).cast(pl.String)
    levels = series.drop_nulls().unique().sort()
    codes = series.replace_strict(levels, pl.Series(np.arange(len(levels), dtype=np.int64)), default=-1,
                                  return_dtype=pl.Int64)
    # int16 when it fits: NumPy's stable argsort is then a radix sort (see `_previous_occurrence`).
    out = codes.fill_null(-1).to_numpy().astype(np.int16 if len(levels) < 2**15 - 1 else np.int64)
    rarer = None
    if len(levels) == 2:
        counts = np.bincount(out[out >= 0], minlength=2)
        rarer = int(np.argmin(counts))  # on a tie argmin picks the first in label order
    return out, rarer


def _encode(table: pl.DataFrame, qis: list[str], kinds: dict[str, str], sensitive: list[str]) -> _Encoded:
    """Encode every QI once; categories are ordered by the rarer value's rate of the first sensitive column
    (the target when there is one), else by frequency."""
    n, d = table.height, len(qis)
    coded = [_sensitive_codes(table, name) for name in sensitive]
    secrets = [codes for codes, _ in coded]
    sens, rarer = coded[0] if coded else _sensitive_codes(table, None)
    codes = np.zeros((d, n), dtype=np.int64)
    values = np.full((d, n), np.nan)
    null = np.zeros((n, d), dtype=bool)
    numeric = np.array([kinds[q] in ("numeric", "date") for q in qis])
    dates = np.array([kinds[q] == "date" for q in qis])
    gmin = np.full(d, np.nan)
    gmax = np.full(d, np.nan)
    domain: list[list[str]] = []
    levels: list[np.ndarray] = []
    for j, name in enumerate(qis):
        series = table.get_column(name)
        if numeric[j]:
            # A date is generalised as its day number; its range labels print ISO dates (`_range_label`).
            floats = (series.dt.epoch("d") if dates[j] else series).cast(pl.Float64).fill_nan(None)
            is_null = floats.is_null().to_numpy()
            rank = floats.rank("dense").cast(pl.Int64).fill_null(1).to_numpy() - 1
            codes[j] = rank
            values[j] = floats.fill_null(np.nan).to_numpy()
            null[:, j] = is_null
            if not is_null.all():  # an all-null QI keeps NaN bounds: it is released as "(missing)"
                gmin[j] = float(floats.min())
                gmax[j] = float(floats.max())
            levels.append(floats.drop_nulls().unique().sort().to_numpy())
            domain.append([])
            continue
        labels = series.cast(pl.String).fill_null(MISSING_LABEL)
        frame = pl.DataFrame({"v": labels, "s": sens})
        stats = frame.group_by("v").agg(
            pl.len().alias("count"),
            ((pl.col("s") == (rarer if rarer is not None else -2)).sum() / (pl.col("s") >= 0).sum().clip(1))
            .alias("rate"),
        )
        order_by = ["rate", "count", "v"] if rarer is not None else ["count", "v"]
        descending = [False, True, False] if rarer is not None else [True, False]
        stats = stats.sort(order_by, descending=descending)
        order = stats.get_column("v")
        codes[j] = labels.replace_strict(order, pl.Series(np.arange(len(order), dtype=np.int64)),
                                            return_dtype=pl.Int64).to_numpy()
        domain.append(order.to_list())
        levels.append(np.empty(0))
    return _Encoded(codes, values, null, numeric, gmin, gmax, levels, domain, secrets, dates)


# --------------------------------------------------------------------------- round cut points


def _nice_cuts(low: np.ndarray, high: np.ndarray, below_high: np.ndarray) -> np.ndarray:
    """The roundest number c with low < c <= high (c < high where `below_high`), element-wise.

    Tries steps 10^e, 5*10^(e-1), 2*10^(e-1) from the leading decade down; the first
    multiple of a step that fits is the cut. Steps below 1 divide by a power of ten
    so that 0.3 is stored as 0.3 and not 0.30000000000000004.
    """
    out = np.full(low.shape, np.nan)
    unplaced = np.ones(low.shape, dtype=bool)
    magnitude = np.maximum(np.maximum(np.abs(low), np.abs(high)), 1e-300)
    top = np.floor(np.log10(magnitude)).astype(np.int64) + 1
    for offset in range(_NICE_DEPTH):
        if not unplaced.any():
            break
        exponent = top[unplaced] - offset - 1  # step = multiplier * 10^exponent
        lo, hi, strict = low[unplaced], high[unplaced], below_high[unplaced]
        for mult in _NICE_MULTIPLIERS:
            scale = np.power(10.0, np.abs(exponent))
            up = exponent >= 0
            step = np.where(up, mult * scale, mult / scale)
            quotient = np.floor(hi / step)
            quotient -= strict & (quotient * step >= hi)
            cut = np.where(up, quotient * mult * scale, quotient * mult / scale)
            fits = (cut > lo) & (cut <= hi) & ~(strict & (cut >= hi)) & np.isnan(out[unplaced])
            idx = np.flatnonzero(unplaced)[fits]
            out[idx] = cut[fits]
        unplaced &= np.isnan(out)
    # Intervals narrower than 1e-18 of their magnitude have no round number: use a plain boundary.
    out[unplaced] = np.where(below_high[unplaced], (low[unplaced] + high[unplaced]) / 2.0, high[unplaced])
    return out


# --------------------------------------------------------------------------- Mondrian


@dataclass
class _Leaves:
    """Final partitions: their rows (concatenated), sizes and numeric bounds."""

    rows: list[np.ndarray] = field(default_factory=list)
    sizes: list[np.ndarray] = field(default_factory=list)
    lo: list[np.ndarray] = field(default_factory=list)
    hi: list[np.ndarray] = field(default_factory=list)
    stratum: list[np.ndarray] = field(default_factory=list)


def _previous_occurrence(sens: np.ndarray) -> np.ndarray:
    """For each position, the last earlier position holding the same code of one sensitive column (-1 if none)."""
    order = np.argsort(sens, kind="stable")
    ordered = sens[order]
    prev = np.full(len(sens), -1, dtype=np.int64)
    same = ordered[1:] == ordered[:-1]
    prev[order[1:][same]] = order[:-1][same]
    return prev


def _distinct_sides(
    valid: np.ndarray, prev: np.ndarray, starts: np.ndarray, sizes: np.ndarray, left: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-null values of one sensitive column in [start, start+left) and [start+left, start+size) per segment.

    The segments tile the array. A position is a new value within a range when the
    previous occurrence of its value lies before the range's start, so one sort
    (`_previous_occurrence`) serves every candidate cut.
    """
    seg_start = np.repeat(starts, sizes)
    seg_cut = np.repeat(starts + left, sizes)
    first_left = np.concatenate(([0], np.cumsum(valid & (prev < seg_start))))
    first_right = np.concatenate(([0], np.cumsum(valid & (prev < seg_cut))))
    cut = starts + left
    return first_left[cut] - first_left[starts], first_right[starts + sizes] - first_right[cut]


def _try_split(
    enc: _Encoded, rows: np.ndarray, sizes: np.ndarray, dims: np.ndarray, k: int, l: int,  # noqa: E741
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut each partition (rows grouped by partition) near its median on its dimension in `dims`.

    Of the two median cuts (before and after the median's ties) the more balanced
    one that keeps both halves at >= k rows and >= l distinct values of every
    sensitive column is taken; numeric cuts then move to a round number when that keeps the policy.
    Returns the rows re-sorted along the cut dimension within each partition,
    whether each partition was cut, the left sizes and the numeric cut values
    (NaN for categories and uncut partitions).
    """
    count = len(sizes)
    seg = np.repeat(np.arange(count), sizes)
    starts = np.cumsum(sizes) - sizes
    key = enc.codes[dims[seg], rows]
    stride = int(key.max()) + 2
    combined = seg * stride + key
    order = np.argsort(combined, kind="stable")
    rows, combined, key = rows[order], combined[order], key[order]
    diverse = []  # per sensitive column: which positions hold a value, and each one's previous occurrence
    if l > 1:
        for codes in enc.sensitive:
            sens = codes[rows]
            diverse.append((sens >= 0, _previous_occurrence(sens)))
    base = np.arange(count, dtype=np.int64) * stride

    def allowed(left: np.ndarray) -> np.ndarray:
        ok = (left >= k) & (sizes - left >= k)
        for valid, prev in diverse:
            dl, dr = _distinct_sides(valid, prev, starts, sizes, np.clip(left, 0, sizes))
            ok &= (dl >= l) & (dr >= l)
        return ok

    median = key[starts + sizes // 2]
    below = np.searchsorted(combined, base + median, side="left") - starts
    upto = np.searchsorted(combined, base + median, side="right") - starts
    ok_below, ok_upto = allowed(below), allowed(upto)
    half = sizes / 2.0
    prefer_below = ok_below & (~ok_upto | (np.abs(below - half) <= np.abs(upto - half)))
    left = np.where(prefer_below, below, upto)
    done = ok_below | ok_upto
    cuts = np.full(count, np.nan)
    idx = np.flatnonzero(enc.numeric[dims] & done)
    if len(idx):
        s, c, n_left, dim = starts[idx], sizes[idx], left[idx], dims[idx]

        def values(position: np.ndarray) -> np.ndarray:
            return enc.values[dim, rows[position]]

        reach = c // _CUT_WINDOW
        lo_pos = np.maximum(k, n_left - reach)
        hi_pos = np.minimum(c - k, n_left + reach)
        high = values(s + hi_pos)
        wide = _nice_cuts(values(s + lo_pos - 1), high, high >= enc.gmax[dim])
        wide_left = np.empty_like(n_left)
        for j in np.unique(dim):
            sel = dim == j
            code = np.searchsorted(enc.levels[j], wide[sel], side="left")
            wide_left[sel] = np.searchsorted(combined, base[idx[sel]] + code, side="left") - s[sel]
        trial = left.copy()
        trial[idx] = wide_left
        wide_ok = allowed(trial)[idx]
        high = values(s + n_left)
        narrow = _nice_cuts(values(s + n_left - 1), high, high >= enc.gmax[dim])
        cuts[idx] = np.where(wide_ok, wide, narrow)
        left[idx] = np.where(wide_ok, wide_left, n_left)
    return rows, done, left, cuts


def _mondrian(
    enc: _Encoded, rows: np.ndarray, active: np.ndarray, priority: np.ndarray, k: int, l: int,  # noqa: E741
    stratum: int, leaves: _Leaves,
) -> None:
    """Split `rows` top-down on the `active` QIs until no cut keeps k and l; append the leaves.

    The frontier holds every partition of one depth, rows grouped by partition;
    each depth tries the widest dimension of every partition at once, then the
    next-widest for the partitions that could not be cut, and so on.
    """
    d = len(active)
    sizes = np.array([len(rows)], dtype=np.int64)
    lo = np.full((1, d), -np.inf)
    hi = np.full((1, d), np.inf)
    span = np.where(enc.numeric, enc.gmax - enc.gmin, [max(len(dom) - 1, 0) for dom in enc.domain])

    def finish(part_rows: np.ndarray, part_sizes: np.ndarray, part_lo: np.ndarray, part_hi: np.ndarray) -> None:
        if len(part_sizes):
            leaves.rows.append(part_rows)
            leaves.sizes.append(part_sizes)
            leaves.lo.append(part_lo)
            leaves.hi.append(part_hi)
            leaves.stratum.append(np.full(len(part_sizes), stratum, dtype=np.int64))

    while len(sizes):
        count = len(sizes)
        starts = np.cumsum(sizes) - sizes
        width = np.full((count, d), -1.0)
        for j in np.flatnonzero(active):
            column = enc.codes[j][rows]
            top, bottom = np.maximum.reduceat(column, starts), np.minimum.reduceat(column, starts)
            extent = enc.levels[j][top] - enc.levels[j][bottom] if enc.numeric[j] else top - bottom
            width[:, j] = extent / span[j] if span[j] > 0 else 0.0
        ranking = np.lexsort((np.broadcast_to(priority, (count, d)), -width), axis=-1)
        child_rows, child_sizes, child_lo, child_hi = [], [], [], []
        pending = np.arange(count)
        part_rows = rows
        for attempt in range(d):
            dims = ranking[pending, attempt]
            cuttable = width[pending, dims] > 0
            if not cuttable.all():
                # Dimensions are ranked by width, so a zero-width one means none is left to cut.
                stuck = np.repeat(~cuttable, sizes[pending])
                finish(part_rows[stuck], sizes[pending[~cuttable]], lo[pending[~cuttable]], hi[pending[~cuttable]])
                part_rows = part_rows[~stuck]
                pending, dims = pending[cuttable], dims[cuttable]
            if not len(pending):
                break
            part_sizes = sizes[pending]
            sorted_rows, done, left, cuts = _try_split(enc, part_rows, part_sizes, dims, k, l)
            cut = pending[done]
            child_rows.append(sorted_rows[np.repeat(done, part_sizes)])
            child_sizes.append(np.column_stack([left[done], part_sizes[done] - left[done]]).ravel())
            new_lo, new_hi = np.repeat(lo[cut], 2, axis=0), np.repeat(hi[cut], 2, axis=0)
            numeric_cut = np.flatnonzero(~np.isnan(cuts[done]))
            cut_dims = dims[done][numeric_cut]
            new_hi[2 * numeric_cut, cut_dims] = cuts[done][numeric_cut]
            new_lo[2 * numeric_cut + 1, cut_dims] = cuts[done][numeric_cut]
            child_lo.append(new_lo)
            child_hi.append(new_hi)
            part_rows = part_rows[np.repeat(~done, part_sizes)]
            pending = pending[~done]
        finish(part_rows, sizes[pending], lo[pending], hi[pending])
        if not child_sizes:
            break
        rows = np.concatenate(child_rows)
        sizes = np.concatenate(child_sizes)
        lo = np.concatenate(child_lo)
        hi = np.concatenate(child_hi)


# --------------------------------------------------------------------------- strata and suppression


@dataclass
class _Stratum:
    """Rows sharing which numeric QIs are null (`null`) or lifted to "*|(missing)" (`star`)."""

    rows: np.ndarray
    null: np.ndarray
    star: np.ndarray
    patterns: list[dict[str, Any]]  # each null pattern pooled here: {"null_columns": [...], "rows": n}


def _rare_category_rows(enc: _Encoded, qis: list[str], k: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows holding a category (or a categorical null) that fewer than k rows of the whole table share.

    Such a category can only be hidden by merging it into a neighbour's group
    in every class it reaches: two rows with a missing marital status turned a
    quarter of a release into "(missing)|0" groups. Dropping those few rows
    (within max_suppression) costs far less information.
    """
    rare = np.zeros(enc.codes.shape[1], dtype=bool)
    groups = []
    for j, name in enumerate(qis):
        if enc.numeric[j]:
            continue
        counts = np.bincount(enc.codes[j])
        hit = counts[enc.codes[j]] < k
        if hit.any():
            groups.append({"null_columns": [], "rare_category_of": name, "rows": int(hit.sum())})
            rare |= hit
    return rare, groups


def _strata(
    enc: _Encoded, qis: list[str], k: int, l: int, candidates: np.ndarray  # noqa: E741
) -> tuple[list[_Stratum], _Stratum | None]:
    """Split the `candidates` rows by null pattern of the numeric QIs; pool the strata that cannot meet k and l."""
    d = len(qis)
    with_nulls = np.flatnonzero(enc.numeric & enc.null[candidates].any(axis=0))
    bits = (enc.null[np.ix_(candidates, with_nulls)].astype(np.int64) << np.arange(len(with_nulls), dtype=np.int64)).sum(axis=1)
    patterns, inverse = np.unique(bits, return_inverse=True)
    order = candidates[np.argsort(inverse, kind="stable")]
    bounds = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=len(patterns)))))
    good: list[_Stratum] = []
    failing: list[_Stratum] = []
    for i, pattern in enumerate(patterns):
        rows = order[bounds[i]:bounds[i + 1]]
        null = np.zeros(d, dtype=bool)
        null[with_nulls] = (int(pattern) >> np.arange(len(with_nulls))) & 1 == 1
        pattern_info = {"null_columns": [qis[j] for j in np.flatnonzero(null)], "rows": len(rows)}
        stratum = _Stratum(rows, null, np.zeros(d, dtype=bool), [pattern_info])
        (good if _meets(enc, rows, k, l) else failing).append(stratum)
    if not failing:
        return good, None
    rows = np.sort(np.concatenate([s.rows for s in failing]))
    all_null = np.logical_and.reduce([s.null for s in failing])
    any_null = np.logical_or.reduce([s.null for s in failing])
    pool = _Stratum(rows, all_null, any_null & ~all_null, [p for s in failing for p in s.patterns])
    if _meets(enc, rows, k, l):
        return good + [pool], None
    return good, pool


def _meets(enc: _Encoded, rows: np.ndarray, k: int, l: int) -> bool:  # noqa: E741
    if len(rows) < k:
        return False
    if l <= 1:
        return True
    for codes in enc.sensitive:
        values = codes[rows]
        if len(np.unique(values[values >= 0])) < l:
            return False
    return True


# --------------------------------------------------------------------------- labels and figures


def _number(value: float, date: bool = False) -> str:
    if date:  # a day number; ISO dates are what `models.privacy.labels.parse_generalised_label` reads back as days
        from datetime import date as _date, timedelta

        return (_date(1970, 1, 1) + timedelta(days=math.floor(value))).isoformat()
    return np.format_float_positional(float(value), trim="-")


def _range_label(lo: float, hi: float, date: bool = False) -> str:
    if np.isinf(lo) and np.isinf(hi):
        return ANY_LABEL
    if np.isinf(lo):
        return f"< {_number(hi, date)}"
    if np.isinf(hi):
        return f">= {_number(lo, date)}"
    return f"[{_number(lo, date)}, {_number(hi, date)})"


def _group_label(members: list[str], domain_size: int) -> str:
    if len(members) == domain_size and domain_size > 1:
        return ANY_LABEL
    joined = "|".join(members)
    if len(members) <= MAX_LISTED_CATEGORIES:
        return joined
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:8]
    return f"{len(members)} values #{digest}"


def _numeric_labels(
    enc: _Encoded, j: int, lo: np.ndarray, hi: np.ndarray, null: np.ndarray, star: np.ndarray
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Label, NCP and the generalisation summary of numeric QI `j` for every leaf."""
    span = enc.gmax[j] - enc.gmin[j]
    clipped = np.minimum(hi, enc.gmax[j]) - np.maximum(lo, enc.gmin[j])
    loss = np.where(star, 1.0, np.where(null, 0.0, clipped / span if span > 0 else 0.0))
    pairs, inverse = np.unique(np.column_stack([lo, hi]), axis=0, return_inverse=True)
    # A constant QI is never cut and identifies no one: its one value is released rather than "*".
    constant = enc.gmin[j] == enc.gmax[j]
    date = bool(enc.dates[j])
    names = [_number(enc.gmin[j], date) if constant else _range_label(a, b, date) for a, b in pairs]
    labels = [names[i] for i in inverse.ravel()]
    for i in np.flatnonzero(null):
        labels[i] = MISSING_LABEL
    for i in np.flatnonzero(star):
        labels[i] = ANY_OR_MISSING_LABEL
    cuts = np.unique(pairs[np.isfinite(pairs)])
    summary = {"kind": "date range" if date else "range", "cuts": [float(c) for c in cuts]}
    return labels, loss, summary


def _group_labels(
    enc: _Encoded, j: int, leaf_of_position: np.ndarray, rows: np.ndarray, n_leaves: int
) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Label (the categories present), NCP and the groups released of categorical QI `j` per leaf."""
    domain = enc.domain[j]
    present = (
        pl.DataFrame({"leaf": leaf_of_position, "code": enc.codes[j][rows]})
        .unique()
        .group_by("leaf")
        .agg(pl.col("code").sort())
        .sort("leaf")
    )
    groups = present.get_column("code").to_list()
    names: dict[tuple[int, ...], str] = {}
    members: dict[str, list[str]] = {}
    labels = []
    for codes in groups:
        key = tuple(codes)
        if key not in names:
            values = sorted(domain[c] for c in key)
            names[key] = _group_label(values, len(domain))
            members[names[key]] = values
        labels.append(names[key])
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    loss = (sizes - 1.0) / (len(domain) - 1.0) if len(domain) > 1 else np.zeros(n_leaves)
    return labels, loss, {"kind": "group", "groups": dict(sorted(members.items()))}


def _size_histogram(sizes: np.ndarray, k: int) -> dict[str, int]:
    """Class counts in doubling bins from k: {"5-9": 120, "10-19": 30, ...}."""
    histogram: dict[str, int] = {}
    low = k
    remaining = np.sort(sizes)
    while len(remaining):
        high = low * 2
        inside = int(np.searchsorted(remaining, high, side="left"))
        if inside:
            histogram[f"{low}-{high - 1}"] = inside
        remaining = remaining[inside:]
        low = high
    return histogram


# --------------------------------------------------------------------------- the entry point


def anonymize(
    table: pl.DataFrame, schema: TableSchema, policy: AnonymizationPolicy, *, tenant: str | None = None
) -> AnonymizationResult:
    """Generalise (and where unavoidable suppress) `table` to meet `policy`.

    Raises:
        TenantConfigError: the policy is out of range (k < 2, ...).
        InvalidDataError: a QI is unknown or of a type that cannot be generalised (a
            constant or all-null QI is released as it is); a sensitive column named in
            the policy is missing, is also a QI, or has fewer than l values (with no
            sensitive column at all, l is recorded as not measured and the table is
            generalised for k alone); the table has fewer than k rows; or
            suppression would exceed `max_suppression`.
    """
    qis, kinds, scope = _resolve(table, schema, policy, tenant)
    sensitive = list(scope.columns)
    # With no sensitive column there is nothing to diversify: generalise for k alone.
    k, l = int(policy.k), scope.enforced_l  # noqa: E741
    n, d = table.height, len(qis)
    enc = _encode(table, qis, kinds, sensitive)
    priority = np.random.default_rng(policy.seed).permutation(d)
    rare, rare_groups = _rare_category_rows(enc, qis, k)
    good, suppressed = _strata(enc, qis, k, l, np.flatnonzero(~rare))
    if rare.any() and rare.sum() + (0 if suppressed is None else len(suppressed.rows)) > policy.max_suppression * n:
        # Too many to drop: those categories are generalised into their neighbours' groups instead.
        rare, rare_groups = np.zeros(n, dtype=bool), []
        good, suppressed = _strata(enc, qis, k, l, np.arange(n))
    rows_suppressed = int(rare.sum()) + (0 if suppressed is None else len(suppressed.rows))
    suppressed_groups = rare_groups + ([] if suppressed is None else suppressed.patterns)
    if rows_suppressed > policy.max_suppression * n:
        described = "; ".join(
            f"{g['rows']} row(s) with {', '.join(g['null_columns']) or 'no'} null" for g in suppressed_groups
            if "rare_category_of" not in g
        )
        raise InvalidDataError(
            f"{rows_suppressed} of {n} rows ({rows_suppressed / n:.1%}) cannot be made {k}-anonymous and "
            f"{l}-diverse by generalisation ({described}), above max_suppression={policy.max_suppression:.1%}.",
            tenant=tenant,
            column=", ".join(c for g in suppressed_groups for c in g["null_columns"]) or None,
            fix="lower privacy.k or privacy.l, drop the quasi-identifiers with many nulls (or fill them), "
            "use fewer quasi-identifiers, or raise max_suppression.",
        )
    leaves = _Leaves()
    for index, stratum in enumerate(good):
        active = ~stratum.null & ~stratum.star
        _mondrian(enc, stratum.rows, active, priority, k, l, index, leaves)
    rows = np.concatenate(leaves.rows)
    sizes = np.concatenate(leaves.sizes)
    lo, hi = np.concatenate(leaves.lo), np.concatenate(leaves.hi)
    stratum_of = np.concatenate(leaves.stratum)
    n_leaves = len(sizes)
    leaf_of_position = np.repeat(np.arange(n_leaves), sizes)
    null = np.array([s.null for s in good])[stratum_of]
    star = np.array([s.star for s in good])[stratum_of]

    leaf_of_row = np.full(n, -1, dtype=np.int64)
    leaf_of_row[rows] = leaf_of_position
    kept = np.flatnonzero(leaf_of_row >= 0)
    leaf_index = leaf_of_row[kept]
    columns, generalisations, loss_by_column = [], {}, {}
    weight = sizes.astype(np.float64)
    for j, name in enumerate(qis):
        if enc.numeric[j]:
            labels, loss, summary = _numeric_labels(enc, j, lo[:, j], hi[:, j], null[:, j], star[:, j])
        else:
            labels, loss, summary = _group_labels(enc, j, leaf_of_position, rows, n_leaves)
        released = pl.Series(name, labels, dtype=pl.String).gather(leaf_index)
        columns.append(released)
        summary["labels"] = dict(sorted(released.value_counts().iter_rows()))
        generalisations[name] = summary
        loss_by_column[name] = float((np.dot(loss, weight) + rows_suppressed) / n)
    out = table[kept].with_columns(columns)

    aggs = [pl.len().alias("size")]
    aggs += [pl.col(name).drop_nulls().n_unique().alias(f"distinct_{i}") for i, name in enumerate(sensitive)]
    classes = out.group_by(qis).agg(aggs)
    class_sizes = classes.get_column("size").to_numpy()
    k_achieved = int(class_sizes.min())
    l_by_column = {name: int(classes.get_column(f"distinct_{i}").min()) for i, name in enumerate(sensitive)}
    l_achieved = min(l_by_column.values()) if l_by_column else None
    if k_achieved < k or (l > 1 and l_achieved < l):
        raise CreditTwinError(
            f"internal check failed: the generalised table reaches k={k_achieved}, l={l_achieved} "
            f"below the policy k={k}, l={l}; nothing was released.",
            tenant=tenant,
            fix="report this table and policy to the CreditTwin maintainers.",
        )
    return AnonymizationResult(
        table=out,
        k_achieved=k_achieved,
        l_achieved=l_achieved,
        rows_suppressed=rows_suppressed,
        suppression_rate=rows_suppressed / n,
        information_loss=float(np.mean(list(loss_by_column.values()))),
        class_sizes=_size_histogram(class_sizes, k),
        generalisations=generalisations,
        quasi_identifiers=qis,
        sensitive=sensitive,
        k=k,
        l=int(policy.l),
        rows_in=n,
        class_count=classes.height,
        loss_by_column=loss_by_column,
        suppressed_groups=suppressed_groups,
        l_by_column=l_by_column,
        sensitive_not_released=list(scope.not_released),
    )
