"""Real public credit tapes, end to end through the `credittwin` command: materialize, export, verify.

Each tape of `tests.corpus.CORPUS` is uploaded with the minimal tenant.yaml an analyst would write and must reach a
certified release that verifies; the release, read with plain pandas beside the lender's own file, must speak the
file's vocabulary column by column. A tape without a default flag still gets its certificate; its risk assets are
skipped with a note, not failed.
"""

import dataclasses
import json

import pandas as pd
import pytest

from resources.storage import read_current
from tests.corpus import CORPUS, run_end_to_end, vocabulary_mismatches


@pytest.mark.parametrize("tape", CORPUS, ids=[t.tenant for t in CORPUS])
def test_a_real_tape_reaches_a_verified_certificate_in_its_own_vocabulary(tape, tmp_path):
    # run
    run = run_end_to_end(tape, tmp_path)
    # assert: every command succeeded, and said why when it did not
    assert run.materialize.returncode == 0, run.materialize.stdout[-4000:] + run.materialize.stderr[-4000:]
    assert "Traceback" not in run.materialize.stdout + run.materialize.stderr
    assert run.export is not None and run.export.returncode == 0, run.export.stdout + run.export.stderr
    assert run.verify is not None and run.verify.returncode == 0, run.verify.stdout + run.verify.stderr
    assert "VALID" in run.verify.stdout
    if not tape.has_target:
        assert "skipped" in run.materialize.stdout and "risk_model" in run.materialize.stdout
    # assert: the release speaks the tape's vocabulary
    original = pd.read_csv(tmp_path / "data" / "landing" / tape.tenant / "loans.csv")
    released = pd.read_csv(run.bundle / "loans.csv")
    certificate = json.loads((run.bundle / "certificate.json").read_text())
    generalised = set(certificate["anonymity"]["quasi_identifiers"])
    schema = read_current(tmp_path / "data", "raw_loan_tape", tape.tenant).schema
    identifiers = {c.name for c in schema.columns if c.type.value == "identifier"}
    assert vocabulary_mismatches(original, released, generalised=generalised, identifiers=identifiers) == []
    figures = run.figures()
    assert figures["k"] >= 5 and figures["quality"] is not None
    if tape.tenant == "openintro-loans":
        # an identity of every real loan (the outstanding balance never exceeds the amount lent) holds in the
        # release too: the twin sampled them through a correlation and broke it in some loans
        assert (original["balance"] <= original["loan_amount"]).all()
        assert (released["balance"] <= released["loan_amount"]).all()


def test_a_real_tape_with_only_epsilon_set_reaches_a_verified_dp_certificate(tmp_path):
    # setup: ISLR's Default, all 10,000 rows, with nothing declared but privacy.epsilon (issue 14's usability
    # proof): no domain, no unit column, Yes/No flags and two undeclared amounts. At epsilon 1 the fresh noise of
    # each fit puts the 4-column twin's mean correlation difference near the 0.1 gate (0.107 in one CI run of
    # four), so the proof runs at epsilon 2, where the gate holds with room; docs/benchmarks.md says so.
    tape = next(t for t in CORPUS if t.tenant == "islr-default")
    tape = dataclasses.replace(tape, sample=None, config={**tape.config, "privacy": {"epsilon": 2.0}})
    # run
    run = run_end_to_end(tape, tmp_path)
    # assert: certified and verified, every column released, in the file's own words
    assert run.materialize.returncode == 0, run.materialize.stdout[-4000:] + run.materialize.stderr[-4000:]
    assert run.verify is not None and run.verify.returncode == 0, run.verify.stdout + run.verify.stderr
    certificate = json.loads((run.bundle / "certificate.json").read_text())
    assert certificate["privacy"]["dp"]["epsilon"] == pytest.approx(2.0)
    assert "neighbouring tapes: replace-one borrower" in json.dumps(certificate)
    original = pd.read_csv(tmp_path / "data" / "landing" / tape.tenant / "loans.csv")
    released = pd.read_csv(run.bundle / "loans.csv")
    generalised = set(certificate["anonymity"]["quasi_identifiers"])
    assert vocabulary_mismatches(original, released, generalised=generalised, identifiers={"rownames"}) == []
    assert set(released["default"].dropna()) == {"Yes", "No"}
    # the amounts' undeclared bounds were learnt privately and land near the real ones
    for column in ("balance", "income"):
        assert released[column].median() == pytest.approx(original[column].median(), rel=0.2)
    assert not (run.bundle / "validation_report.json").exists()  # internal under DP


def test_a_small_wide_tape_under_dp_is_stopped_with_the_dp_cause_and_its_fixes(tmp_path):
    # setup: AER's CreditCard, 1,319 rows and 12 columns, at epsilon 1: too little data for the noise
    tape = next(t for t in CORPUS if t.tenant == "aer-creditcard")
    tape = dataclasses.replace(tape, config={**tape.config, "privacy": {"epsilon": 1.0}})
    # run
    run = run_end_to_end(tape, tmp_path)
    # assert: one clear message that names the DP cause and the ways out, and no stack trace
    output = run.materialize.stdout + run.materialize.stderr
    assert run.materialize.returncode != 0 and "Traceback" not in output
    assert "synthetic_fidelity" in output and "differentially private (privacy.epsilon 1)" in output
    assert "credittwin domains aer-creditcard" in output and "raise privacy.epsilon" in output


def test_a_real_tape_without_a_header_line_reaches_a_verified_certificate_under_the_names_tenant_yaml_gives(tmp_path):
    # setup: AER's CreditCard written as UCI's files and the agencies' extracts come: no header line. Line 1 used to
    # be read as the header and refused ("the header repeats a column name"); csv.columns names the fields.
    tape = next(t for t in CORPUS if t.tenant == "aer-creditcard")
    names = list(tape.frame().columns)
    tape = dataclasses.replace(tape, header=False, config={**tape.config, "csv": {"columns": names}})
    # run
    run = run_end_to_end(tape, tmp_path)
    # assert: certified and verified, every loan kept (line 1 included), released under the declared names
    assert run.materialize.returncode == 0, run.materialize.stdout[-4000:] + run.materialize.stderr[-4000:]
    assert run.verify is not None and run.verify.returncode == 0, run.verify.stdout + run.verify.stderr
    assert f"the file has no header line; its {len(names)} columns are named by csv.columns" in run.materialize.stdout
    assert read_current(tmp_path / "data", "raw_loan_tape", tape.tenant).loans.height == len(tape.frame())
    original = pd.read_csv(tmp_path / "data" / "landing" / tape.tenant / "loans.csv", header=None, names=names)
    released = pd.read_csv(run.bundle / "loans.csv")
    assert list(released.columns) == names
    certificate = json.loads((run.bundle / "certificate.json").read_text())
    generalised = set(certificate["anonymity"]["quasi_identifiers"])
    assert vocabulary_mismatches(original, released, generalised=generalised, identifiers={"rownames"}) == []
