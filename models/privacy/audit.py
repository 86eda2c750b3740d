"""The privacy audit of a released (anonymized) synthetic portfolio.

The audit compares the released table with the train split (members: the rows
the generator saw) and the holdout (non-members), drawn at the same sizes and
on fixed-size seeded samples for large books, and measures:

* **Distance to closest record** (`distance_to_closest_record`): the share of
  released rows closer to train than to holdout (0.5 is ideal, ties count
  one half), the exact-match rate (a released row at distance 0 from a train
  row, i.e. equal to it where it is not generalised and covering it where it
  is; it must be 0) among the records unique in the tape (a row equal to
  values several borrowers share discloses none of them: on real tapes with a
  zero-inflated balance the holdout matches as often), the holdout
  exact-match rate beside it as a baseline, and
  the nearest-neighbour distance ratio (closest / second closest). Duplicate
  rows are removed from each table before sampling.
* **Membership inference** (`membership_inference`): a density-ratio attack in
  the spirit of DOMIAS (Van Breugel et al., 2023). The density of the released
  data and of a reference sample of the population (part of the holdout) are
  estimated at each candidate record by nearest-neighbour distances, and the
  score is log(d_reference) - log(d_released): a record around which the
  release is denser than the population is called a member. A plain distance
  attack (score = -d_released) is reported beside it. Each attack gives an AUC
  with a DeLong confidence interval and the true-positive rate at 0.1 %
  false-positive rate with a stratified bootstrap interval; members are a train
  sample and non-members a holdout sample disjoint from the reference. On a
  large book the release is sampled too, so a copied row counts only when it
  is drawn: the attack's power drops with the sampling rate (the exact-match
  check, which reads the whole train split, does not).
* **Attribute inference** (`attribute_inference`): CreditTwin's own attack,
  run on every install. For each secret (the default flag and the declared
  sensitive columns) the attacker knows every other compared column of a
  target record, takes the nearest released row on those columns and guesses
  its secret. Targets are every sampled train row (members) and as many
  holdout rows (controls), so the attack count grows with the book up to the
  holdout size; the release leaks when members' secrets are guessed more often
  than controls'.
* **Attack-based risks** (`anonymeter_risks`): anonymeter's singling-out,
  linkability and inference attacks, with the holdout as control, each as a
  risk with its confidence interval and the success counts the policy tests.
  Anonymeter is optional (it pins an old NumPy, see the README): without it
  these figures are "not measured: not installed", with the install command.
* **The DP bound** (`dp_auc_bound`): the largest attacker AUC an
  (epsilon, delta)-DP release allows, beside the empirical AUC.
* **k and l** (`measure_anonymity`): the smallest equivalence class over the
  quasi-identifiers of the release and, for each sensitive column (the target
  and tenant.yaml's `sensitive_columns`, chosen by
  `models.privacy.anonymize.l_diversity_scope`), the fewest distinct non-null values in
  one class; l is the smallest of them.

`evaluate_policy` applies the tenant's `AuditPolicy` to an `AuditReport` and
lists each rule with its value, threshold, verdict (pass, warn or fail) and
the criterion it applied, in words (`RuleResult.criterion`).

The attack rules (`leak_test`)
------------------------------
Anonymeter's risk, (members' success - controls' success) / (1 - controls'
success), is the right effect size (the share of what the attacker could not
guess from other people's data that the release gives away), but the rule
"its upper 95 % bound must be below a limit" demands a precision small books
and rare secrets cannot give: on a 3 % default flag the controls' success is
about 0.94, the denominator 0.06, and 2,000 attacks on an honest release still
leave an upper bound near 0.29. Such a rule fails releases that leak nothing.
Every attack rule is therefore a two-proportion test of members against
controls (Newcombe's hybrid score interval for the difference, one-sided 95 %
bounds, divided by the controls' failure rate):

* FAIL when the lower bound of the risk is above the margin: evidence that
  the release tells members' secrets better than other people's by more than
  the tenant tolerates;
* PASS when the upper bound is within the margin;
* WARN (inconclusive) otherwise, stating both bounds and the smallest risk
  the attack detects with 80 % power at this size;
* not measured when even a complete leak (every member guessed) would not
  put the lower bound above the margin at these counts: the attack has no
  power here, and `require_measured` decides (see `evaluate_policy`).

Copies and near-copies are still refused at any size by the exact-match,
DCR-share and membership-inference rules, which need no secret.

The mixed-type distance
-----------------------
The distance between two rows is the Euclidean norm of per-column distances
over the compared columns (every column of the schema except identifiers and
free text, present in all three tables):

* numeric, integer and datetime columns (datetimes as days since 1970):
  |a - b| / scale, with scale the interquartile range of train and holdout
  together (their range when the IQR is 0, else 1);
* categorical and boolean columns: 0 when equal, 1 otherwise;
* nulls: 0 between two nulls, 1 between a null and a value;
* generalised columns of the release (k-anonymity recoding, labels as
  `models.privacy.anonymize` writes them): a numeric range label such as "[30, 45)",
  "< 30" or ">= 45" is at distance 0 from a real value inside it and
  otherwise at the distance to its nearest edge, scaled as above; a category
  group "north|south" is at distance 0 from its members and 1 from others; "*"
  is at distance 0 from every value, and "(missing)" is a null.

Nearest neighbours are found block by block in two passes. A fast float32
pass writes the squared distance over the ordinary columns (numbers with or
without nulls, categories of up to 64 levels) as one matrix product of
per-row features, adds for the generalised columns a precomputed table of
distances from each combination of released labels (an equivalence class) to
each real row, and compares wider categories code by code. Each row's best
candidates, and any within float32 rounding of them, are then re-ranked with
the exact float64 distance, so exact matches and ties are decided exactly.
Exact matches are also looked up in the whole train split by a hash join on
the non-generalised columns, so a copied row is found even when its source was
not drawn into the sample.

Small books: the audit never refuses a book for its size. It computes what is
meaningful, widens the intervals of small samples (Wilson intervals on an
effective size for the AUC), says so in `warnings`, and skips an attack that
cannot run (membership inference needs at least 2 members, 2 non-members and
1 reference row; attribute inference and anonymeter at least 5 rows per
table), saying why. A non-leaky book of a few hundred loans can be certified
when every required attack has the power to see a complete leak (a default
flag of 20 % at 400 loans does; a 3 % flag does not, and its inference rule is
then "not measured", which fails under `require_measured`); copies fail at any
size on the exact-match and DCR rules.
"""

from __future__ import annotations

import math
import re
import warnings as py_warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import polars as pl

from models.privacy.anonymize import ANY_LABEL, MISSING_LABEL, LDiversityScope, l_diversity_scope
from models.errors import InvalidDataError
from models.tape.schema import ColumnType, TableSchema
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT

if TYPE_CHECKING:
    import pandas as pd

# Past this many levels a category is compared code by code rather than one-hot
# encoded: the product of two one-hot blocks would cost more than the comparison.
MAX_ONE_HOT_LEVELS = 64
# Rows of the query side processed together: a block of pairwise distances is
# BLOCK_ROWS x candidates float32 values (20 MB against 10,000 candidates).
BLOCK_ROWS = 512
# Candidates per query re-ranked with the exact float64 distance.
RERANK = 4
# Relative float32 rounding allowed for in the fast pass (about 20 ulps of
# the largest feature products); closer candidates are re-ranked exactly.
ROUNDING = 2e-6
# Two distances closer than this (relative) are a tie.
TIE_TOLERANCE = 1e-9
# Keeps log-distances finite for exact copies (distances are in IQR units).
DISTANCE_FLOOR = 1e-6
FPR_TARGET = 0.001
N_BOOTSTRAP = 200
CONFIDENCE = 0.95
# Below this many members or non-members the AUC interval is widened.
SMALL_SAMPLE = 100
MIN_MIA_PER_GROUP = 2
MIN_ANONYMETER_ROWS = 5
# Query attempts granted per requested singling-out attack before anonymeter
# gives up generating more (its own default of 10 million can run for hours on
# a heavily generalised table where few queries single anyone out).
SINGLING_OUT_ATTEMPTS_PER_ATTACK = 100
# The attack rules' bounds are one-sided at this level (each direction on its own).
ONE_SIDED_CONFIDENCE = 0.95
# The power at which an attack rule reports the smallest risk it detects.
DETECTION_POWER = 0.80
# A numeric secret counts as guessed within this distance (in IQR units, as the
# audit's distance scales it): 5 % of the interquartile range.
INFERENCE_TOLERANCE = 0.05
ANONYMETER_INSTALL = "pip install --no-deps 'anonymeter==1.1.0'"
MISSING = MISSING_LABEL
_TRUE = set(TRUE_TEXT)
_FALSE = set(FALSE_TEXT)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EDGE = rf"(-inf|[-+]?inf|{_NUMBER}|\d{{4}}-\d{{2}}-\d{{2}}(?:[T ][\d:.]+)?)"
_RANGE = re.compile(rf"^\s*([\[(])\s*{_EDGE}\s*,\s*{_EDGE}\s*([\])])\s*$", re.IGNORECASE)
_BOUND = re.compile(rf"^\s*(<=|>=|<|>)\s*{_EDGE}\s*$", re.IGNORECASE)
_NUMERIC_TYPES = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)


# --------------------------------------------------------------------------- config and results


@dataclass
class AuditConfig:
    """How the audit samples and attacks.

    Attributes:
        sample_size: rows drawn (seeded, without replacement) from each of the
            released table, the train split and the holdout when they are
            larger; train and holdout are drawn at the same size.
        n_attacks: anonymeter attacks per evaluator (2,000 in production).
        seed: seed of every random draw of the audit.
        run_anonymeter: False skips the three anonymeter attacks.
        anonymeter_sample_size: rows of each table given to anonymeter (drawn
            from the samples above). Its neighbour search is brute force, so
            its time grows with attacks x rows, while its intervals depend on
            the number of attacks: 5,000 rows keep 2,000 attacks meaningful at
            half the time of 10,000.
        n_jobs: threads for anonymeter's neighbour searches (-1: all cores).
        n_bootstrap: bootstrap replicates of the TPR-at-FPR interval.
    """

    sample_size: int = 10_000
    n_attacks: int = 2000
    seed: int = 0
    run_anonymeter: bool = True
    anonymeter_sample_size: int = 5_000
    n_jobs: int = -1
    n_bootstrap: int = N_BOOTSTRAP

    def validate(self, tenant: str | None = None) -> None:
        """Raise `InvalidDataError` when a setting is out of range (naming its tenant.yaml key under `audit:`)."""
        for name, minimum, default in (
            ("sample_size", 10, "10,000"),
            ("n_attacks", 1, "2,000"),
            ("anonymeter_sample_size", MIN_ANONYMETER_ROWS, "5,000"),
            ("n_bootstrap", 10, "200"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidDataError(
                    f"audit {name} must be an integer of at least {minimum}, got {value!r}.",
                    tenant=tenant,
                    fix=f"set audit.{name} in tenant.yaml to {minimum} or more ({default} is the default)."
                    if name != "n_bootstrap"
                    else f"set n_bootstrap to {minimum} or more ({default} is the default).",
                )


@dataclass
class AuditReport:
    """Everything the audit measured, JSON-ready through `to_dict`.

    Attributes:
        dcr: distance-to-closest-record figures (`distance_to_closest_record`).
        mia: membership-inference figures (`membership_inference`).
        anonymeter: anonymeter risks (`anonymeter_risks`); `{"skipped": reason}`
            when the attacks did not run.
        dp: the DP spend and the bound it implies, or None without DP.
        sizes: rows of each input and of each sample used.
        warnings: every caveat a reviewer should read beside the figures.
        anonymity: achieved k and l of the release (`measure_anonymity`).
        inference: CreditTwin's own attribute-inference attack
            (`attribute_inference`): per secret, the success counts on members
            and controls; `{"not_applicable": reason}` without a secret,
            `{"skipped": reason}` when the book is too small.
    """

    dcr: dict
    mia: dict
    anonymeter: dict
    dp: dict | None
    sizes: dict
    warnings: list[str]
    anonymity: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (non-finite floats become None)."""
        return _jsonable(asdict(self))


@dataclass
class AuditPolicy:
    """The tenant's release policy: the limits the audit figures are held to.

    Attributes:
        max_exact_match_rate: largest share of released rows equal to a train row.
        max_dcr_share: largest share of released rows closer to train than holdout.
        max_mia_auc: largest AUC of the strongest membership-inference attack.
        max_anonymeter_risk: the margin of anonymeter's singling-out and
            linkability risks (see `leak_test`: a rule fails on evidence that
            the risk exceeds it, passes when it is shown within it).
        max_inference_risk: the margin of every attribute-inference risk
            (CreditTwin's own attack and anonymeter's); None: `max_anonymeter_risk`.
        k: smallest equivalence class required over the quasi-identifiers, or None.
        l: fewest distinct sensitive values required per class, or None. It
            does not apply to a release with no sensitive column (no target,
            none declared): that rule is then a warning saying so.
        require_measured: True fails a required rule whose figure could not be
            measured (the exact-match, DCR and membership rules, and the
            inference rule of each secret); False makes it a warning. The
            anonymeter rules are a second opinion beside CreditTwin's own
            attacks, so anonymeter not installed, disabled or skipped is always
            a warning, never a pass.
    """

    max_exact_match_rate: float = 0.0
    max_dcr_share: float = 0.55
    max_mia_auc: float = 0.60
    max_anonymeter_risk: float = 0.10
    max_inference_risk: float | None = None
    k: int | None = None
    l: int | None = None  # noqa: E741 - the name of the l-diversity parameter
    require_measured: bool = True


PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class RuleResult:
    """One rule of the policy applied to the report.

    Attributes:
        rule: the rule's name.
        value: the figure judged (None when not measured).
        threshold: the limit or margin it is held to.
        passed: False only for a failed rule (a warning does not block).
        message: what was found, with the figures.
        verdict: "pass", "warn" (not measured, not applicable or
            inconclusive: never shown as a pass) or "fail".
        criterion: the rule applied, in words, with its limit.
    """

    rule: str
    value: float | None
    threshold: float | None
    passed: bool
    message: str
    verdict: str = PASS
    criterion: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return _jsonable(asdict(self))


# --------------------------------------------------------------------------- generalised labels


@dataclass(frozen=True)
class NumericRange:
    """A generalised numeric value: the interval a real value was recoded into."""

    low: float
    high: float
    low_closed: bool = True
    high_closed: bool = False

    def contains(self, value: float) -> bool:
        """True when `value` lies inside the interval (edges as written)."""
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return bool(above and below)

    def distance(self, value: float) -> float:
        """Unscaled distance from `value` to the interval (0 inside it)."""
        return float(max(self.low - value, value - self.high, 0.0))


@dataclass(frozen=True)
class CategoryGroup:
    """A generalised category: the set of real categories it stands for.

    `members` is None for a suppressed value ("*"), which stands for any.
    """

    members: frozenset[str] | None

    def contains(self, value: str | None) -> bool:
        """True when the real category `value` is one the group stands for."""
        return self.members is None or value in self.members


def _edge_value(text: str) -> float:
    token = text.strip().lower()
    if token in ("-inf", "inf", "+inf"):
        return -math.inf if token.startswith("-") else math.inf
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", token):
        moment = datetime.fromisoformat(text.strip())
        return (moment - datetime(1970, 1, 1, tzinfo=moment.tzinfo)).total_seconds() / 86_400.0
    return float(token)


def parse_generalised_label(label: Any) -> NumericRange | CategoryGroup | None:
    """Parse a label written by k-anonymity recoding (`models.privacy.anonymize`).

    Args:
        label: a released value. Numeric ranges read "[a, b)", "< b", ">= a"
            (also "(a, b]", "(-inf, b)", "[a, inf)", "<= b", "> a"; edges may be
            ISO dates, read as days since 1970); category groups read "a|b|c";
            "*" (and "*|(missing)") stands for any value.

    Returns:
        A `NumericRange`, a `CategoryGroup` (members None for "any"), or None
        when `label` is not a generalised label (a plain value, "(missing)",
        or not a string).
    """
    if not isinstance(label, str):
        return None
    text = label.strip()
    parts = [part.strip() for part in text.split("|")]
    if ANY_LABEL in parts:
        return CategoryGroup(None)
    match = _RANGE.match(text)
    if match:
        opening, low, high, closing = match.groups()
        low_value, high_value = _edge_value(low), _edge_value(high)
        if low_value > high_value:
            return None
        return NumericRange(low_value, high_value, opening == "[", closing == "]")
    match = _BOUND.match(text)
    if match:
        operator, edge = match.groups()
        value = _edge_value(edge)
        if operator.startswith("<"):
            return NumericRange(-math.inf, value, False, operator == "<=")
        return NumericRange(value, math.inf, operator == ">=", False)
    if len(parts) > 1:
        return CategoryGroup(frozenset(parts))
    return None


# --------------------------------------------------------------------------- column plan


@dataclass
class _Column:
    """How one compared column enters the distance (fitted on the samples)."""

    name: str
    numeric: bool
    generalised: bool = False
    center: float = 0.0
    scale: float = 1.0
    nullable: bool = False  # nulls in some table (numeric columns)
    dense: bool = True
    levels: list[str] = field(default_factory=list)  # real categories (and released plain values)
    labels: list[str] = field(default_factory=list)  # distinct released values of a categorical column
    groups: dict[str, frozenset[str] | None] = field(default_factory=dict)  # group label -> members (None: any)
    membership: np.ndarray | None = None  # released label x level: 0 when the label covers the level


def _numeric_values(series: pl.Series) -> np.ndarray:
    """Float64 values (NaN for null); datetimes as days since 1970."""
    dtype = series.dtype
    if dtype == pl.Date:
        values = series.cast(pl.Int32).cast(pl.Float64)
    elif isinstance(dtype, pl.Datetime):
        values = series.dt.epoch("ms").cast(pl.Float64) / 86_400_000.0
    elif isinstance(dtype, pl.Duration):
        values = series.dt.total_milliseconds().cast(pl.Float64) / 86_400_000.0
    elif dtype == pl.Boolean:
        values = series.cast(pl.Float64)
    else:
        values = series.cast(pl.Float64, strict=False)
    return values.fill_nan(None).to_numpy(allow_copy=True).astype(np.float64, copy=False)


def _category_strings(series: pl.Series, ctype: ColumnType) -> list[str | None]:
    """Values as strings; booleans in one canonical spelling whatever their dtype."""
    values = series.cast(pl.String, strict=False)
    if ctype is ColumnType.BOOLEAN:
        canonical = {v: "true" for v in _TRUE} | {v: "false" for v in _FALSE}
        values = values.str.to_lowercase().replace(canonical)
    return values.to_list()


def _is_label_column(series: pl.Series) -> bool:
    return series.dtype in (pl.String, pl.Categorical) or isinstance(series.dtype, pl.Enum)


def _released_intervals(series: pl.Series, column: str, tenant: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Low and high edges of a released numeric column (labels parsed; NaN for null)."""
    if not _is_label_column(series):
        values = _numeric_values(series)
        return values, values.copy()
    text = series.cast(pl.String)
    distinct = [v for v in text.unique().to_list() if v is not None]
    edges: dict[str, tuple[float, float]] = {}
    for label in distinct:
        parsed = parse_generalised_label(label)
        if label.strip() == MISSING:
            edges[label] = (np.nan, np.nan)
        elif isinstance(parsed, NumericRange):
            edges[label] = (parsed.low, parsed.high)
        elif isinstance(parsed, CategoryGroup) and parsed.members is None:
            edges[label] = (-math.inf, math.inf)
        else:
            try:
                number = float(label)
            except ValueError:
                raise InvalidDataError(
                    f"released value {label!r} is neither a number nor a range label.",
                    tenant=tenant,
                    column=column,
                    fix="release a numeric column as numbers or as ranges written like '[30, 45)', '< 30' or '>= 45'.",
                ) from None
            edges[label] = (number, number)
    low = np.array([edges[v][0] if v is not None else np.nan for v in text.to_list()], dtype=np.float64)
    high = np.array([edges[v][1] if v is not None else np.nan for v in text.to_list()], dtype=np.float64)
    return low, high


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    q25, q50, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    scale = float(q75 - q25)
    if scale <= 0:
        scale = float(finite.max() - finite.min())
    return float(q50), scale if scale > 0 else 1.0


def _compared_columns(released: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame, schema: TableSchema) -> tuple[list[str], list[str]]:
    compared, missing = [], []
    for spec in schema.columns:
        if spec.type in (ColumnType.IDENTIFIER, ColumnType.TEXT):
            continue
        if all(spec.name in frame.columns for frame in (released, train, holdout)):
            compared.append(spec.name)
        else:
            missing.append(spec.name)
    return compared, missing


def _group_members(label: str, spec: dict[str, Any] | None) -> frozenset[str] | None | bool:
    """Members of a released category label: a frozenset, None for "any", False when not a group.

    `spec` is the column's entry of `AnonymizationResult.generalisations`, whose
    "groups" list the members of every group label (needed for the hashed names
    of large groups).
    """
    listed = (spec or {}).get("groups") or {}
    if label in listed:
        members = [str(m) for m in listed[label]]
        return None if ANY_LABEL in members else frozenset(members)
    parsed = parse_generalised_label(label)
    if isinstance(parsed, CategoryGroup):
        return parsed.members
    return False


def _plan(
    columns: list[str],
    schema: TableSchema,
    released: pl.DataFrame,
    real: list[pl.DataFrame],
    generalisations: dict[str, dict[str, Any]] | None,
) -> list[_Column]:
    """Decide, per column, its scale, its levels and whether it is embedded densely."""
    plans = []
    for name in columns:
        ctype = schema[name].type
        if ctype in _NUMERIC_TYPES:
            values = np.concatenate([_numeric_values(frame.get_column(name)) for frame in real])
            center, scale = _robust_scale(values)
            generalised = _is_label_column(released.get_column(name))
            has_nulls = bool(np.isnan(values).any()) or released.get_column(name).null_count() > 0
            plans.append(_Column(name, True, generalised, center, scale, has_nulls, dense=not (generalised or has_nulls)))
            continue
        real_values: list[str | None] = []
        for frame in real:
            real_values.extend(_category_strings(frame.get_column(name), ctype))
        levels = sorted({MISSING if v is None else v for v in real_values})
        released_values = {MISSING if v is None else v for v in _category_strings(released.get_column(name), ctype)}
        known = set(levels)
        spec = (generalisations or {}).get(name)
        resolved = {v: _group_members(v, spec) for v in released_values if v not in known}
        groups = {v: m for v, m in resolved.items() if m is not False}
        levels.extend(sorted(v for v, m in resolved.items() if m is False))
        column = _Column(name, False, bool(groups), levels=levels, groups=groups)
        column.dense = not groups and len(levels) <= MAX_ONE_HOT_LEVELS
        if groups:
            column.labels = sorted(released_values)
            index = {level: i for i, level in enumerate(levels)}
            membership = np.ones((len(column.labels), len(levels)), dtype=np.float32)
            for row, label in enumerate(column.labels):
                if label not in groups:
                    membership[row, index[label]] = 0.0
                elif groups[label] is None:
                    membership[row, :] = 0.0
                else:
                    for member in groups[label] & known:
                        membership[row, index[member]] = 0.0
            column.membership = membership
        plans.append(column)
    return plans


# --------------------------------------------------------------------------- encoded tables and nearest neighbours


@dataclass
class _Side:
    """One table encoded for the distance.

    The exact float64 distance reads `dense` (columns embedded so that the
    distance is Euclidean), `low`/`high` (numeric columns with nulls or
    released ranges) and `codes` (categories compared code by code). The fast
    approximate pass reads the bilinear features: the squared distance over the
    ordinary columns is `left[a] @ right[b]`; a released generalised column
    adds a gathered table of label-to-value distances (`label_codes`,
    `label_low`/`label_high`); between two real tables those columns are
    ordinary ones (`real_left`/`real_right`, and `gen_wide` for categories with
    many levels, compared code by code like `wide_codes`).
    """

    released: bool
    dense: np.ndarray
    low: list[np.ndarray]
    high: list[np.ndarray]
    codes: list[np.ndarray]
    left: np.ndarray
    right: np.ndarray
    real_left: np.ndarray
    real_right: np.ndarray
    wide_codes: list[np.ndarray]
    gen_wide: list[np.ndarray]
    label_codes: list[np.ndarray] = field(default_factory=list)
    label_low: list[np.ndarray | None] = field(default_factory=list)
    label_high: list[np.ndarray | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.dense.shape[0]


@dataclass
class _Bilinear:
    """Per-row features whose products give squared distances.

    The squared distance of rows a and b over the columns added is
    own(a) + own(b) + const + sum(left(a) * right(b)), which `matrices` lays
    out as one matrix product.
    """

    n: int
    own: np.ndarray = field(init=False)
    const: float = 0.0
    left: list[np.ndarray] = field(default_factory=list)
    right: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.own = np.zeros(self.n)

    def numeric(self, x: np.ndarray, nullable: bool) -> None:
        """Add a numeric column (NaN for null); `nullable` must be the same for every table.

        With v the value (0 where null) and m the null indicator, (x - y)^2
        between values, 1 between a null and a value and 0 between nulls
        equal v_a^2 (1 - m_b) + (1 - m_a) v_b^2 - 2 v_a v_b + m_a + m_b - 2 m_a m_b.
        """
        null = np.isnan(x)
        v = np.where(null, 0.0, x)
        self.own += v * v
        self.left.append(-2.0 * v)
        self.right.append(v)
        if nullable:
            m = null.astype(np.float64)
            self.own += m
            self.left += [v * v, -m, -2.0 * m]
            self.right += [-m, v * v, m]

    def category(self, codes: np.ndarray, width: int) -> None:
        """Add a category (codes below `width`): the products give 1 - [a == b]."""
        one_hot = np.zeros((width, codes.size))
        one_hot[codes, np.arange(codes.size)] = 1.0
        self.const += 1.0
        self.left.extend(-one_hot)
        self.right.extend(one_hot)

    def matrices(self, other: "_Bilinear | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """The left and right float32 matrices of these columns (and `other`'s)."""
        own, const = self.own, self.const
        left, right = list(self.left), list(self.right)
        if other is not None:
            own, const = own + other.own, const + other.const
            left += other.left
            right += other.right
        ones = np.ones(self.n)
        stack_left = np.column_stack([own + const, ones, *left])
        stack_right = np.column_stack([ones, own, *right])
        return np.ascontiguousarray(stack_left, dtype=np.float32), np.ascontiguousarray(stack_right, dtype=np.float32)


def _encode(frame: pl.DataFrame, plans: list[_Column], schema: TableSchema, *, released: bool, tenant: str | None) -> _Side:
    n = frame.height
    dense: list[np.ndarray] = []
    lows: list[np.ndarray] = []
    highs: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    common = _Bilinear(n)
    between_real = _Bilinear(n)
    wide: list[np.ndarray] = []
    gen_wide: list[np.ndarray] = []
    side: dict[str, list] = {"label_codes": [], "label_low": [], "label_high": []}
    for column in plans:
        series = frame.get_column(column.name)
        if column.numeric:
            if released:
                low, high = _released_intervals(series, column.name, tenant)
            else:
                low = _numeric_values(series)
                high = low.copy()
            low = (low - column.center) / column.scale
            high = (high - column.center) / column.scale
            if column.dense:
                dense.append(low[:, None])
            else:
                lows.append(low)
                highs.append(high)
            if not column.generalised:
                common.numeric(low, column.nullable)
            elif released:
                pairs, inverse = np.unique(np.column_stack([low, high]), axis=0, return_inverse=True)
                side["label_codes"].append(inverse.ravel().astype(np.int64))
                side["label_low"].append(pairs[:, 0])
                side["label_high"].append(pairs[:, 1])
            else:
                between_real.numeric(low, column.nullable)
            continue
        values = [MISSING if v is None else v for v in _category_strings(series, schema[column.name].type)]
        if released and column.generalised:
            index = {label: i for i, label in enumerate(column.labels)}
        else:
            index = {level: i for i, level in enumerate(column.levels)}
        coded = np.fromiter((index[v] for v in values), dtype=np.int64, count=n)
        if column.dense:
            one_hot = np.zeros((n, len(column.levels)), dtype=np.float64)
            one_hot[np.arange(n), coded] = 1.0 / math.sqrt(2.0)
            dense.append(one_hot)
        else:
            codes.append(coded)
        if not column.generalised:
            if column.dense:
                common.category(coded, len(column.levels))
            else:
                wide.append(coded)
        elif released:
            side["label_codes"].append(coded)
            side["label_low"].append(None)
            side["label_high"].append(None)
        else:
            # Between two real tables a generalised category is an ordinary one.
            if len(column.levels) <= MAX_ONE_HOT_LEVELS:
                between_real.category(coded, len(column.levels))
            else:
                gen_wide.append(coded)
    left, right = common.matrices()
    real_left, real_right = common.matrices(between_real)
    return _Side(
        released=released,
        dense=np.hstack(dense) if dense else np.zeros((n, 0)),
        low=lows,
        high=highs,
        codes=codes,
        left=left,
        right=right,
        real_left=real_left,
        real_right=real_right,
        wide_codes=wide,
        gen_wide=gen_wide,
        **side,
    )


def _gap(low_a: np.ndarray, high_a: np.ndarray, low_b: np.ndarray, high_b: np.ndarray, *, outer: bool) -> np.ndarray:
    """Squared gap between intervals (0 when they overlap); 1 for null vs value, 0 for two nulls."""
    if outer:
        first = np.subtract.outer(low_a, high_b)
        second = np.subtract.outer(high_a, low_b)
    else:
        first = low_a - high_b
        second = high_a - low_b
    np.negative(second, out=second)
    np.maximum(first, second, out=first)
    np.maximum(first, 0.0, out=first)
    first *= first
    null_a, null_b = np.isnan(low_a), np.isnan(low_b)
    if null_a.any() or null_b.any():
        mismatch = np.logical_xor.outer(null_a, null_b) if outer else null_a ^ null_b
        both = np.logical_and.outer(null_a, null_b) if outer else null_a & null_b
        first[mismatch] = 1.0
        first[both] = 0.0
    return first


def _category_mismatch(plans: list[_Column], a: _Side, b: _Side, j: int, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Category distance of sparse column j for the pairs (a[ia], b[ib]) (group membership where released)."""
    column = [c for c in plans if not c.numeric and not c.dense][j]
    code_a, code_b = a.codes[j][ia], b.codes[j][ib]
    if column.membership is not None and (a.released or b.released):
        if a.released:
            return column.membership[code_a, code_b].astype(np.float64)
        return column.membership[code_b, code_a].astype(np.float64)
    return (code_a != code_b).astype(np.float64)


def _label_tables(plans: list[_Column], released: _Side, real: _Side) -> tuple[np.ndarray, np.ndarray] | None:
    """Squared distances over the generalised columns of every released label combination to every real row.

    Returns the table (combinations x real rows, float32) and the combination
    of each released row, or None when no column is generalised. A release
    holds few distinct combinations of labels (its equivalence classes), so
    one gathered row per pair replaces a computation per column.
    """
    if not released.label_codes:
        return None
    combos, combo_of_row = np.unique(np.column_stack(released.label_codes), axis=0, return_inverse=True)
    table = np.zeros((combos.shape[0], real.n), dtype=np.float32)
    sparse_numeric = [c.name for c in plans if c.numeric and not c.dense]
    sparse_category = [c.name for c in plans if not c.numeric and not c.dense]
    for j, column in enumerate(c for c in plans if c.generalised):
        if column.numeric:
            values = real.low[sparse_numeric.index(column.name)]
            per_label = _gap(released.label_low[j], released.label_high[j], values, values, outer=True)
        else:
            per_label = column.membership[:, real.codes[sparse_category.index(column.name)]]
        table += per_label[combos[:, j]]
    return table, combo_of_row.ravel()


def _block_sq_distances(a: _Side, b: _Side, rows: slice, labels: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Approximate (float32) squared distances of a block of rows of `a` to every row of `b`."""
    if a.released or b.released:
        block = a.left[rows] @ b.right.T
    else:
        block = a.real_left[rows] @ b.real_right.T
    if labels is not None:
        table, combo = labels
        if a.released:
            block += table[combo[rows]]
        else:
            block += np.take(np.ascontiguousarray(table[:, rows].T), combo, axis=1)
    for code_a, code_b in zip(a.wide_codes, b.wide_codes):
        block += np.not_equal.outer(code_a[rows], code_b)
    if not a.released and not b.released:
        for code_a, code_b in zip(a.gen_wide, b.gen_wide):
            block += np.not_equal.outer(code_a[rows], code_b)
    return block


def _pair_distances(plans: list[_Column], a: _Side, b: _Side, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Exact float64 distances between rows a[ia] and b[ib], pair by pair."""
    diff = a.dense[ia] - b.dense[ib]
    sq = np.einsum("ij,ij->i", diff, diff)
    for j in range(len(a.low)):
        sq += _gap(a.low[j][ia], a.high[j][ia], b.low[j][ib], b.high[j][ib], outer=False)
    for j in range(len(a.codes)):
        sq += _category_mismatch(plans, a, b, j, ia, ib)
    return np.sqrt(sq)


def _block_candidates(block: np.ndarray, k: int, tolerance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs to re-rank exactly: the k best of each row and any within `tolerance` of the k-th.

    `block` is overwritten.
    """
    count, m = block.shape
    k = min(k, m)
    rows = np.arange(count)
    chosen = []
    for _ in range(k):
        # The block is scratch: the best found so far are masked in place.
        best = block.argmin(axis=1)
        chosen.append(best)
        kth = block[rows, best]
        if len(chosen) < k:
            block[rows, best] = np.inf
    # Rows where another column is within rounding of the k-th best are
    # ambiguous: their close columns (at most RERANK more) are re-ranked too.
    close = (block <= (kth + tolerance)[:, None]).sum(axis=1) > 1
    qi = [np.repeat(rows, 1) for _ in chosen]
    cj = list(chosen)
    ambiguous = np.flatnonzero(close)
    if ambiguous.size:
        keep = min(m, k + RERANK)
        extra = np.argpartition(block[ambiguous], keep - 1, axis=1)[:, :keep] if keep < m else np.tile(np.arange(m), (ambiguous.size, 1))
        qi.append(np.repeat(ambiguous, extra.shape[1]))
        cj.append(extra.ravel())
    pairs = np.unique(np.column_stack([np.concatenate(qi), np.concatenate(cj)]), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _nearest(plans: list[_Column], a: _Side, b: _Side, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `b` for every row of `a`: exact distances (n x k, ascending) and indices.

    A float32 pass finds each row's k best candidates (and, where others lie
    within rounding of them, up to RERANK more); those are re-ranked with the
    exact float64 distance. Missing neighbours (b smaller than k) are inf.
    """
    n, m = a.n, b.n
    distances = np.full((n, k), np.inf, dtype=np.float64)
    indices = np.full((n, k), -1, dtype=np.int64)
    if m == 0 or n == 0:
        return distances, indices
    labels = None
    if a.released or b.released:
        labels = _label_tables(plans, *((a, b) if a.released else (b, a)))
        left, right = a.left, b.right
    else:
        left, right = a.real_left, b.real_right
    # float32 rounding of the expanded squares grows with the feature norms.
    norm_a = np.abs(left).sum(axis=1)
    scale_b = float(np.abs(right).sum(axis=1).max())
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, n))
        block = _block_sq_distances(a, b, rows, labels)
        qi, cj = _block_candidates(block, k, ROUNDING * (norm_a[rows] + scale_b + 1.0))
        exact = _pair_distances(plans, a, b, qi + start, cj)
        order = np.lexsort((cj, exact, qi))
        qi, cj, exact = qi[order], cj[order], exact[order]
        first = np.searchsorted(qi, np.arange(block.shape[0]))
        rank = np.arange(qi.size) - first[qi]
        take = rank < k
        distances[qi[take] + start, rank[take]] = exact[take]
        indices[qi[take] + start, rank[take]] = cj[take]
    return distances, indices


# --------------------------------------------------------------------------- sampling


@dataclass
class _Samples:
    """The row samples every measure of one audit reads, drawn once."""

    columns: list[str]
    plans: list[_Column]
    released: _Side
    train: _Side
    holdout: _Side
    members: _Side
    non_members: _Side
    reference: _Side
    sizes: dict[str, int]
    frames: dict[str, pl.DataFrame]
    warnings: list[str]


def _take(frame: pl.DataFrame, size: int, rng: np.random.Generator) -> pl.DataFrame:
    if frame.height <= size:
        return frame
    return frame[np.sort(rng.choice(frame.height, size=size, replace=False))]


def _check_inputs(released: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame, schema: TableSchema, tenant: str | None) -> tuple[list[str], list[str]]:
    for name, frame in (("released", released), ("train", train), ("holdout", holdout)):
        if not isinstance(frame, pl.DataFrame):
            raise InvalidDataError(
                f"the {name} table must be a polars DataFrame, got {type(frame).__name__}.",
                tenant=tenant,
                fix=f"load the {name} table with polars before auditing.",
            )
        if frame.height == 0:
            raise InvalidDataError(
                f"the {name} table is empty; the audit needs at least 1 row per table (and 30 or more for "
                "meaningful intervals).",
                tenant=tenant,
                fix=f"re-run the step that produces the {name} table, or upload a larger book.",
            )
    columns, missing = _compared_columns(released, train, holdout, schema)
    if not columns:
        raise InvalidDataError(
            "the released, train and holdout tables share no comparable column (identifiers and text are not compared).",
            tenant=tenant,
            fix="audit the released table against the train and holdout splits of the same tape and schema.",
        )
    return columns, missing


def _draw(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int,
    seed: int,
    tenant: str | None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> _Samples:
    """Deduplicate, sample at equal sizes, fit the column plan and encode every sample."""
    columns, missing = _check_inputs(released, train, holdout, schema, tenant)
    notes: list[str] = []
    if missing:
        notes.append(f"columns left out of the audit because a table lacks them: {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    rel, tr, ho = (f.select(columns) for f in (released, train, holdout))
    rel_u, tr_u, ho_u = (f.unique(maintain_order=True) for f in (rel, tr, ho))
    n_side = min(sample_size, tr_u.height, ho_u.height)
    released_s = _take(rel_u, sample_size, rng)
    train_s, holdout_s = _take(tr_u, n_side, rng), _take(ho_u, n_side, rng)
    # Membership inference reads the tables as they are (no deduplication): a
    # row repeated across train and holdout must look the same to the attack
    # whether it is scored as a member or as a non-member.
    n_eval = min(sample_size // 2, tr.height, ho.height // 2)
    order = rng.permutation(ho.height)
    non_members = ho[np.sort(order[:n_eval])]
    reference = ho[np.sort(order[n_eval:n_eval + sample_size])]
    members = _take(tr, n_eval, rng)
    plans = _plan(columns, schema, released_s, [train_s, holdout_s, members, non_members, reference], generalisations)

    def enc(frame: pl.DataFrame, is_released: bool = False) -> _Side:
        return _encode(frame, plans, schema, released=is_released, tenant=tenant)

    sizes = {
        "released_rows": released.height, "train_rows": train.height, "holdout_rows": holdout.height,
        "released_unique": rel_u.height, "train_unique": tr_u.height, "holdout_unique": ho_u.height,
        "released_sample": released_s.height, "train_sample": train_s.height, "holdout_sample": holdout_s.height,
        "mia_members": members.height, "mia_non_members": non_members.height, "mia_reference": reference.height,
        "compared_columns": len(columns),
    }
    if n_side < 30:
        notes.append(
            f"only {n_side} unique rows per real table: distance figures are noisy and their intervals are wide; "
            "the audit needs at least 30 rows per table for figures worth certifying"
        )
    # A record whose compared values another borrower of the tape shares identifies no one: a released row equal
    # to it is a coincidence of common values (a zero balance, a round age), as likely against the holdout. Only
    # a copy of a record that is unique in the tape discloses a borrower, so exact matches are sought among those.
    counts = pl.concat([tr, ho], how="vertical_relaxed").group_by(columns).agg(pl.len().alias("__copies"))
    unique_records = counts.filter(pl.col("__copies") == 1).drop("__copies")

    def unique_in_tape(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(unique_records, on=columns, how="semi", nulls_equal=True)

    frames = {"released": released_s, "train": train_s, "holdout": holdout_s, "train_all": unique_in_tape(tr),
              "holdout_all": unique_in_tape(ho)}
    return _Samples(
        columns, plans, enc(released_s, True), enc(train_s), enc(holdout_s), enc(members), enc(non_members),
        enc(reference), sizes, frames, notes,
    )


# --------------------------------------------------------------------------- statistics


def _wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (successes may be fractional for ties)."""
    from scipy.stats import norm

    if n <= 0:
        return 0.0, 1.0
    return _wilson_z(successes, n, float(norm.ppf(0.5 + confidence / 2)))


def _wilson_z(successes: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion at normal quantile `z` (n > 0)."""
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _difference_bounds(s_m: float, n_m: int, s_c: float, n_c: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score bounds of p_members - p_controls (each one-sided at quantile `z`).

    It keeps its coverage where a rate is near 0 or 1 (a copied release guesses
    every member), where the Wald interval collapses (Newcombe, 1998, method 10).
    """
    p_m, p_c = s_m / n_m, s_c / n_c
    low_m, high_m = _wilson_z(s_m, n_m, z)
    low_c, high_c = _wilson_z(s_c, n_c, z)
    difference = p_m - p_c
    low = difference - math.sqrt((p_m - low_m) ** 2 + (high_c - p_c) ** 2)
    high = difference + math.sqrt((high_m - p_m) ** 2 + (p_c - low_c) ** 2)
    return low, high


def _detectable_risk(p_c: float, n_m: int, n_c: int, margin: float, z: float, z_power: float) -> float | None:
    """The smallest risk the test flags with `DETECTION_POWER` (normal approximation), None above 1."""
    room = 1.0 - p_c
    for risk in np.linspace(max(margin, 0.0), 1.0, 201):
        p_m = p_c + risk * room
        se = math.sqrt(p_m * (1 - p_m) / n_m + p_c * room / n_c)
        if se == 0.0:
            if risk * room > margin * room:
                return float(risk)
            continue
        if (risk - margin) * room / se - z >= z_power:
            return float(risk)
    return None


def leak_test(member_successes: float, members: int, control_successes: float, controls: int, margin: float) -> dict[str, Any]:
    """Does an attack succeed on members (train records) more than on controls (holdout records)?

    The risk is anonymeter's residual risk, (p_members - p_controls) /
    (1 - p_controls): the share of what an attacker could not get from other
    people's data that the release gives away. Its bounds are Newcombe's
    one-sided 95 % bounds of the difference divided by 1 - p_controls.

    Args:
        member_successes, members: attacks on train records and how many succeeded.
        control_successes, controls: the same on holdout records.
        margin: the risk the tenant tolerates.

    Returns:
        `outcome`: "fail" (lower bound above the margin), "pass" (upper bound
        within it), "inconclusive", or "unmeasured" (even a complete leak
        would not put the lower bound above the margin at these counts, or the
        controls leave no room: every control attack succeeds), with `reason`
        for the last; `risk`, `risk_low`, `risk_high`, the two rates, the
        counts, `margin` and `detectable_risk` (the smallest risk flagged with
        80 % power, None when not even a complete leak is).
    """
    from scipy.stats import norm

    z = float(norm.ppf(ONE_SIDED_CONFIDENCE))
    z_power = float(norm.ppf(DETECTION_POWER))
    out: dict[str, Any] = {"members": int(members), "controls": int(controls), "margin": float(margin)}
    if members <= 0 or controls <= 0:
        return {**out, "outcome": "unmeasured", "reason": "no attack was run"}
    p_m, p_c = member_successes / members, control_successes / controls
    room = 1.0 - p_c
    out.update(member_rate=float(p_m), control_rate=float(p_c))
    if room <= 0.0:
        return {**out, "outcome": "unmeasured",
                "reason": "the attack succeeds on every control record, so no excess over it can be measured"}
    low, high = _difference_bounds(member_successes, members, control_successes, controls, z)
    full_low, _ = _difference_bounds(members, members, control_successes, controls, z)
    out.update(
        risk=float((p_m - p_c) / room),
        risk_low=float(max(low / room, -1.0)),
        risk_high=float(min(high / room, 1.0)),
        detectable_risk=_detectable_risk(p_c, members, controls, margin, z, z_power),
    )
    if out["risk_low"] > margin:
        out["outcome"] = "fail"
    elif full_low / room <= margin:
        # A rule that could not fail even on a complete leak has measured nothing.
        out.update(outcome="unmeasured", reason=(
            f"{members} members and {controls} controls with a control success rate of {p_c:.3g} cannot show a "
            f"risk above {margin:.3g} even if every member were guessed"
        ))
    elif out["risk_high"] <= margin:
        out["outcome"] = "pass"
    else:
        out["outcome"] = "inconclusive"
    return out


def _auc_delong(positives: np.ndarray, negatives: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """AUC with its DeLong confidence interval (`models.risk.pd_models.auc_interval`), widened on small samples."""
    from scipy.stats import norm

    from models.risk.pd_models import auc_interval

    m, n = positives.size, negatives.size
    labels = np.concatenate([np.ones(m, dtype=bool), np.zeros(n, dtype=bool)])
    auc, low, high = auc_interval(labels, np.concatenate([positives, negatives]), float(norm.ppf(0.5 + confidence / 2)))
    if min(m, n) < SMALL_SAMPLE:
        # DeLong's variance collapses to 0 at perfect separation and is
        # optimistic on small samples; a Wilson interval on the smaller group
        # size keeps the interval honest there.
        w_low, w_high = _wilson(auc * min(m, n), min(m, n), confidence)
        low, high = min(low, w_low), max(high, w_high)
    return auc, low, high


def _tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, fpr: float) -> float:
    """TPR of the threshold that flags at most floor(fpr * n) non-members (strictly above it)."""
    allowed = int(math.floor(fpr * negatives.size + 1e-9))
    if allowed >= negatives.size:
        return 1.0
    threshold = -np.partition(-negatives, allowed)[allowed]
    return float(np.mean(positives > threshold))


def _attack_summary(positives: np.ndarray, negatives: np.ndarray, *, n_bootstrap: int, rng: np.random.Generator) -> dict[str, Any]:
    auc, auc_low, auc_high = _auc_delong(positives, negatives)
    fpr_used = max(FPR_TARGET, 1.0 / negatives.size)
    tpr = _tpr_at_fpr(positives, negatives, fpr_used)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        pos = positives[rng.integers(0, positives.size, positives.size)]
        neg = negatives[rng.integers(0, negatives.size, negatives.size)]
        boot[b] = _tpr_at_fpr(pos, neg, fpr_used)
    tail = (1 - CONFIDENCE) / 2
    return {
        "auc": auc,
        "auc_ci": [auc_low, auc_high],
        "tpr_at_fpr": tpr,
        "tpr_ci": [float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))],
        "fpr": fpr_used,
        "fpr_resolvable": fpr_used <= FPR_TARGET,
    }


# --------------------------------------------------------------------------- distance to closest record


# Past this many candidate pairs the exact-match check against whole tables
# gives way to the check on the samples (a table of few, repeated values).
MAX_JOIN_PAIRS = 5_000_000


def _key_frame(frame: pl.DataFrame, plans: list[_Column], schema: TableSchema) -> pl.DataFrame:
    """The non-generalised columns as join keys: numbers as floats, categories as canonical strings."""
    data = {}
    for column in plans:
        if column.generalised:
            continue
        series = frame.get_column(column.name)
        if column.numeric:
            data[column.name] = pl.Series(column.name, _numeric_values(series), dtype=pl.Float64, nan_to_null=True)
        else:
            data[column.name] = pl.Series(column.name, _category_strings(series, schema[column.name].type), dtype=pl.String)
    return pl.DataFrame(data)


def _matches_whole_table(samples: "_Samples", schema: TableSchema, table: pl.DataFrame) -> np.ndarray | None:
    """Which sampled released rows are at distance 0 from some row of the whole `table`.

    Rows at distance 0 agree exactly on every non-generalised column, so a
    hash join on those finds the candidates and the generalised columns are
    then checked for coverage. None when there is no such column or the join
    would be too large (the sample-based figure stands then).
    """
    plans = samples.plans
    keys = [c.name for c in plans if not c.generalised]
    if not keys:
        return None
    released_keys = _key_frame(samples.frames["released"], plans, schema).with_row_index("__released")
    real_keys = _key_frame(table, plans, schema).with_row_index("__real")
    counts = real_keys.group_by(keys).agg(pl.len().alias("__count"))
    pairs = released_keys.join(counts, on=keys, how="inner", nulls_equal=True).get_column("__count").sum()
    if pairs is None or pairs == 0:
        return np.zeros(samples.released.n, dtype=bool)
    if pairs > MAX_JOIN_PAIRS:
        return None
    joined = released_keys.join(real_keys, on=keys, how="inner", nulls_equal=True).select("__released", "__real")
    if joined.height == 0:
        return np.zeros(samples.released.n, dtype=bool)
    ia = joined.get_column("__released").to_numpy().astype(np.int64)
    ib = joined.get_column("__real").to_numpy().astype(np.int64)
    covered = np.ones(ia.size, dtype=bool)
    sparse_numeric = [c.name for c in plans if c.numeric and not c.dense]
    for column in plans:
        if not column.generalised:
            continue
        values = table.get_column(column.name)[ib]
        if column.numeric:
            j = sparse_numeric.index(column.name)
            x = (_numeric_values(values) - column.center) / column.scale
            low, high = samples.released.low[j][ia], samples.released.high[j][ia]
            gap = _gap(low, high, x, x, outer=False)
            covered &= gap <= TIE_TOLERANCE
        else:
            index = {level: i for i, level in enumerate(column.levels)}
            strings = [MISSING if v is None else v for v in _category_strings(values, schema[column.name].type)]
            level = np.array([index.get(v, -1) for v in strings], dtype=np.int64)
            label = samples.released.codes[[c.name for c in plans if not c.numeric and not c.dense].index(column.name)][ia]
            known = level >= 0
            hit = np.zeros(ia.size, dtype=bool)
            hit[known] = column.membership[label[known], level[known]] == 0.0
            covered &= hit
    matched = np.zeros(samples.released.n, dtype=bool)
    matched[ia[covered]] = True
    return matched


def _dcr_from(samples: _Samples, schema: TableSchema) -> dict[str, Any]:
    to_train, _ = _nearest(samples.plans, samples.released, samples.train, 2)
    to_holdout, _ = _nearest(samples.plans, samples.released, samples.holdout, 2)
    d_train, d_holdout = to_train[:, 0], to_holdout[:, 0]
    n = d_train.size
    tie = np.abs(d_train - d_holdout) <= TIE_TOLERANCE * (1.0 + np.maximum(d_train, d_holdout))
    closer = (d_train < d_holdout) & ~tie
    successes = float(closer.sum() + 0.5 * tie.sum())
    share = successes / n
    exact_train = d_train <= TIE_TOLERANCE
    exact_holdout = d_holdout <= TIE_TOLERANCE
    any_train = float(exact_train.mean())
    # Against the samples a copied row is missed when its source row was not
    # drawn; the hash join checks every record of the whole split that is
    # unique in the tape instead (see `_draw`), and replaces the sample figure.
    scope = "records unique in the tape, whole splits"
    for name in ("train_all", "holdout_all"):
        whole = _matches_whole_table(samples, schema, samples.frames[name])
        if whole is None:
            scope = "samples, any record (the join over the whole splits was too large)"
        elif name == "train_all":
            exact_train = whole
        else:
            exact_holdout = whole

    def ratio(d: np.ndarray) -> np.ndarray:
        # Two neighbours at distance 0 (possible when generalised labels cover
        # several real rows) are equally close: ratio 1.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(d[:, 1] > 0, d[:, 0] / d[:, 1], 1.0)
        return out[np.isfinite(out)]

    nndr_train, nndr_holdout = ratio(to_train), ratio(to_holdout)

    def quantile(values: np.ndarray, q: float) -> float | None:
        finite = values[np.isfinite(values)]
        return float(np.quantile(finite, q)) if finite.size else None

    return {
        "metric": "euclidean norm of per-column distances (numeric |a-b|/IQR, category mismatch 1, null vs value 1, "
        "generalised labels: distance to the range / group)",
        "share_closer_to_train": share,
        "share_ci": list(_wilson(successes, n)),
        "ties": int(tie.sum()),
        "exact_match_rate": float(exact_train.mean()),
        "exact_matches": int(exact_train.sum()),
        "exact_match_rate_holdout": float(exact_holdout.mean()),
        "exact_match_rate_any_sampled_train_row": any_train,
        **_coincidences(int(exact_train.sum()), int(exact_holdout.sum()), samples, n),
        "exact_match_scope": scope,
        "median_dcr_train": quantile(d_train, 0.5),
        "median_dcr_holdout": quantile(d_holdout, 0.5),
        "p05_dcr_train": quantile(d_train, 0.05),
        "p05_dcr_holdout": quantile(d_holdout, 0.05),
        "nndr_median_train": quantile(nndr_train, 0.5),
        "nndr_median_holdout": quantile(nndr_holdout, 0.5),
        "nndr_p05_train": quantile(nndr_train, 0.05),
        "nndr_p05_holdout": quantile(nndr_holdout, 0.05),
        "n_released": n,
        "n_train": samples.train.n,
        "n_holdout": samples.holdout.n,
    }


def _coincidences(train_matches: int, holdout_matches: int, samples: _Samples, n: int) -> dict[str, Any]:
    """How many exact matches coincidence explains, from the holdout's, and the copies beyond it.

    An honest generator matches a record of the train split no more often than
    one of the holdout, record for record, so the holdout's matches scaled by
    the ratio of unique records predict the train's coincidental matches. The
    holdout count is small, so its upper 95 % Poisson bound is scaled, and
    matches beyond the 95 % Poisson quantile of that prediction are copies.
    Where nothing matches the holdout, coincidence is not shown possible: the
    prediction is 0 and any match is a copy.
    """
    from scipy.stats import chi2, poisson

    unique_train, unique_holdout = samples.frames["train_all"].height, samples.frames["holdout_all"].height
    ratio = unique_train / unique_holdout if unique_holdout else 0.0
    expected = holdout_matches * ratio
    upper = chi2.ppf(CONFIDENCE, 2 * (holdout_matches + 1)) / 2 if holdout_matches else 0.0
    explained = float(poisson.ppf(CONFIDENCE, upper * ratio)) if upper * ratio > 0 else 0.0
    return {
        "unique_train_records": unique_train,
        "unique_holdout_records": unique_holdout,
        "exact_matches_holdout": holdout_matches,
        "coincidences_expected": expected,
        "coincidences_explained": explained,
        "exact_copy_rate": max(0.0, train_matches - explained) / n if train_matches > explained else 0.0,
    }


def distance_to_closest_record(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int = 10_000,
    seed: int = 0,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Distance to closest record of the released rows, train against holdout.

    Duplicate rows are removed from each table, then `sample_size` released rows
    and min(sample_size, unique train, unique holdout) rows of each real table
    are drawn with `seed`, so train and holdout are compared at the same size.
    `generalisations` is `AnonymizationResult.generalisations` (see `run_audit`).

    Returns:
        `share_closer_to_train` (ties count one half; 0.5 is ideal) with its
        Wilson interval `share_ci`, `exact_match_rate` (sampled released rows
        at distance 0 from a row of the whole train split, found by a hash
        join; `exact_match_scope` says "samples" where the join was not
        possible) and `exact_match_rate_holdout` as its baseline, DCR and nearest-neighbour distance ratio quantiles for train
        and holdout, the sample sizes and `warnings`.

    Raises:
        InvalidDataError: a table is empty or the tables share no comparable
            column, or a released numeric column holds a value that is neither
            a number nor a range label.
    """
    samples = _draw(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    result = _dcr_from(samples, schema)
    result["warnings"] = list(samples.warnings)
    return result


# --------------------------------------------------------------------------- membership inference


def _mia_from(samples: _Samples, *, seed: int, n_bootstrap: int) -> dict[str, Any]:
    n_members, n_non, n_ref = samples.members.n, samples.non_members.n, samples.reference.n
    if n_members < MIN_MIA_PER_GROUP or n_non < MIN_MIA_PER_GROUP or n_ref < 1:
        reason = (
            f"membership inference skipped: it needs at least {MIN_MIA_PER_GROUP} members, {MIN_MIA_PER_GROUP} "
            f"non-members and 1 reference row (the holdout gives non-members and reference), got {n_members}, "
            f"{n_non} and {n_ref}; upload a book with a larger holdout"
        )
        return {"skipped": reason, "warnings": [reason]}
    notes = []
    plans = samples.plans
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    d_syn = {}
    d_ref = {}
    for group, side in (("members", samples.members), ("non_members", samples.non_members)):
        d_syn[group] = _nearest(plans, side, samples.released, 1)[0][:, 0]
        d_ref[group] = _nearest(plans, side, samples.reference, 1)[0][:, 0]

    def density_ratio(group: str) -> np.ndarray:
        return np.log(d_ref[group] + DISTANCE_FLOOR) - np.log(d_syn[group] + DISTANCE_FLOOR)

    scores["density_ratio"] = (density_ratio("members"), density_ratio("non_members"))
    scores["distance"] = (-d_syn["members"], -d_syn["non_members"])
    rng = np.random.default_rng(seed + 1)
    attacks = {name: _attack_summary(pos, neg, n_bootstrap=n_bootstrap, rng=rng) for name, (pos, neg) in scores.items()}
    strongest = max(attacks, key=lambda name: attacks[name]["auc"])
    best = attacks[strongest]
    if not best["fpr_resolvable"]:
        notes.append(
            f"with {n_non} non-members a false-positive rate of {FPR_TARGET:.1%} cannot be resolved; the TPR is "
            f"reported at the lowest resolvable rate, {best['fpr']:.2%}"
        )
    if min(n_members, n_non) < SMALL_SAMPLE:
        notes.append(
            f"membership inference on {n_members} members and {n_non} non-members: its intervals are widened "
            "(Wilson on the smaller group) and remain indicative"
        )
    return {
        "attack": "density ratio of released to reference by nearest-neighbour distances (DOMIAS-style)",
        "strongest": strongest,
        "auc": best["auc"],
        "auc_ci": best["auc_ci"],
        "tpr_at_fpr": best["tpr_at_fpr"],
        "tpr_ci": best["tpr_ci"],
        "fpr": best["fpr"],
        "fpr_target": FPR_TARGET,
        "fpr_resolvable": best["fpr_resolvable"],
        "attacks": attacks,
        "n_members": n_members,
        "n_non_members": n_non,
        "n_reference": n_ref,
        "warnings": notes,
    }


def membership_inference(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int = 10_000,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Membership-inference attacks on the release: train rows against holdout rows.

    The holdout is split (seeded) into non-members and a disjoint reference
    sample of the population; members are an equal number of train rows. The
    density-ratio attack scores a record x by log d_ref(x) - log d_rel(x), the
    nearest-neighbour log-density ratio of the release to the population (up
    to a constant); the distance attack by -d_rel(x).

    Returns:
        For the strongest attack (highest AUC): `auc` with its DeLong interval
        `auc_ci`, `tpr_at_fpr` at `fpr` (0.1 %, or the lowest rate the number of
        non-members resolves, with `fpr_resolvable` False) with a bootstrap
        interval `tpr_ci`; every attack's figures under `attacks`; the group
        sizes and `warnings`. `{"skipped": reason, ...}` when the holdout is too
        small to split.

    Raises:
        InvalidDataError: as `distance_to_closest_record`.
    """
    samples = _draw(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    result = _mia_from(samples, seed=seed, n_bootstrap=n_bootstrap)
    result["warnings"] = list(samples.warnings) + result["warnings"]
    return result


# --------------------------------------------------------------------------- attribute inference


def _inference_from(samples: _Samples, schema: TableSchema, secrets: list[str]) -> dict[str, Any]:
    if not secrets:
        return {"not_applicable": "the tape declares no default flag and no sensitive column, so there is no secret "
                "to infer; declare target or sensitive_columns in tenant.yaml to have it measured"}
    members, controls = samples.frames["train"], samples.frames["holdout"]
    smallest = min(samples.released.n, members.height, controls.height)
    if smallest < MIN_ANONYMETER_ROWS:
        return {"skipped": (
            f"attribute inference skipped: it needs at least {MIN_ANONYMETER_ROWS} unique rows in each of the "
            f"released, train and holdout tables, the smallest has {smallest}; upload a larger book"
        )}
    aux = [plan for plan in samples.plans if plan.name not in secrets]
    if not aux:
        return {"skipped": "attribute inference skipped: every compared column is a secret, so the attacker knows "
                "nothing to link a record by"}
    released = samples.frames["released"]

    def encode(frame: pl.DataFrame, plans: list[_Column], is_released: bool) -> _Side:
        return _encode(frame, plans, schema, released=is_released, tenant=None)

    rel_aux = encode(released, aux, True)
    guesses = {}
    for name, frame in (("members", members), ("controls", controls)):
        guesses[name] = _nearest(aux, encode(frame, aux, False), rel_aux, 1)[1][:, 0]
    out: dict[str, Any] = {
        "attack": "the secret of the nearest released row on every other compared column",
        "tolerance": f"numeric secrets within {INFERENCE_TOLERANCE:g} IQR, categories equal (or covered by a group)",
        "secrets": {},
    }
    for secret in secrets:
        plan = [p for p in samples.plans if p.name == secret]
        rel_secret = encode(released, plan, True)
        entry: dict[str, Any] = {}
        for name, frame in (("members", members), ("controls", controls)):
            target = encode(frame, plan, False)
            rows = np.arange(target.n)
            distance = _pair_distances(plan, target, rel_secret, rows, guesses[name])
            entry[f"{name}_attacked"] = int(target.n)
            entry[f"{name}_guessed"] = int(np.sum(distance <= INFERENCE_TOLERANCE + TIE_TOLERANCE))
        rates = leak_test(entry["members_guessed"], entry["members_attacked"], entry["controls_guessed"],
                          entry["controls_attacked"], 0.0)
        entry.update({key: rates.get(key) for key in ("member_rate", "control_rate", "risk", "risk_low", "risk_high")})
        out["secrets"][secret] = entry
    return out


def attribute_inference(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sensitive_columns: list[str] | None = None,
    sample_size: int = 10_000,
    seed: int = 0,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """CreditTwin's own attribute-inference attack: is a member's secret easier to guess from the release?

    The attacker knows every compared column of a target record except the
    secrets (the target, the schema's sensitive columns and
    `sensitive_columns`), finds the nearest released row on those columns
    with the audit's mixed-type distance, and guesses that row's secret.
    Targets are the sampled train rows (members) and as many holdout rows
    (controls). It needs no optional library.

    Returns:
        `secrets`: per secret, attacked and guessed counts for members and
        controls, both rates, and the risk with its one-sided 95 % bounds (see
        `leak_test`); `{"not_applicable": reason}` without a secret;
        `{"skipped": reason}` when a table has fewer than 5 unique rows.

    Raises:
        InvalidDataError: as `distance_to_closest_record`, or a sensitive
            column is not audited.
    """
    samples = _draw(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    return _inference_from(samples, schema, _secrets(schema, samples.columns, sensitive_columns, tenant))


# --------------------------------------------------------------------------- anonymeter


def _label_for(values: np.ndarray, ranges: list[tuple[str, NumericRange]]) -> list[str | None]:
    """The released range label each real value falls in (the nearest when none contains it)."""
    lows = np.array([r.low for _, r in ranges])
    highs = np.array([r.high for _, r in ranges])
    out: list[str | None] = []
    for start in range(0, values.size, 4096):
        chunk = values[start:start + 4096]
        gap = np.maximum(np.maximum(lows[None, :] - chunk[:, None], chunk[:, None] - highs[None, :]), 0.0)
        # Among containing ranges prefer the narrowest, the most specific recoding.
        width = np.where(np.isfinite(highs - lows), highs - lows, np.inf)
        best = np.lexsort((np.broadcast_to(width, gap.shape), gap), axis=1)[:, 0]
        out.extend(None if np.isnan(v) else ranges[i][0] for v, i in zip(chunk, best))
    return out


def _anonymeter_frame(frame: pl.DataFrame, plans: list[_Column], schema: TableSchema, released_frame: pl.DataFrame, *, released: bool) -> "pd.DataFrame":
    """A pandas table whose columns have one dtype across released, train and holdout.

    Numeric columns are floats; generalised numeric columns are compared as
    strings: real values are replaced by the released range label that contains
    them, which is what an attacker knowing the recoding would do. Categories
    are strings (a group label for a real category it covers), nulls "<missing>".
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for column in plans:
        series = frame.get_column(column.name)
        ctype = schema[column.name].type
        if column.numeric and not column.generalised:
            data[column.name] = _numeric_values(series)
        elif column.numeric:
            # sorted: polars' unique() has no fixed order, and ties between equally good ranges go to the first
            labels = sorted(v for v in released_frame.get_column(column.name).cast(pl.String).unique().to_list() if v is not None)
            if released:
                values = series.cast(pl.String).to_list()
            else:
                ranges = []
                for label in labels:
                    parsed = parse_generalised_label(label)
                    if label.strip() == MISSING:
                        continue
                    if isinstance(parsed, NumericRange):
                        ranges.append((label, parsed))
                    elif isinstance(parsed, CategoryGroup):
                        ranges.append((label, NumericRange(-math.inf, math.inf, False, False)))
                    else:
                        number = float(label)
                        ranges.append((label, NumericRange(number, number, True, True)))
                values = _label_for(_numeric_values(series), ranges) if ranges else [None] * frame.height
            data[column.name] = [MISSING if v is None else v for v in values]
        else:
            values = [MISSING if v is None else v for v in _category_strings(series, ctype)]
            if column.generalised and not released:
                # A real category becomes the first released label covering it
                # (labels are sorted, so the choice is stable).
                cover: dict[str, str] = {}
                any_label = next((label for label, members in column.groups.items() if members is None), None)
                for label in column.labels:
                    members = column.groups.get(label, frozenset([label]))
                    for member in members or ():
                        cover.setdefault(member, label)
                values = [cover.get(v, any_label or v) for v in values]
            data[column.name] = values
    return pd.DataFrame(data)


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for anonymeter (which samples through it), then restore it."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


def _risk(evaluator: Any, n_attacks: int) -> dict[str, Any]:
    results = evaluator.results(confidence_level=CONFIDENCE)
    risk = results.risk()
    return {
        "risk": float(risk.value),
        "ci": [float(risk.ci[0]), float(risk.ci[1])],
        "attack_rate": float(results.attack_rate.value),
        "baseline_rate": float(results.baseline_rate.value),
        "control_rate": None if results.control_rate is None else float(results.control_rate.value),
        "n_attacks": n_attacks,
        # The counts behind the rates: the policy tests members against controls on them (`leak_test`).
        "members_attacked": int(results.n_attacks_ori),
        "members_succeeded": int(results.n_success),
        "controls_attacked": int(results.n_attacks_control),
        "controls_succeeded": None if results.n_control is None else int(results.n_control),
    }


def _anonymeter_from(
    samples: _Samples, schema: TableSchema, *, n_attacks: int, secrets: list[str], seed: int, n_jobs: int, rows: int
) -> dict[str, Any]:
    try:
        from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
    except ImportError as error:
        # anonymeter pins numpy<1.27, so it cannot be a declared dependency and a plain `pip install -e .` lacks
        # it. CreditTwin's own attacks still run; anonymeter's second opinion is reported as not measured.
        reason = (
            f"not measured: anonymeter is not installed ({error}); install it beside CreditTwin with "
            f"`{ANONYMETER_INSTALL}` to add its singling-out, linkability and inference attacks"
        )
        return {"skipped": reason, "not_installed": True, "warnings": [reason]}

    rng = np.random.default_rng(seed + 2)
    rel_frame, train_frame, holdout_frame = (_take(samples.frames[name], rows, rng) for name in ("released", "train", "holdout"))
    smallest = min(rel_frame.height, train_frame.height, holdout_frame.height)
    if smallest < MIN_ANONYMETER_ROWS:
        reason = (
            f"anonymeter attacks skipped: they need at least {MIN_ANONYMETER_ROWS} unique rows in each of the "
            f"released, train and holdout tables, the smallest has {smallest}; upload a larger book"
        )
        return {"skipped": reason, "warnings": [reason]}
    notes: list[str] = []
    attacks = min(n_attacks, smallest)
    if attacks < n_attacks:
        notes.append(f"anonymeter ran {attacks} attacks per evaluator instead of {n_attacks}: the tables are smaller")
    syn = _anonymeter_frame(rel_frame, samples.plans, schema, rel_frame, released=True)
    ori = _anonymeter_frame(train_frame, samples.plans, schema, rel_frame, released=False)
    control = _anonymeter_frame(holdout_frame, samples.plans, schema, rel_frame, released=False)
    columns = list(syn.columns)
    out: dict[str, Any] = {"n_attacks": attacks, "n_requested": n_attacks}
    with py_warnings.catch_warnings(record=True) as caught, _seeded_global_numpy(seed):
        py_warnings.simplefilter("always")
        singling = SinglingOutEvaluator(
            ori=ori, syn=syn, control=control, n_attacks=attacks, n_cols=min(3, len(columns)),
            max_attempts=SINGLING_OUT_ATTEMPTS_PER_ATTACK * attacks, seed=seed,
        ).evaluate(mode="multivariate" if len(columns) > 1 else "univariate")
        out["singling_out"] = _risk(singling, attacks)
        if len(columns) >= 2:
            # The attacker holds two tables that share no column: the compared
            # columns, alternately dealt, keep both halves similar in content.
            aux = (columns[0::2], columns[1::2])
            linkability = LinkabilityEvaluator(ori=ori, syn=syn, control=control, aux_cols=aux, n_attacks=attacks, n_neighbors=1)
            out["linkability"] = _risk(linkability.evaluate(n_jobs=n_jobs), attacks)
            out["linkability"]["aux_cols"] = [list(aux[0]), list(aux[1])]
        else:
            notes.append("linkability skipped: it needs at least two compared columns to split between two tables")
        inference: dict[str, Any] = {}
        for secret in secrets:
            aux_cols = [c for c in columns if c not in secrets]
            if not aux_cols:
                notes.append(f"inference on '{secret}' skipped: no column is left for the attacker to know")
                continue
            regression = bool(schema[secret].type is ColumnType.NUMERIC and not next(p for p in samples.plans if p.name == secret).generalised)
            evaluator = InferenceEvaluator(
                ori=ori, syn=syn, control=control, aux_cols=aux_cols, secret=secret, regression=regression, n_attacks=attacks,
            )
            inference[secret] = _risk(evaluator.evaluate(n_jobs=n_jobs), attacks)
        out["inference"] = inference
    seen = set()
    for item in caught:
        text = f"anonymeter: {item.message}"
        if text not in seen:
            seen.add(text)
            notes.append(text)
    out["warnings"] = notes
    return out


def _secrets(schema: TableSchema, columns: list[str], sensitive_columns: list[str] | None, tenant: str | None) -> list[str]:
    secrets = []
    for name in ([schema.target] if schema.target else []) + schema.with_role("sensitive") + list(sensitive_columns or []):
        if name and name not in secrets:
            if name not in columns:
                raise InvalidDataError(
                    "a sensitive column is not among the audited columns of the released, train and holdout tables.",
                    tenant=tenant,
                    column=name,
                    fix="declare as sensitive only columns of the loans table that the release keeps.",
                )
            secrets.append(name)
    return secrets


def anonymeter_risks(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    n_attacks: int = 2000,
    sensitive_columns: list[str] | None = None,
    sample_size: int = 10_000,
    seed: int = 0,
    n_jobs: int = -1,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Anonymeter's singling-out, linkability and inference risks, holdout as control.

    The tables are deduplicated and sampled as for `distance_to_closest_record`.
    Singling out is multivariate on 3 columns; linkability splits the compared
    columns alternately into the attacker's two tables; inference targets the
    default flag (`schema.target`), the schema's sensitive columns and
    `sensitive_columns`, each guessed from all non-secret columns (a numeric
    secret counts as guessed within anonymeter's 5 % tolerance). Generalised
    columns are compared as strings (see `_anonymeter_frame`). Anonymeter
    samples through NumPy's global generator, which is seeded with `seed` for
    the duration and restored after.

    Returns:
        `singling_out`, `linkability` and `inference` (one entry per secret),
        each with `risk`, its confidence interval `ci`, the attack, baseline and
        control success rates and `n_attacks`; `warnings`. `{"skipped": reason}`
        when a table has fewer than 5 unique rows.

    Raises:
        InvalidDataError: as `distance_to_closest_record`, or a sensitive
            column is not audited.
    """
    samples = _draw(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    secrets = _secrets(schema, samples.columns, sensitive_columns, tenant)
    result = _anonymeter_from(
        samples, schema, n_attacks=n_attacks, secrets=secrets, seed=seed, n_jobs=n_jobs, rows=sample_size
    )
    result["warnings"] = list(samples.warnings) + result["warnings"]
    return result


# --------------------------------------------------------------------------- differential privacy


def _check_dp(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, (int, float)) and epsilon >= 0 and not math.isnan(epsilon)):
        raise InvalidDataError(
            f"epsilon must be a non-negative number, got {epsilon!r}.",
            fix="pass the epsilon spent according to the tenant's privacy ledger.",
        )
    if not (isinstance(delta, (int, float)) and 0 <= delta <= 1):
        raise InvalidDataError(
            f"delta must be between 0 and 1, got {delta!r}.",
            fix="pass the delta spent according to the tenant's privacy ledger.",
        )


def dp_tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """The largest true-positive rate an (epsilon, delta)-DP release allows at false-positive rate `fpr`.

    From the hypothesis-testing view of DP (Kairouz et al., 2015), any attack
    on an (epsilon, delta)-DP mechanism satisfies TPR <= e^eps * FPR + delta and,
    applied to the complementary test (swap the two neighbouring datasets),
    1 - FPR <= e^eps * (1 - TPR) + delta, that is
    TPR <= 1 - e^-eps * (1 - delta - FPR).

    Raises:
        InvalidDataError: epsilon is negative or delta outside [0, 1].
    """
    _check_dp(epsilon, delta)
    if math.isinf(epsilon):
        return 1.0
    a = math.exp(epsilon)
    return float(min(1.0, a * fpr + delta, 1.0 - (1.0 - delta - fpr) / a))


def dp_auc_bound(epsilon: float, delta: float) -> float:
    """The largest membership-inference AUC an (epsilon, delta)-DP release allows.

    The upper boundary of the DP trade-off region is
    f(a) = min(1, e^eps a + delta, 1 - e^-eps (1 - delta - a)) for a
    false-positive rate a (see `dp_tpr_bound`). Its two sloped pieces meet at
    a* = (1 - delta) / (e^eps + 1) and it reaches 1 at a = 1 - delta, so

        AUC_max = integral_0^1 f(a) da = delta + (1 - delta) (e^eps + delta) / (e^eps + 1).

    eps = 0 and delta = 0 give 0.5 (no attack beats chance); eps -> inf or
    delta = 1 give 1; pure eps-DP gives e^eps / (1 + e^eps).

    Raises:
        InvalidDataError: epsilon is negative or delta outside [0, 1].
    """
    _check_dp(epsilon, delta)
    if math.isinf(epsilon):
        return 1.0
    a = math.exp(epsilon)
    return float(min(1.0, delta + (1.0 - delta) * (a + delta) / (a + 1.0)))


def _dp_section(dp_spent: tuple[float, float] | None, mia: dict[str, Any], tenant: str | None) -> dict[str, Any] | None:
    if dp_spent is None:
        return None
    try:
        epsilon, delta = (float(v) for v in dp_spent)
    except (TypeError, ValueError):
        raise InvalidDataError(
            f"dp_spent must be a pair (epsilon, delta), got {dp_spent!r}.",
            tenant=tenant,
            fix="pass the totals read from the tenant's privacy ledger.",
        ) from None
    try:
        bound = dp_auc_bound(epsilon, delta)
    except InvalidDataError as error:
        raise error.with_context(tenant=tenant)
    section = {
        "epsilon": epsilon,
        "delta": delta,
        "auc_bound": bound,
        "tpr_bound_at_fpr": dp_tpr_bound(epsilon, delta, FPR_TARGET),
        "fpr": FPR_TARGET,
        "empirical_auc": mia.get("auc"),
        "empirical_tpr_at_fpr": mia.get("tpr_at_fpr"),
    }
    if "auc_ci" in mia:
        # The bound holds for the true AUC, so only an interval wholly above it
        # is evidence that the accounting or the mechanism is wrong.
        section["empirical_within_bound"] = bool(mia["auc_ci"][0] <= bound)
    return section


# --------------------------------------------------------------------------- k and l


def measure_anonymity(released: pl.DataFrame, schema: TableSchema, sensitive_columns: list[str] | None = None) -> dict[str, Any]:
    """Achieved k (smallest class over the quasi-identifiers) and l, overall and per sensitive column.

    Quasi-identifiers are the schema's `quasi_identifier` columns present in
    the release; sensitive columns are those `models.privacy.anonymize.l_diversity_scope`
    picks (the target, the schema's `sensitive` columns and `sensitive_columns`)
    that the release carries and that are not quasi-identifiers. Per column,
    l is the fewest distinct non-null values in a class (``l_by_column``);
    ``l`` is the smallest of them. A figure is None when its columns are absent.
    """
    qis = [c for c in schema.with_role("quasi_identifier") if c in released.columns]
    scope = l_diversity_scope(schema, released.columns, 1, declared=list(sensitive_columns or []))
    sensitive = [name for name in scope.columns if name not in qis]
    result: dict[str, Any] = {"quasi_identifiers": qis, "sensitive": sensitive, "k": None, "l": None,
                              "l_by_column": {}, "sensitive_not_released": list(scope.not_released), "classes": None}
    if not qis or released.height == 0:
        return result
    aggregations = [pl.len().alias("__size")]
    aggregations += [pl.col(c).drop_nulls().n_unique().alias(f"__l_{i}") for i, c in enumerate(sensitive)]
    classes = released.group_by(qis).agg(aggregations)
    result["k"] = int(classes.get_column("__size").min())
    result["classes"] = classes.height
    result["l_by_column"] = {c: int(classes.get_column(f"__l_{i}").min()) for i, c in enumerate(sensitive)}
    if sensitive:
        result["l"] = min(result["l_by_column"].values())
    return result


# --------------------------------------------------------------------------- the whole audit


def run_audit(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    config: AuditConfig,
    sensitive_columns: list[str] | None = None,
    dp_spent: tuple[float, float] | None = None,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> AuditReport:
    """Audit a released portfolio against its train split (members) and holdout (non-members).

    Samples are drawn once (see `distance_to_closest_record` and
    `membership_inference`) and shared by every measure.

    Args:
        released: the released (anonymized) table; generalised quasi-identifier
            columns may hold range or group labels.
        train: the train split the generator was fitted on.
        holdout: the holdout split the generator never saw.
        schema: the tape's schema (identifiers and text are not compared).
        config: sampling, seed and attack settings.
        sensitive_columns: secrets for anonymeter's inference attack and for l,
            beside the target and the schema's sensitive columns.
        dp_spent: the (epsilon, delta) spent on this release per the ledger, or
            None when the tenant is not under DP.
        tenant: named in errors.
        generalisations: `AnonymizationResult.generalisations` of the release;
            it names the members of large category groups (whose labels are
            hashed); without it such a label matches no real category.

    Returns:
        An `AuditReport`; every caveat (small samples, skipped attacks, an
        unresolvable 0.1 % FPR) is in its `warnings`.

    Raises:
        InvalidDataError: an empty table, no comparable column, an unreadable
            released label, a bad setting, a sensitive column not audited, or a
            malformed `dp_spent`.
    """
    config.validate(tenant)
    samples = _draw(
        released, train, holdout, schema,
        sample_size=config.sample_size, seed=config.seed, tenant=tenant, generalisations=generalisations,
    )
    secrets = _secrets(schema, samples.columns, sensitive_columns, tenant)
    notes = list(samples.warnings)
    dcr = _dcr_from(samples, schema)
    mia = _mia_from(samples, seed=config.seed, n_bootstrap=config.n_bootstrap)
    notes.extend(mia.pop("warnings"))
    inference = _inference_from(samples, schema, secrets)
    notes.extend(value for key, value in inference.items() if key in ("skipped", "not_applicable"))
    if config.run_anonymeter:
        anonymeter = _anonymeter_from(
            samples, schema, n_attacks=config.n_attacks, secrets=secrets, seed=config.seed, n_jobs=config.n_jobs,
            rows=config.anonymeter_sample_size,
        )
        notes.extend(anonymeter.pop("warnings"))
    else:
        anonymeter = {"skipped": "not measured: anonymeter attacks disabled by the audit configuration "
                      "(audit.run_anonymeter: false)"}
    dp = _dp_section(dp_spent, mia, tenant)
    if dp is not None and dp.get("empirical_within_bound") is False:
        notes.append(
            f"the empirical MIA AUC interval lies above the bound {dp['auc_bound']:.3f} implied by epsilon="
            f"{dp['epsilon']:.4g}, delta={dp['delta']:.3g}: the privacy accounting or the DP mechanism is suspect"
        )
    return AuditReport(
        dcr=dcr,
        mia=mia,
        anonymeter=anonymeter,
        dp=dp,
        sizes=samples.sizes,
        warnings=notes,
        anonymity=measure_anonymity(released, schema, sensitive_columns),
        inference=inference,
    )


# --------------------------------------------------------------------------- policy


def _rule(rule: str, value: float | None, threshold: float | None, verdict: str, message: str, criterion: str) -> RuleResult:
    return RuleResult(rule=rule, value=value, threshold=threshold, passed=verdict != FAIL, message=message,
                      verdict=verdict, criterion=criterion)


def _unmeasured(rule: str, threshold: float | None, reason: str, criterion: str, policy: AuditPolicy,
                *, required: bool = True) -> RuleResult:
    if required and policy.require_measured:
        return _rule(rule, None, threshold, FAIL, f"{rule} not measured ({reason}); a release cannot be certified on it "
                     "(audit.require_measured)", criterion)
    why = "the policy does not require it (audit.require_measured: false)" if required else "it is a second opinion"
    return _rule(rule, None, threshold, WARN, f"{rule} not measured ({reason}); a warning because {why}", criterion)


def _at_most(rule: str, value: float | None, threshold: float, what: str, reason: str, policy: AuditPolicy) -> RuleResult:
    criterion = f"fails when the {what} is above {threshold:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _unmeasured(rule, threshold, reason, criterion, policy)
    passed = value <= threshold + 1e-12
    verdict = "within" if passed else "above"
    return _rule(rule, float(value), threshold, PASS if passed else FAIL,
                 f"{what} {value:.4g} is {verdict} the limit {threshold:.4g}", criterion)


def _leak_criterion(margin: float) -> str:
    return (
        "two-proportion test of the attack's success on training records against holdout records, risk = excess "
        f"success / holdout failure rate (one-sided {ONE_SIDED_CONFIDENCE:.0%} Newcombe bounds): fails when the lower "
        f"bound is above {margin:.4g}, passes when the upper bound is within it, otherwise warns (inconclusive at "
        "this size); not measured when even a complete leak could not show a risk above it"
    )


def _attack_rule(rule: str, what: str, counts: tuple[Any, Any, Any, Any], margin: float, policy: AuditPolicy,
                 *, required: bool) -> RuleResult:
    criterion = _leak_criterion(margin)
    if any(c is None for c in counts):
        return _unmeasured(rule, margin, "the attack did not run", criterion, policy, required=required)
    test = leak_test(*counts, margin)
    if test["outcome"] == "unmeasured":
        return _unmeasured(rule, margin, test["reason"], criterion, policy, required=required)
    figures = (
        f"{what}: risk {test['risk']:.3g} (one-sided {ONE_SIDED_CONFIDENCE:.0%} bounds {test['risk_low']:.3g} to "
        f"{test['risk_high']:.3g}; {test['member_rate']:.3g} of {test['members']} members against "
        f"{test['control_rate']:.3g} of {test['controls']} controls)"
    )
    detectable = test["detectable_risk"]
    power = (f"; this attack detects a risk of {detectable:.2g} or more with {DETECTION_POWER:.0%} power"
             if detectable is not None else "")
    if test["outcome"] == "fail":
        return _rule(rule, test["risk_low"], margin, FAIL,
                     f"{figures}: the lower bound is above the margin {margin:.4g}, evidence that the release gives "
                     "training records away", criterion)
    if test["outcome"] == "pass":
        return _rule(rule, test["risk_high"], margin, PASS,
                     f"{figures}: the upper bound is within the margin {margin:.4g}{power}", criterion)
    return _rule(rule, test["risk_high"], margin, WARN,
                 f"{figures}: inconclusive, neither above nor shown within the margin {margin:.4g} at this size; no "
                 f"evidence of a leak{power}", criterion)


def evaluate_policy(report: AuditReport, policy: AuditPolicy) -> list[RuleResult]:
    """Apply the tenant's policy to an audit report, one `RuleResult` per rule.

    Rules: exact-match rate, DCR share, MIA AUC (strongest attack); for each
    secret, CreditTwin's attribute-inference attack; anonymeter's
    singling-out, linkability and inference attacks when they ran; k and l
    when the policy sets them; and, under DP, that the empirical AUC interval
    does not lie above the DP bound. The attack rules are `leak_test`s (see
    the module docstring). Each result carries its verdict (pass, warn or
    fail) and its criterion in words; a failed rule's message says which
    figure broke which limit.
    """
    inference_margin = policy.max_inference_risk if policy.max_inference_risk is not None else policy.max_anonymeter_risk
    dcr = report.dcr
    copies = _at_most("exact_match_rate", dcr.get("exact_copy_rate", dcr.get("exact_match_rate")),
                      policy.max_exact_match_rate,
                      "share of released rows identical to a train record unique in the tape, beyond the matches "
                      "coincidence explains (from the holdout's)", "no distance figures", policy)
    if copies.value is not None and "exact_copy_rate" in dcr:
        copies.message += (f" ({dcr['exact_matches']} matches against {dcr['coincidences_expected']:.3g} expected by "
                           f"coincidence, up to {dcr['coincidences_explained']:.0f} explained)")
    results = [
        copies,
        _at_most("dcr_share", report.dcr.get("share_closer_to_train"), policy.max_dcr_share,
                 "share of released rows closer to train than to holdout", "no distance figures", policy),
        _at_most("mia_auc", report.mia.get("auc"), policy.max_mia_auc,
                 f"membership-inference AUC ({report.mia.get('strongest', 'no')} attack)",
                 report.mia.get("skipped", "no membership-inference figures"), policy),
    ]
    inference = report.inference or {"skipped": "the audit report has no attribute-inference figures"}
    if "not_applicable" in inference:
        results.append(_rule("inference", None, inference_margin, WARN,
                             f"attribute inference not applicable: {inference['not_applicable']}",
                             _leak_criterion(inference_margin)))
    elif "skipped" in inference:
        results.append(_unmeasured("inference", inference_margin, inference["skipped"], _leak_criterion(inference_margin),
                                   policy))
    else:
        for secret, entry in inference["secrets"].items():
            counts = (entry["members_guessed"], entry["members_attacked"], entry["controls_guessed"],
                      entry["controls_attacked"])
            results.append(_attack_rule(f"inference[{secret}]", f"guessing '{secret}' from the nearest released row",
                                        counts, inference_margin, policy, required=True))
    anonymeter = report.anonymeter
    if "skipped" in anonymeter:
        results.append(_unmeasured("anonymeter", policy.max_anonymeter_risk, anonymeter["skipped"],
                                   _leak_criterion(policy.max_anonymeter_risk), policy, required=False))
    else:
        risks = [("singling_out", anonymeter.get("singling_out")), ("linkability", anonymeter.get("linkability"))]
        risks += [(f"inference[{secret}]", risk) for secret, risk in (anonymeter.get("inference") or {}).items()]
        for name, risk in risks:
            margin = inference_margin if name.startswith("inference") else policy.max_anonymeter_risk
            risk = risk or {}
            counts = (risk.get("members_succeeded"), risk.get("members_attacked"), risk.get("controls_succeeded"),
                      risk.get("controls_attacked"))
            results.append(_attack_rule(f"anonymeter_{name}", f"anonymeter {name}", counts, margin, policy,
                                        required=False))
    sensitive = report.anonymity.get("sensitive")
    for rule, required, achieved, what in (
        ("k_anonymity", policy.k, report.anonymity.get("k"), "smallest equivalence class over the quasi-identifiers"),
        ("l_diversity", policy.l, report.anonymity.get("l"), "fewest distinct sensitive values in a class"),
    ):
        if required is None:
            continue
        criterion = f"fails when the {what} is below {required}"
        if rule == "l_diversity" and sensitive is not None and not sensitive:
            # Without a sensitive attribute there is nothing for l to protect: an l above 1 asked for is not
            # a pass, not a failure either; l = 1 asks for nothing.
            not_applicable = LDiversityScope(int(required), ()).not_applicable
            results.append(_rule(rule, None, float(required), WARN if not_applicable else PASS,
                                 f"l-diversity {not_applicable or 'not required: privacy.l is 1'}", criterion))
            continue
        if achieved is None:
            results.append(_unmeasured(rule, float(required), "no quasi-identifier or sensitive column in the release",
                                       criterion, policy))
            continue
        passed = achieved >= required
        per_column = (report.anonymity.get("l_by_column") or {}) if rule == "l_diversity" else {}
        detail = f" ({', '.join(f'{c}: {v}' for c, v in per_column.items())})" if per_column else ""
        verdict = f"{'meeting' if passed else 'below'} the required {required}"
        results.append(_rule(rule, float(achieved), float(required), PASS if passed else FAIL,
                             f"{what} is {achieved}{detail}, {verdict}", criterion))
    if report.dp is not None and "empirical_within_bound" in report.dp:
        bound = report.dp["auc_bound"]
        low = report.mia["auc_ci"][0]
        passed = report.dp["empirical_within_bound"]
        results.append(_rule("dp_auc_bound", float(low), float(bound), PASS if passed else FAIL,
                             f"lower bound {low:.4g} of the empirical AUC is {'within' if passed else 'above'} the DP "
                             f"bound {bound:.4g} (epsilon={report.dp['epsilon']:.4g}, delta={report.dp['delta']:.3g})",
                             "fails when the lower 95% bound of the membership AUC is above the largest AUC the "
                             "spent (epsilon, delta) allows"))
    return results


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
