"""A tenant's upload as one loan tape: locate the files, read them, type and split them.

`landing_folder` and `find_upload` are shared by the landing sensor, `credittwin
materialize` and the `raw_loan_tape` asset, so all three agree on which folder
and files make an upload (never a link) and on its fingerprint (the SHA-256 of
the files' own hashes), which keys runs so the same upload never runs twice.

The tape is split into train and holdout by privacy unit (`privacy_unit_column`:
one borrower), so that no borrower has loans on both sides of the membership
audit; the unit column is recorded in the tape's ingest document.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from models.errors import InvalidDataError, TenantConfigError
from models.tape.schema import SPLIT_COLUMN, TENANT_FILE, TableSchema, infer_schema
from models.tape.tenant import TenantConfig, load_tenant_config, validate_tenant_id
from models.tape.vocabulary import check_target_positive, target_indicator

DEFAULT_UNIT_COLUMN = "borrower_id"  # the privacy unit when tenant.yaml names none and the tape has this column
LOAN_STEMS = ("loans",)
PERFORMANCE_STEMS = ("performance",)
EXTENSIONS = (".csv", ".parquet")


@dataclass(frozen=True)
class Upload:
    """The files of one tenant's upload in the landing zone."""

    tenant: str
    folder: Path
    loans: Path
    performance: Path | None
    config: Path | None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.loans, self.performance, self.config) if p is not None]


def _present(path: Path) -> bool:
    # A link counts as present, dangling or not, so that it is refused by name rather than silently skipped.
    return path.is_symlink() or path.is_file()


def _refuse_link(path: Path, *, tenant: str) -> None:
    if path.is_symlink():
        raise InvalidDataError(
            "is a symbolic link; uploads must be plain files, and CreditTwin reads nothing through a link.",
            tenant=tenant,
            file=path.name,
            fix="copy the file in instead of linking it.",
        )


# A file name is shown back only when it is plain: an upload's names are untrusted.
_SHOWABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ ()-]{0,79}$")
_CONVERT = {  # extension -> (what the file is, what to do, the name to give)
    **dict.fromkeys((".xlsx", ".xls", ".xlsm", ".ods"), ("a spreadsheet", "save it as CSV named", ".csv")),
    **dict.fromkeys((".gz", ".zip", ".bz2", ".xz", ".zst", ".7z"), ("compressed", "unpack it to", None)),
    **dict.fromkeys((".txt", ".tsv", ".dat", ".psv", ".tab"),
                    ("a text table", "rename it to", ".csv")),
    **dict.fromkeys((".pq", ".parq"), ("a Parquet file", "rename it to", ".parquet")),
    ".json": ("a JSON file", "save it as CSV named", ".csv"),
    ".feather": ("an Arrow file", "save it as Parquet named", ".parquet"),
    ".sas7bdat": ("a SAS table", "save it as CSV named", ".csv"),
    ".dta": ("a Stata table", "save it as CSV named", ".csv"),
}


def _near_misses(names, stem: str) -> list[str]:
    """What to do with each of `names` (a folder's files) that was probably meant as `stem`.csv/.parquet.

    A name that is `stem` in another case (LOANS.CSV), with a second extension
    (loans.csv.gz) or in another format (loans.xlsx, loans.txt) gets a line; a
    name that is not plain text is never shown back (upload names are untrusted).
    """
    hints = []
    for name in sorted(names):
        if not _SHOWABLE_NAME.match(name) or "." not in name:
            continue
        base, *exts = name.split(".")
        suffixes = ["." + e.lower() for e in exts]
        if base.lower() != stem or not suffixes:
            continue
        if len(suffixes) == 1 and suffixes[0] in EXTENSIONS:
            if name != f"{stem}{suffixes[0]}":
                hints.append(f"rename '{name}' to '{stem}{suffixes[0]}' (the names are lower case)")
        elif suffixes[-1] in _CONVERT:
            kind, action, target = _CONVERT[suffixes[-1]]
            if target is None:  # compressed: the inner extension says what it unpacks to
                target = suffixes[-2] if len(suffixes) > 1 and suffixes[-2] in EXTENSIONS else ".csv"
            hints.append(f"'{name}' is {kind}: {action} '{stem}{target}'"
                         + (" (the delimiter, , ; tab or |, is detected)" if kind == "a text table" else ""))
    return hints


def check_upload_names(names, where: str, *, tenant: str) -> None:
    """`InvalidDataError` when the folder `where` (listing `names`) lacks the loans file, or holds a history under
    another spelling (Performance.csv, which would otherwise be skipped without a word); each near miss is named
    with what to do (`_near_misses`). The one test of a listing, on local disk and object storage alike."""
    for stem, required in ((LOAN_STEMS[0], True), (PERFORMANCE_STEMS[0], False)):
        if any(f"{stem}{ext}" in names for ext in EXTENSIONS):
            continue
        hints = _near_misses(names, stem)
        if required or hints:
            raise InvalidDataError(
                f"no {stem}.csv or {stem}.parquet in the landing folder {where}"
                + (", but a file that looks meant as one." if hints else "."),
                tenant=tenant,
                fix=f"{'; '.join(hints)}." if hints else f"upload the file as {stem}.csv or {stem}.parquet.",
            )


def _one_of(folder: Path, stem: str, *, tenant: str) -> Path | None:
    found = [folder / f"{stem}{ext}" for ext in EXTENSIONS if _present(folder / f"{stem}{ext}")]
    if len(found) > 1:
        raise InvalidDataError(
            f"both {found[0].name} and {found[1].name} are present; CreditTwin cannot tell which one is current.",
            tenant=tenant,
            file=found[0].name,
            fix=f"keep only one {stem} file (CSV or Parquet) in the tenant's landing folder.",
        )
    if found:
        _refuse_link(found[0], tenant=tenant)
    return found[0] if found else None


def is_tenant_folder(path: Path) -> bool:
    """Whether `path` is a real folder, not a link to one: the one test of a landing folder.

    A link named after one tenant but pointing at another's folder would run the
    first tenant on the second's data, so a link is never a tenant folder.
    """
    return not path.is_symlink() and path.is_dir()


def landing_folder(landing: Path, tenant: str) -> Path:
    """`tenant`'s folder in the landing zone `landing`, or `InvalidDataError` when it is missing or a link.

    `credittwin materialize` and `raw_loan_tape` locate an upload through here, with
    the test the landing sensor applies to each folder it lists (`is_tenant_folder`).
    The tenant's name is joined, not resolved, so that the test sees a link and
    not the folder it points to.
    """
    validate_tenant_id(tenant)
    folder = Path(landing) / tenant
    if not is_tenant_folder(folder):
        what = "is a symbolic link" if folder.is_symlink() else "is missing or is not a folder"
        raise InvalidDataError(
            f"the landing folder {folder} {what}; CreditTwin reads an upload only from the tenant's own folder.",
            tenant=tenant,
            fix=f"create the folder {tenant}/ in the landing zone (a real folder, not a link) and upload loans.csv into it.",
        )
    return folder


# Words too common in history column names to say which field a column is (LOAN_AGE is no loan balance).
_GENERIC_WORDS = frozenset({"loan", "current", "actual", "amount", "total", "month", "monthly", "remaining"})


def _likely_mapping(unmapped: list[str], left_out: list[str]) -> str | None:
    """`key: column` for the reading note's example: a left-out column whose name shares a word with one of the
    key's usual names (CURRENT_ACTUAL_UPB for balance); None when no column fits, so no unrelated pair is shown."""
    from models.tape.names import name_words
    from models.tape.performance import PERFORMANCE_ALIASES

    def words(name: str) -> set[str]:
        return set(name_words(name)) - _GENERIC_WORDS

    for key in unmapped:
        known = {w for alias in PERFORMANCE_ALIASES.get(key, ()) for w in words(alias)}
        match = next((column for column in left_out if words(column) & known), None)
        if match is not None:
            return f"{key}: {match}"
    return None


def find_upload(folder: Path, tenant: str) -> Upload:
    """The files of `tenant`'s upload in `folder`, or `InvalidDataError` naming what is missing or linked."""
    validate_tenant_id(tenant)
    if not is_tenant_folder(folder):
        raise InvalidDataError(f"landing folder {folder} is missing or is a link.", tenant=tenant, fix="create the folder and upload loans.csv into it.")
    check_upload_names({p.name for p in folder.iterdir() if p.is_file() or p.is_symlink()}, str(folder), tenant=tenant)
    loans = _one_of(folder, "loans", tenant=tenant)
    performance = _one_of(folder, "performance", tenant=tenant)
    config = folder / TENANT_FILE
    # Refused like a linked loans file: a linked contract would be read from outside the landing zone.
    _refuse_link(config, tenant=tenant)
    return Upload(tenant=tenant, folder=folder, loans=loans, performance=performance, config=config if config.is_file() else None)


def fingerprint(upload: Upload, known: Mapping[str, str] | None = None) -> str:
    """SHA-256 over each upload file's name and SHA-256: the upload's identity.

    `known` maps file names to SHA-256s already computed (by `read_table`, which
    hashes what it reads), so a large file is not read once more just to hash it.
    """
    from models.tape.ingest import file_sha256

    known = known or {}
    digest = hashlib.sha256()
    for path in upload.files:
        digest.update(f"{path.name}\0{known.get(path.name) or file_sha256(path)}\n".encode())
    return digest.hexdigest()


@dataclass
class LoanTape:
    """A typed, split loan tape with its schema and what reading it found."""

    tenant: str
    loans: pl.DataFrame  # with SPLIT_COLUMN ("train"/"holdout")
    performance: pl.DataFrame | None
    schema: TableSchema
    config: TenantConfig
    missing_columns: dict[str, list[str]]  # config key -> declared columns absent from the file
    upload_sha256: str  # `fingerprint` of exactly the files that were read
    reports: dict[str, Any] = field(default_factory=dict)
    unit_column: str | None = None  # the privacy unit the split keeps together; None: each loan is its own

    @property
    def default_rate(self) -> float | None:
        target = self.schema.target
        if not target or target not in self.loans.columns or self.loans.height == 0:
            return None
        return float(target_indicator(self.loans.get_column(target), self.schema.target_positive).mean())

    def split(self, name: str) -> pl.DataFrame:
        return self.loans.filter(pl.col(SPLIT_COLUMN) == name).drop(SPLIT_COLUMN)


def privacy_unit_column(columns: list[str], config: TenantConfig, *, tenant: str, file: str) -> str | None:
    """The loans column naming the privacy unit (one borrower), or None when each loan is its own unit.

    tenant.yaml's ``privacy.unit_column`` when declared (it must be a column of
    the loans file), else `DEFAULT_UNIT_COLUMN` when the file has it, else None.
    Only the header and tenant.yaml decide it, never the values.

    Raises:
        TenantConfigError: the declared unit column is not in the loans file.
    """
    declared = config.privacy.unit_column
    if declared is None:
        return DEFAULT_UNIT_COLUMN if DEFAULT_UNIT_COLUMN in columns else None
    if declared not in columns:
        shown = ", ".join(sorted(columns)[:20]) + (", ..." if len(columns) > 20 else "")
        raise TenantConfigError(
            f"privacy.unit_column in {TENANT_FILE} names '{declared}', which the loans file does not have "
            f"(its columns: {shown}); the train/holdout split and the privacy unit need the borrower column.",
            tenant=tenant,
            file=file,
            column=declared,
            fix=f"set privacy.unit_column in {TENANT_FILE} to the column that names the borrower, or remove it "
            f"to split by '{DEFAULT_UNIT_COLUMN}' when the file has it, else by loan id.",
        )
    return declared


def read_tape(upload: Upload) -> LoanTape:
    """Read, type and split an upload; hard errors raise, declared-but-missing columns are reported.

    Declared columns that the loans file lacks are collected in
    `missing_columns` rather than raised here, so the expectation suite can
    report them as a failed blocking check with the others.
    """
    from models.tape.ingest import read_table
    from models.sequences.histories import check_as_of
    from models.tape.performance import headerless, read_performance
    from models.tape.split import split_by_unit

    tenant = upload.tenant
    config = load_tenant_config(upload.config, tenant=tenant) if upload.config else TenantConfig()
    options = config.csv.read_options(loans=False)
    loans, loans_report = read_table(upload.loans, tenant=tenant, options=config.csv.read_options(),
                                     column_types=dict(config.column_types))
    columns = loans.columns
    missing = {key: [c for c in names if c not in columns] for key, names in config.loan_columns().items()}
    missing = {key: names for key, names in missing.items() if names}
    if SPLIT_COLUMN in columns:
        raise InvalidDataError(
            f"the column name '{SPLIT_COLUMN}' is reserved.", tenant=tenant, file=upload.loans.name, column=SPLIT_COLUMN, fix="rename that column."
        )
    schema = infer_schema(
        loans,
        column_types={k: v for k, v in config.column_types.items() if k in columns},
        id_columns=[c for c in config.id_columns if c in columns],
        target=config.target.column if config.target else None,
        target_positive=config.target.positive_values if config.target else None,
        quasi_identifiers=[c for c in config.quasi_identifiers if c in columns],
        sensitive_columns=[c for c in config.sensitive_columns if c in columns],
        spellings=loans_report.spellings,
    )
    if schema.target in columns:
        check_target_positive(
            loans.get_column(schema.target), schema[schema.target], schema.target_positive, tenant=tenant, file=upload.loans.name
        )
    reports: dict[str, Any] = {"loans": loans_report.to_dict()}
    unit = privacy_unit_column(columns, config, tenant=tenant, file=upload.loans.name)
    # Without a unit the loan id keys the split, and without a loan id the row number, the only stable key left.
    try:
        split = split_by_unit(loans, unit, schema.id_column, holdout_share=config.holdout_share)
    except InvalidDataError as error:
        raise error.with_context(tenant=tenant, file=upload.loans.name)
    loans = loans.with_columns(split.alias(SPLIT_COLUMN))
    reports["split"] = {
        "unit_column": unit,
        "keyed_by": unit or schema.id_column or "row number",
        "holdout_share": config.holdout_share,
        "loans_without_unit": int(loans.get_column(unit).null_count()) if unit else None,
    }
    performance = None
    if upload.performance is not None:
        if schema.id_column is None:
            reason = "a performance file was uploaded but the loans file has no loan id column to join it on."
            fix = "declare the loan id under 'id_columns' in tenant.yaml (first entry is the loan id)."
            if headerless(columns):
                # Read without a header line, the fields are numbered: say so, with names the file really has.
                example = next((c for c in columns if loans.get_column(c).null_count() == 0
                                and not loans.schema[c].is_float() and loans.get_column(c).is_unique().all()), columns[0])
                reason += (f" The file has no header line: line 1 holds data, so its {len(columns)} columns are "
                           f"named column_1 to column_{len(columns)}.")
                fix = (f"declare the loan id under 'id_columns' in tenant.yaml by the column that holds it (e.g. "
                       f"id_columns: [{example}], the first column whose values are all distinct), or list the "
                       "file's names under csv.columns in tenant.yaml, in file order, or add a header line.")
            raise TenantConfigError(reason, tenant=tenant, file=upload.loans.name, fix=fix)
        # a status column of months-behind codes beside words (0, 1, 2, CO, PIF) is labels, read as text
        raw_perf, perf_report = read_table(upload.performance, tenant=tenant, options=options, mixed_as_text=True)
        # The reader's notes on the history stand beside the loans file's in one check: each names its file.
        perf_report.warnings = [f"{upload.performance.name}: {note}" for note in perf_report.warnings]
        reports["performance"] = perf_report.to_dict()
        history = read_performance(
            raw_perf, loans, tenant=tenant, file=upload.performance.name, loan_id_column=schema.id_column,
            mapping=config.performance.columns(), spellings=perf_report.spellings,
            status_labels=config.performance.status_labels,
        )
        performance = history.frame
        # A declared cut-off the history contradicts is refused here, before any privacy budget is charged.
        check_as_of(performance, config.performance.as_of, private=config.privacy.epsilon is not None, tenant=tenant)
        # Saved with the tape (the "ingest" document), so a release can spell the history as the lender did.
        reports["performance"]["vocabulary"] = history.vocabulary
        if history.vocabulary.get("loan_id_match"):
            reports["performance"]["warnings"].append(
                f"{upload.performance.name}: its loan ids matched the loans file's only with leading zeros ignored "
                f"(000123 is 123): one file lost them, as a spreadsheet does to an id it reads as a number; keep ids "
                f"as text in both")
        left_out = history.vocabulary["left_out"]
        if left_out:
            unmapped = [k for k in ("days_past_due", "balance", "payment") if k not in history.vocabulary["columns"]]
            reports["performance"]["warnings"].append(
                f"{upload.performance.name}: column(s) {', '.join(map(repr, left_out[:10]))} match no history field, so "
                "they are neither modelled nor released"
                + (f"; if one is the {' or '.join(unmapped)}, name it under performance: in tenant.yaml"
                   + (f" (e.g. performance: {{{example}}})" if (example := _likely_mapping(unmapped, left_out)) else "")
                   if unmapped else "")
            )
    read_hashes = {reports[key]["file"]: reports[key]["sha256"] for key in ("loans", "performance") if key in reports}
    return LoanTape(
        tenant=tenant,
        loans=loans,
        performance=performance,
        schema=schema,
        config=config,
        missing_columns=missing,
        upload_sha256=fingerprint(upload, read_hashes),
        reports=reports,
        unit_column=unit,
    )

