"""Tenant ids and the tenant contract (`tenant.yaml`).

A tenant id comes from a folder name in the landing zone, so it is untrusted:
`validate_tenant_id` is called before an id becomes a partition key, a path or a
query value. `load_tenant_config` parses `tenant.yaml` strictly: unknown keys,
wrong types and columns that do not exist are errors naming the key and the file.
A linked file, one over 64 KiB, and one whose YAML aliases expand past 100,000
values are refused before their content is used, and messages stay short.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.risk.drift import DriftConfig
from models.errors import InvalidTenantError, TenantConfigError
from models.tape.schema import TENANT_FILE
from models.risk.config import RiskConfig
from models.risk.stress import StressConfig
from models.quality.validation import ValidationThresholds

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A month 'YYYY-MM' (a day may follow: '2023-12-31'), years 1900-2199.
_MONTH = re.compile(r"(19|20|21)\d\d-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?")
# Bounds on a tenant.yaml, checked before its content is used: the documented contract is a few dozen
# lines, so these only stop files that could exhaust memory (a huge file, a "billion laughs" of aliases).
MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_NODES = 100_000
MAX_PROBLEMS_SHOWN = 10  # a validation message lists this many problems, then counts the rest


def validate_tenant_id(value: object) -> str:
    """Return `value` when it is a valid tenant id, else raise `InvalidTenantError` saying why.

    Valid ids match ``^[a-z0-9][a-z0-9_-]{0,62}$``: ASCII lower-case letters,
    digits, '-' and '_', starting with a letter or digit, at most 63 characters.
    """
    if not isinstance(value, str):
        raise InvalidTenantError(
            f"tenant id must be a string, got {type(value).__name__}.",
            fix="name the landing folder with lower-case letters, digits, '-' or '_'.",
        )
    shown = ascii(value[:40]) + ("..." if len(value) > 40 else "")
    if _TENANT_ID.fullmatch(value):
        return value
    if not value:
        why = "it is empty"
    elif len(value) > 63:
        why = f"it is {len(value)} characters long (at most 63)"
    elif not value.isascii():
        bad = next(ch for ch in value if not ch.isascii())
        name = unicodedata.name(bad, "unnamed character")
        why = f"it contains the non-ASCII character U+{ord(bad):04X} ({name}); look-alike letters are refused"
    elif "/" in value or "\\" in value or ".." in value or value.startswith("."):
        why = "it contains a path separator or '..'"
    elif any(ch.isspace() for ch in value):
        why = "it contains white space"
    elif any(ch.isupper() for ch in value):
        why = "it contains upper-case letters"
    elif not value[0].isalnum():
        why = "it must start with a lower-case letter or a digit"
    else:
        bad = next(ch for ch in value if not (ch.isalnum() or ch in "-_"))
        why = f"it contains the character {bad!r}"
    raise InvalidTenantError(
        f"invalid tenant id {shown}: {why}.",
        fix=f"rename the landing folder to match {TENANT_ID_PATTERN}, e.g. 'acme-bank'.",
    )


_COLUMN_TYPES = Literal["numeric", "integer", "categorical", "boolean", "datetime", "identifier", "text"]
_Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class TargetSpec(_Strict):
    """The default flag: its column and the raw values that mean 'defaulted'."""

    column: str = Field(min_length=1)
    positive: _Scalar | list[_Scalar] = 1
    # Whether the flag is the event "the loan's history reaches default": true draws every synthetic history given
    # its loan's flag (under DP too: a declaration, not a statistic), false never does, null (the default) measures
    # it on the train split (`models.sequences.histories.default_flag_follows_history`; not under DP).
    from_history: bool | None = None

    @property
    def positive_values(self) -> list[Any]:
        return list(self.positive) if isinstance(self.positive, list) else [self.positive]


class PrivacySpec(_Strict):
    """Privacy settings: k-anonymity's k, l-diversity's l and the DP budget."""

    k: int = Field(default=5, ge=2, le=1000)
    l: int = Field(default=2, ge=1, le=100)  # noqa: E741 - the conventional name
    max_suppression: float = Field(default=0.05, ge=0.0, lt=1.0)
    epsilon_budget: float | None = None
    delta: float | None = None
    epsilon: float | None = None  # opts the twin into differential privacy at this epsilon
    dp_split: float = Field(default=0.5, gt=0.0, lt=1.0)  # share of epsilon on the marginals
    domains: dict[str, dict[str, Any]] = Field(default_factory=dict)  # public bounds/categories per column
    # The borrower column (one privacy unit): the train/holdout split keeps its loans together
    # (`models.tape.loan_tape.privacy_unit_column`); default: borrower_id when the loans file has it, else the loan.
    unit_column: str | None = Field(default=None, min_length=1)
    dpsgd_epsilon: float | None = None  # the cascade's DP-SGD epsilon under privacy.epsilon (default: the same epsilon)

    @field_validator("epsilon_budget", "epsilon", "dpsgd_epsilon")
    @classmethod
    def _positive_finite(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError("must be a finite number greater than 0")
        return value

    @field_validator("delta")
    @classmethod
    def _delta_range(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or not 0 < value < 1):
            raise ValueError("must be a number strictly between 0 and 1")
        return value


class CsvSpec(_Strict):
    """How to read a CSV upload when sniffing is not enough.

    `header` says whether line 1 names the columns (unset: sniffed, see
    `models.tape.ingest.ReadOptions`); `columns` names the loans file's
    fields in file order, for a file without a header (UCI's german.data, an
    agency's pipe-delimited extract) or to replace the names of one with a header.
    """

    encoding: str | None = None
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    decimal: Literal[".", ","] | None = None
    header: bool | None = None
    columns: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(default=None, min_length=1)

    def read_options(self, *, loans: bool = True):
        """The `ReadOptions` of the loans file (`loans`) or of the history file (no `columns`)."""
        from models.tape.ingest import ReadOptions

        columns = tuple(self.columns) if loans and self.columns is not None else None
        return ReadOptions(encoding=self.encoding, delimiter=self.delimiter, decimal=self.decimal, header=self.header,
                           columns=columns, history=not loans)


class PerformanceSpec(_Strict):
    """Column names of the performance history, when they differ from the canonical ones, and the file's own
    status words (`status_labels`: label -> one of `models.sequences.states.STATES`), for words no built-in
    reading knows ('Forbearance', 'Deferred') or reads otherwise; they are applied first. `as_of` is the
    extract's as-of month (its last reporting month, 'YYYY-MM'), where synthetic histories stop
    (`models.sequences.histories.observation_window`): without it the history's own last month is used, except
    under DP, where that month is an uncharged statistic and histories are left uncapped."""

    loan_id: str | None = None
    period: str | None = None
    status: str | None = None
    days_past_due: str | None = None
    balance: str | None = None
    payment: str | None = None
    # An agency file's zero-balance code (01 prepaid; 02, 03, 09, 15 default), read on the month a loan leaves.
    zero_balance_code: str | None = None
    status_labels: dict[str, str] = Field(default_factory=dict)
    as_of: str | None = None

    @field_validator("status_labels")
    @classmethod
    def _canonical_states(cls, value: dict[str, str]) -> dict[str, str]:
        from models.sequences.states import STATES

        bad = {label: state for label, state in value.items() if state not in STATES}
        if bad:
            raise ValueError(f"status_labels maps {', '.join(f'{k!r} to {v!r}' for k, v in bad.items())}: each "
                             f"label must map to one of {', '.join(STATES)}")
        if any(not str(label).strip() for label in value):
            raise ValueError("status_labels has an empty label")
        return value

    @field_validator("as_of", mode="before")
    @classmethod
    def _a_month(cls, value: Any) -> Any:
        # YAML reads 2023-12-31 as a date and 2023-12 as text; both name the month 2023-12.
        if value is None:
            return None
        if isinstance(value, (date, datetime)):
            return f"{value.year:04d}-{value.month:02d}"
        if isinstance(value, str) and _MONTH.fullmatch(value.strip()):
            return value.strip()[:7]
        raise ValueError("must be a month written YYYY-MM (the extract's as-of month), e.g. as_of: 2023-12")

    def columns(self) -> dict[str, str]:
        """Canonical name -> the file's column, for the columns declared (status_labels and as_of left out)."""
        return {key: name for key, name in self.model_dump(exclude={"status_labels", "as_of"}).items() if name}


class InequalityConstraint(_Strict):
    type: Literal["inequality"]
    low: str
    high: str


class FixedCombinationsConstraint(_Strict):
    type: Literal["fixed_combinations"]
    columns: list[str] = Field(min_length=2)


class AuditSpec(_Strict):
    """The privacy audit's sampling and the release policy its figures must meet (`models.privacy.policy`).

    Limits: exact matches, the share of released rows closer to train than to
    holdout, and the strongest membership-inference AUC. Margins: the attack
    rules (CreditTwin's attribute inference on every secret, anonymeter's
    inference with `max_inference_risk`, its singling out and linkability with
    `max_anonymeter_risk`) compare the attack's success on training records
    with its success on holdout records (`models.privacy.leak.leak_test`): a rule
    fails on evidence (a one-sided 95 % lower bound) that the risk exceeds its
    margin, passes when the upper bound is within it, and warns when the book
    is too small to tell. The former rule, "the upper 95 % bound is within the
    limit", refused honest releases of a rare default flag: the risk is
    divided by the controls' failure rate, 0.06 on a 3 % flag, and even 2,000
    attacks leave its upper bound near 0.29. `require_measured` fails a
    required rule that could not be measured (anonymeter's are never required:
    without it installed they are warnings naming the install command).
    """

    sample_size: int = Field(default=10_000, ge=10, le=1_000_000)
    n_attacks: int = Field(default=2000, ge=1, le=100_000)
    anonymeter_sample_size: int = Field(default=5_000, ge=5, le=1_000_000)
    run_anonymeter: bool = True
    seed: int = 0
    max_exact_match_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    max_dcr_share: float = Field(default=0.55, gt=0.0, le=1.0)
    max_mia_auc: float = Field(default=0.60, ge=0.5, le=1.0)
    max_anonymeter_risk: float = Field(default=0.10, ge=0.0, le=1.0)
    max_inference_risk: float = Field(default=0.25, ge=0.0, le=1.0)
    require_measured: bool = True


class CertificateSpec(_Strict):
    """The privacy certificate: how long it stays valid."""

    validity_days: int = Field(default=90, ge=1, le=3660)


class TenantConfig(_Strict):
    """The parsed `tenant.yaml`; every key is optional."""

    display_name: str | None = Field(default=None, max_length=200)  # shown in reports; free text, escaped there
    target: TargetSpec | None = None
    id_columns: list[str] = Field(default_factory=list)
    quasi_identifiers: list[str] = Field(default_factory=list)
    sensitive_columns: list[str] = Field(default_factory=list)
    column_types: dict[str, _COLUMN_TYPES] = Field(default_factory=dict)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    synthetic_rows: int | None = Field(default=None, ge=1, le=50_000_000)
    holdout_share: float = Field(default=0.2, gt=0.0, lt=1.0)
    csv: CsvSpec = Field(default_factory=CsvSpec)
    performance: PerformanceSpec = Field(default_factory=PerformanceSpec)
    constraints: list[InequalityConstraint | FixedCombinationsConstraint] = Field(default_factory=list)
    engine: Literal["credittwin", "copulas"] = "credittwin"
    audit: AuditSpec = Field(default_factory=AuditSpec)
    certificate: CertificateSpec = Field(default_factory=CertificateSpec)
    validation: ValidationThresholds = Field(default_factory=ValidationThresholds)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    stress: StressConfig = Field(default_factory=StressConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _no_duplicate_names(self) -> "TenantConfig":
        for key in ("id_columns", "quasi_identifiers", "sensitive_columns"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key} lists a column more than once")
        return self

    def loan_columns(self) -> dict[str, list[str]]:
        """Every loans-table column the config names, keyed by the config key naming it."""
        named: dict[str, list[str]] = {
            "id_columns": list(self.id_columns),
            "quasi_identifiers": list(self.quasi_identifiers),
            "sensitive_columns": list(self.sensitive_columns),
            "column_types": list(self.column_types),
        }
        if self.target:
            named["target.column"] = [self.target.column]
        if self.privacy.unit_column:
            named["privacy.unit_column"] = [self.privacy.unit_column]
        for i, c in enumerate(self.constraints):
            cols = [c.low, c.high] if isinstance(c, InequalityConstraint) else list(c.columns)
            named[f"constraints[{i}]"] = cols
        return named

    def check_columns(self, columns: list[str], *, tenant: str, file: str) -> None:
        """Raise `TenantConfigError` naming the key when the config names a column not in `columns`."""
        present = set(columns)
        for key, names in self.loan_columns().items():
            missing = [n for n in names if n not in present]
            if missing:
                raise TenantConfigError(
                    f"key '{key}' names column(s) {missing} that the loans file does not have "
                    f"(it has {len(columns)} columns: {sorted(columns)[:20]}{'...' if len(columns) > 20 else ''}).",
                    tenant=tenant,
                    file=file,
                    column=missing[0],
                    fix=f"correct the column name under '{key}' in {TENANT_FILE}, or add the column to the loans file.",
                )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_tenant_config(data: Any, *, tenant: str | None = None, file: str = TENANT_FILE) -> TenantConfig:
    """Validate an already-parsed YAML document; errors name the key and the file."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TenantConfigError(
            f"the document must be a mapping of keys, got {type(data).__name__}.",
            tenant=tenant,
            file=file,
            fix="write tenant.yaml as 'key: value' lines (see docs/tenant-contract.md).",
        )
    try:
        return TenantConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        problems = []
        for err in errors[:MAX_PROBLEMS_SHOWN]:
            key = _shown(".".join(str(p) for p in err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"key '{key}': {_shown(err['msg'], 200)}")
        if len(errors) > MAX_PROBLEMS_SHOWN:
            problems.append(f"and {len(errors) - MAX_PROBLEMS_SHOWN} more problem(s)")
        allowed = ", ".join(TenantConfig.model_fields)
        unknown = any(err["type"] == "extra_forbidden" for err in errors)
        values = any(err["type"] != "extra_forbidden" for err in errors)
        fixes = ([f"use only the documented keys ({allowed})"] if unknown else []) + (
            ["give each key named above a value of its documented type and range (docs/tenant-contract.md)"]
            if values else [])
        raise TenantConfigError(
            "; ".join(problems) + ".",
            tenant=tenant,
            file=file,
            fix="; ".join(fixes) + ".",
        ) from None


def _shown(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters: a message quoting a key or a parser's words stays one readable line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_config_bytes(path: Path, *, tenant: str | None) -> bytes:
    """The bytes of `path`, refused unread when it is a link, not a plain file, or over `MAX_CONFIG_BYTES`.

    The file is opened with O_NOFOLLOW, so the link test and the read are one step: a link swapped in
    after a check is not followed. O_NONBLOCK keeps a FIFO from blocking the open until its type is seen.
    """
    import errno
    import os
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TenantConfigError(
                "is a symbolic link; CreditTwin does not follow it (uploads must be plain files).",
                tenant=tenant,
                file=path.name,
                fix=f"copy the {TENANT_FILE} file into the tenant's landing folder instead of linking it.",
            ) from None
        raise
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise TenantConfigError(
                "is not a plain file.", tenant=tenant, file=path.name, fix=f"upload {TENANT_FILE} as a plain text file."
            )
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise TenantConfigError(
            f"is larger than {MAX_CONFIG_BYTES // 1024} KiB; a tenant contract is a few dozen lines.",
            tenant=tenant,
            file=path.name,
            fix=f"keep only the documented keys in {TENANT_FILE} (see docs/tenant-contract.md).",
        )
    return data


def _bounded_loader():
    """A `yaml.SafeLoader` that refuses a document expanding to more than `MAX_CONFIG_NODES` nodes.

    Aliases make a small file stand for a huge document (the "billion laughs": nine
    lists of nine aliases of the list before, nine levels deep, is 9**9 strings).
    PyYAML shares an aliased node rather than copying it, so parsing stays cheap,
    but anything that walks the result (validation messages, `model_dump`, JSON)
    expands it. The composer counts each node's expanded size as it is composed,
    an alias counting its whole target again, and stops before construction;
    a cyclic alias (a node containing itself) is refused too.
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream) -> None:
            super().__init__(stream)
            self._sizes: dict[int, int] = {}

        def compose_node(self, parent, index):
            alias = self.check_event(yaml.AliasEvent)
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                if alias:  # the anchored node is still being composed: it contains itself
                    raise _UnboundedDocument("has an alias ('*') inside the node it refers to, an endless document.")
                if isinstance(node, yaml.SequenceNode):
                    children = node.value
                elif isinstance(node, yaml.MappingNode):
                    children = [part for pair in node.value for part in pair]
                else:
                    children = []
                size = 1 + sum(self._sizes[id(child)] for child in children)
                self._sizes[id(node)] = size
            if size > MAX_CONFIG_NODES:
                raise _UnboundedDocument(
                    f"expands to more than {MAX_CONFIG_NODES:,} values through YAML aliases (anchors '&' and '*')."
                )
            return node

    return BoundedLoader


class _UnboundedDocument(Exception):
    """Raised inside the YAML composer (its argument says why); `load_tenant_config` turns it into a `TenantConfigError`."""


def load_tenant_config(path: Path, *, tenant: str | None = None) -> TenantConfig:
    """Read and validate `tenant.yaml` at `path`; a missing file gives the defaults.

    A link, a file over `MAX_CONFIG_BYTES` and a document whose aliases expand past
    `MAX_CONFIG_NODES` are refused before their content is used, and no message
    quotes a refused file's content.
    """
    import os

    import yaml

    if not os.path.lexists(path):
        return TenantConfig()
    data = _read_config_bytes(Path(path), tenant=tenant)
    try:
        document = yaml.load(data.decode("utf-8"), Loader=_bounded_loader())  # noqa: S506 - a SafeLoader subclass
    except _UnboundedDocument as exc:
        raise TenantConfigError(
            str(exc),
            tenant=tenant,
            file=path.name,
            fix=f"write {TENANT_FILE} without nested aliases; a tenant contract is a few dozen lines.",
        ) from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise TenantConfigError(
            f"is not valid UTF-8 YAML ({exc.__class__.__name__}: {_shown(first_line)}).",
            tenant=tenant,
            file=path.name,
            fix="save tenant.yaml as UTF-8 and check its indentation.",
        ) from None
    return parse_tenant_config(document, tenant=tenant, file=path.name)
