"""Tests of the signed privacy certificate: canonical JSON, keys, signing, the PDF twin and verification.

The certificate is built from a real audit of a real (anonymized) release, signed
with real Ed25519 keys, written to disk, and its PDF parsed back with pypdf and
rendered to images with pypdfium2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.privacy.anonymize import AnonymizationPolicy, anonymize
from models.privacy.audit import AuditConfig, run_audit
from models.privacy.membership import dp_auc_bound
from models.privacy.policy import AuditPolicy, evaluate_policy
from models.reports.certificate import (
    CERTIFICATE_SCHEMA,
    MANIFEST_NAME,
    DEV_KEY_NAME,
    DEVELOPMENT_BANNER,
    KEY_SETTING,
    build_certificate,
    certificate_json_bytes,
    generate_key_file,
    issue_certificate,
    load_signing_key,
    payload_sha256,
    render_certificate_pdf,
    deployment_trust,
    public_key_from_pem,
    read_trust_store,
    sign_certificate,
    sign_manifest,
    signer_of_certificate,
    trust_key,
    verify_certificate,
)
from models.errors import CertificateError
from models.reports.certificate_pdf import render_certificate_pdf_v1
from models.reports.certificate_text import REFERENCES, pct, rule_label, rule_limit
from models.reports.pdf import fmt, pdf_text
from models.tape.schema import infer_schema

DATA = Path(__file__).parent / "data"

HOSTILE = "<font color=red>x</font>"
ISSUED = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
DURING = ISSUED + timedelta(days=10)


def book(n: int, seed: int) -> pl.DataFrame:
    """A small loan table: an id, numbers, a category and the default flag."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "loan_id": [f"L{seed}_{i}" for i in range(n)],
        "age": rng.integers(21, 70, n),
        "annual_income": np.round(rng.lognormal(10.8, 0.45, n), 2),
        "loan_amount": np.round(rng.uniform(1_000, 40_000, n), 2),
        "interest_rate": np.round(rng.uniform(3, 25, n), 3),
        "region": rng.choice(["north", "south", "east", "west", "central"], n),
        "default_flag": (rng.random(n) < 0.2).astype(np.int64),
    })


def schema_of(table: pl.DataFrame, region: str = "region"):
    return infer_schema(table, id_columns=["loan_id"], target="default_flag", target_positive=[1],
                        quasi_identifiers=["age", region])


def independent_marginals(train: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """An honest generator: each column resampled on its own, so no row is copied."""
    columns = {name: train.get_column(name).sample(n, with_replacement=True, seed=seed + i).to_list()
               for i, name in enumerate(train.columns)}
    columns["loan_id"] = [f"S{i}" for i in range(n)]
    return pl.DataFrame(columns, schema=train.schema)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A real anonymized release on disk, its audit, and the policy's verdicts."""
    train, holdout = book(400, 1), book(400, 2)
    schema = schema_of(train)
    synthetic = independent_marginals(train, 400, seed=5)
    anonymized = anonymize(synthetic, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=["age", "region"]))
    report = run_audit(
        anonymized.table, train, holdout, schema,
        config=AuditConfig(sample_size=400, n_attacks=40, n_jobs=1), generalisations=anonymized.generalisations,
        dp_spent=(1.0, 1e-6),
    )
    policy = AuditPolicy(k=5, l=2, max_anonymeter_risk=0.95, require_measured=False)
    rules = evaluate_policy(report, policy)
    assert all(rule.passed for rule in rules), [r.message for r in rules if not r.passed]
    folder = tmp_path_factory.mktemp("release")
    anonymized.table.write_parquet(folder / "loans.parquet")
    (folder / "anonymization.json").write_text(json.dumps(anonymized.to_dict(), default=str))
    return {
        "folder": folder,
        "report": report,
        "rules": rules,
        "anonymized": anonymized,
        "files": [
            {"name": "loans.parquet", "rows": anonymized.table.height, "sha256": sha256(folder / "loans.parquet"),
             "bytes": (folder / "loans.parquet").stat().st_size},
            {"name": "anonymization.json", "rows": None, "sha256": sha256(folder / "anonymization.json"),
             "bytes": (folder / "anonymization.json").stat().st_size},
        ],
    }


def certificate_args(release, **overrides):
    anonymized = release["anonymized"]
    args = dict(
        tenant="acme",
        display_name="Acme Lending",
        released_files=release["files"],
        # the provenance privacy_certificate records (assets/certificate.py)
        source={"input_sha256": "1" * 64, "data_versions": {"raw_loan_tape": "dv-raw-1", "fitted_copula": "dv-cop-7"},
                "content_sha256": {"raw_loan_tape": "a" * 64, "fitted_copula": "b" * 64},
                "materialized_by_run": {"raw_loan_tape": "run-1", "fitted_copula": "run-2"},
                "code_version": "3", "asset_code_version": "1", "dagster_run_id": "run-2"},
        generator={"engine": "credittwin", "seed": 11, "epochs": 40, "categories": {"region": ["north", "south"]},
                   "segmentation": {"column": "region", "pooled_rows": 0, "segments": [
                       {"value": "north", "rows": 150, "category_merges": {}},
                       {"value": "south", "rows": 250, "category_merges": {}}]}},
        scope={"input_files": ["loans.csv"], "train_rows": 400, "holdout_rows": 400,
               "period": {"column": "origination_date", "first": "2021-01", "last": "2023-12"}},
        privacy={"dp": {"epsilon": 1.0, "delta": 1e-6, "accountant": "dp_accounting.rdp", "ledger_entries": [
            {"id": 7, "asset": "fitted_copula", "run_id": "run-abc", "mechanism": {"kind": "gaussian"},
             "epsilon": 1.0, "delta": 1e-6, "accountant": "dp_accounting.rdp", "created_at": "2025-03-01T11:00:00+00:00"},
        ]}},
        anonymity={"k_required": 5, "k_achieved": anonymized.k_achieved, "l_required": 2,
                   "l_achieved": anonymized.l_achieved, "suppression": anonymized.rows_suppressed},
        audit=release["report"].to_dict(),
        rules=[rule.to_dict() for rule in release["rules"]],
        issued_at=ISSUED,
        validity_days=90,
    )
    args.update(overrides)
    return args


@pytest.fixture
def dev_key(tmp_path):
    return load_signing_key(None, environment="development", dev_key_dir=tmp_path / "keys")


@pytest.fixture
def prod_key(tmp_path):
    key = generate_key_file(tmp_path / "secret" / "signing.pem")
    return load_signing_key(key.source, environment="production", dev_key_dir=tmp_path / "unused")


def write(tmp_path: Path, signed: dict) -> tuple[Path, Path]:
    json_path, pdf_path = tmp_path / "certificate.json", tmp_path / "certificate.pdf"
    json_path.write_bytes(certificate_json_bytes(signed))
    pdf_path.write_bytes(render_certificate_pdf(signed))
    return json_path, pdf_path


# --------------------------------------------------------------------------- the document and the PDF


def test_pdf_figures_equal_the_json_figures(release, tmp_path, prod_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), prod_key)
    json_path, pdf_path = write(tmp_path, signed)
    document = json.loads(json_path.read_text())
    # run
    text = squeeze(pdf_text(pdf_path.read_bytes()))
    # assert: every rule row and finding, every sentence and the key figures, formatted as in the JSON
    assert document["schema"] == CERTIFICATE_SCHEMA and document["verdict"] == "pass"
    assert len(document["rules"]) >= 7
    for rule in document["rules"]:
        row = f"{rule_label(rule['rule'])}{fmt(rule['value'])}{rule_limit(rule)}{rule['verdict'].upper()}"
        assert squeeze(row) in text, row
        assert squeeze(f"({rule['rule']}): {rule['message']}") in text
    for sentence in document["explanation"] + list(document["summary"].values()):
        assert squeeze(sentence) in text
    mia, dp = document["audit"]["mia"], document["privacy"]["dp"]
    assert squeeze(f"AUC of the strongest attack {fmt(mia['auc'])}") in text
    assert squeeze(f"95% interval of the AUC (DeLong) {fmt(mia['auc_ci'][0])}, {fmt(mia['auc_ci'][1])}") in text
    share = document["audit"]["dcr"]["share_closer_to_train"]
    assert squeeze(f"share of released rows closer to train than to holdout {fmt(share)}") in text
    assert squeeze(f"epsilon spent {fmt(dp['epsilon'])}") in text and squeeze(f"delta spent {fmt(dp['delta'])}") in text
    assert dp["auc_bound"] == pytest.approx(dp_auc_bound(1.0, 1e-6))
    assert squeeze(f"largest membership AUC it allows{fmt(dp['auc_bound'])}") in text
    assert squeeze(f"k achieved (smallest equivalence class) {fmt(document['anonymity']['k_achieved'])}") in text
    assert squeeze(f"l achieved (fewest distinct sensitive values in a class) "
                   f"{fmt(document['anonymity']['l_achieved'])}") in text
    entry = dp["ledger_entries"][0]
    assert squeeze(f"7 fitted_copula run-abc gaussian {fmt(entry['epsilon'])} {fmt(entry['delta'])}") in text
    for released in document["released_files"]:
        assert squeeze(f"{released['name']}{fmt(released['rows'])}{fmt(released['bytes'])}{released['sha256']}") in text
    assert squeeze("fitted_copula dv-cop-7 " + "b" * 64 + " run-2") in text
    assert document["source"]["input_sha256"] in text
    assert document["issued_at"] in text and document["valid_until"] in text
    assert document["signature"]["payload_sha256"] in text and document["signature"]["value"] in text
    assert document["signature"]["development_key"] is False and squeeze(DEVELOPMENT_BANNER) not in text


def _pages(pdf: bytes) -> list[str]:
    """The text of each page, by pypdfium2 (another parser than the one `verify` uses)."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    return [document[i].get_textpage().get_text_range() for i in range(len(document))]


def _dotted_paths(value, prefix: str = "") -> set[str]:
    """Every nested member of a document as a dotted path (``source.materialized_by_run.fitted_copula``)."""
    paths: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths |= ({path} if prefix else set()) | _dotted_paths(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths |= _dotted_paths(item, f"{prefix}[{i}]")
    return paths


def test_the_pdf_reads_like_a_review_summary_first_and_provenance_in_an_appendix(release, tmp_path, dev_key):
    # setup: the provenance a real run records (runs, content hashes, segments) and a tape period
    import pypdfium2 as pdfium

    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    pdf = render_certificate_pdf(signed)
    # run
    pages = _pages(pdf)
    first = pdfium.PdfDocument(pdf)[0].render(scale=1.0).to_pil()
    # assert: page 1 is the executive summary, with the verdict, the guarantee and the strongest attack
    page_one = squeeze(pages[0])
    summary = signed["summary"]
    assert "Executivesummary" in page_one and squeeze(DEVELOPMENT_BANNER) in page_one
    for title in ("Scope", "Period", "Verdict", "Privacy guarantee", "Strongest attack"):
        assert squeeze(title) in page_one
    assert squeeze(summary["guarantee"]) in page_one and squeeze(NEIGHBOURS_TEXT) in page_one
    assert summary["guarantee"].startswith("Differentially private with epsilon 1 and delta 1e-06 (neighbouring tapes: ")
    assert "; k-anonymous with k = 5 over age and region, and l-diverse with l = 2 on default_flag." in summary["guarantee"]
    assert squeeze(summary["strongest_attack"]).startswith("Membershipinference(distanceattack):AUC")
    assert squeeze("origination_date from 2021-01 to 2023-12") in page_one
    assert squeeze("loans.csv: 800 loans, of which 400 trained the generator and 400 were held out") in page_one
    # then the method with its references, the rules, governance with a sign-off, the appendix
    text = squeeze("\n".join(pages))
    for heading in ("Method and references", "References", "Rules and figures", "What these figures mean",
                    "Governance", "Reviewer sign-off", "Appendix: technical provenance", "A.2 Sources"):
        assert squeeze(heading) in text, heading
    for ref in ("mondrian", "ldiversity", "dwork", "mironov", "dp_accounting", "domias", "anonymeter"):
        assert squeeze(REFERENCES[ref]) in text, ref
    assert text.index("Methodandreferences") < text.index("Rulesandfigures") < text.index("Governance") < text.index(
        "Appendix:technicalprovenance")
    assert squeeze(f"Signing key id {dev_key.key_id}") in text and "Name" in text and "Signature" in text
    # no member of the JSON is printed as a dotted path
    for path in _dotted_paths({k: v for k, v in signed.items() if k != "signature"}):
        assert squeeze(path) not in text, path
    assert "materialized_by_run." not in text and "segments[0]" not in text and "attacks.density_ratio" not in text
    # the page is an image with ink on it
    assert first.size[1] > first.size[0] and first.convert("L").getextrema()[0] < 100


NEIGHBOURS_TEXT = "replace-one borrower; the number of borrowers is public"


def test_the_explanation_is_generated_from_the_figures(release, prod_key):
    # run
    document = build_certificate(**certificate_args(release))
    sentences = " ".join(document["explanation"])
    # assert
    auc = document["audit"]["mia"]["auc"]
    assert f"with an AUC of {fmt(auc)}" in sentences and "the policy allows at most 0.6" in sentences
    assert f"cannot reach an AUC above {fmt(dp_auc_bound(1.0, 1e-6))}" not in sentences
    assert f"can reach an AUC above {fmt(dp_auc_bound(1.0, 1e-6))}" in sentences
    k = release["anonymized"].k_achieved
    assert f"quasi-identifiers (age, region) is shared by at least {k} loans" in sentences
    assert f"someone who knows a borrower's age and region can narrow the borrower down to no fewer than {k} loans" in sentences
    assert "does not protect against" in sentences and "aggregate statistics" in sentences
    assert "rule(s)" not in sentences and "0.5 is a coin flip" in sentences
    # without DP the explanation says the protection is empirical only
    plain = build_certificate(**certificate_args(release, privacy={"dp": None}))
    assert any("not differentially private" in s for s in plain["explanation"])
    assert plain["summary"]["guarantee"].startswith("Not differentially private; k-anonymous with k = ")


def _with_mia(release, **figures):
    audit = release["report"].to_dict()
    audit["mia"] = dict(audit["mia"], **figures)
    return build_certificate(**certificate_args(release, audit=audit))


def test_a_false_positive_rate_the_sample_cannot_resolve_is_said_plainly(release):
    # setup: the audit's own figures: 200 non-members cannot show a rate below 1 in 200
    mia = release["report"].mia
    assert mia["fpr_resolvable"] is False and mia["fpr"] == 1 / mia["n_non_members"]
    # run
    unresolved = " ".join(build_certificate(**certificate_args(release))["explanation"])
    resolved = " ".join(_with_mia(release, fpr=0.001, fpr_resolvable=True, tpr_at_fpr=0.004, tpr_ci=[0.001, 0.009],
                                  n_non_members=5000)["explanation"])
    # assert: no sentence offers a rate the sample cannot show as if it were the one asked for
    assert "Accepting only" not in unresolved and "false accusations" not in unresolved
    assert (f"The audit's {mia['n_non_members']} non-members are too few to measure the attack at the target "
            f"false-positive rate of 0.1% (one borrower in 1,000 wrongly accused): the lowest rate they can show is "
            f"{pct(mia['fpr'])}.") in unresolved
    assert f"where guessing at random would identify {pct(mia['fpr'])}" in unresolved
    assert ("Tuned to wrongly accuse at most 0.1% of the borrowers who were not in the training data, the attack "
            "correctly identifies 0.4% of those who were (95% interval 0.1% to 0.9%); guessing at random would "
            "identify 0.1%.") in resolved
    assert "too few" not in resolved


def test_hostile_names_and_values_print_literally(release, tmp_path, dev_key):
    # setup: a column named with markup and a category value closing a CDATA section, through a real audit
    train, holdout = (
        book(300, seed).rename({"region": HOSTILE}).with_columns(pl.col(HOSTILE).replace("north", "]]>")) for seed in (1, 2)
    )
    schema = schema_of(train, region=HOSTILE)
    released = anonymize(independent_marginals(train, 300, seed=5), schema,
                         AnonymizationPolicy(k=5, quasi_identifiers=["age", HOSTILE]))
    report = run_audit(released.table, train, holdout, schema, config=AuditConfig(sample_size=300, run_anonymeter=False),
                       generalisations=released.generalisations)
    # a lenient DCR limit: 300 rows leave the share a few points of noise, and this test is about the text
    rules = evaluate_policy(report, AuditPolicy(max_dcr_share=0.65, require_measured=False))
    args = certificate_args(
        release,
        display_name=f"{HOSTILE} Bank ]]> & <b>co</b>",
        audit=report.to_dict(),
        rules=[rule.to_dict() for rule in rules],
        anonymity={"k_required": None, "k_achieved": report.anonymity["k"], "suppression": 0},
        generator={"engine": "credittwin", "categories": {HOSTILE: ["]]>", "south"]}},
    )
    # run
    signed = sign_certificate(build_certificate(**args), dev_key)
    pdf = render_certificate_pdf(signed)
    text = pdf_text(pdf)
    # assert
    assert pdf.startswith(b"%PDF")
    assert f"{HOSTILE} Bank ]]> & <b>co</b>" in text
    assert HOSTILE in report.anonymity["quasi_identifiers"]
    assert squeeze(f"quasi-identifiers (age, {HOSTILE}) is shared") in squeeze(text)
    assert squeeze(f"categories {HOSTILE}: ]]>, south") in squeeze(text)
    assert squeeze(DEVELOPMENT_BANNER) in squeeze(text)
    assert verify_certificate(signed, now=DURING).ok


def test_the_certificate_signs_and_shows_the_rule_it_applied(release, tmp_path, dev_key):
    # setup: the tenant's audit settings, as privacy_audit records them
    policy = {"max_mia_auc": 0.6, "max_inference_risk": 0.25, "require_measured": False, "k": 5, "l": 2}
    signed = sign_certificate(build_certificate(**certificate_args(release, policy=policy)), dev_key)
    # run
    # the running page header is taken out: a rule's paragraph may break across a page
    text = squeeze(re.sub(r"CreditTwin privacy certificate \S+\s+-\s+page \d+", "", pdf_text(render_certificate_pdf(signed))))
    tampered = json.loads(json.dumps(signed))
    rule = next(r for r in tampered["rules"] if r["rule"] == "mia_auc")
    rule["criterion"] = rule["criterion"].replace("0.6", "0.9")
    # assert: every rule's criterion is in the signed JSON and printed; editing it breaks the signature
    assert signed["policy"] == policy
    for rule in signed["rules"]:
        assert rule["criterion"] and squeeze(f"({rule['rule']}): {rule['message']}. Rule: {rule['criterion']}.") in text
    assert any("fails when the lower bound is above" in r["criterion"] for r in signed["rules"])
    assert squeeze("attribute-inference risk margin 0.25") in text and squeeze("k required 5") in text
    assert verify_certificate(signed, now=DURING).ok
    assert not verify_certificate(tampered, now=DURING).ok


def test_a_release_without_a_sensitive_column_is_certified_with_l_as_a_warning(dev_key):
    # setup: real ISLR/Credit (no default flag, no sensitive column), anonymized with k only
    from models.privacy.anonymize import AnonymizationPolicy as Policy
    from tests.corpus import CORPUS

    tape = pl.from_pandas(next(t for t in CORPUS if t.tenant == "islr-credit").frame())
    schema = infer_schema(tape, id_columns=["rownames", "ID"], quasi_identifiers=["Age", "Gender"])
    train, holdout = tape.head(320), tape.tail(80)
    synthetic = pl.DataFrame({name: train.get_column(name).sample(320, with_replacement=True, seed=i)
                              for i, name in enumerate(train.columns)})
    released = anonymize(synthetic, schema, Policy(k=5, l=1, quasi_identifiers=["Age", "Gender"]))
    report = run_audit(released.table, train, holdout, schema, config=AuditConfig(run_anonymeter=False),
                       generalisations=released.generalisations)
    rules = evaluate_policy(report, AuditPolicy(k=5, l=2, max_dcr_share=0.6, max_mia_auc=0.7))
    args = dict(certificate_args({"anonymized": released, "files": [], "report": report, "rules": rules}),
                anonymity={"k_required": 5, "k_achieved": released.k_achieved, "l_required": 2, "l_achieved": None},
                audit=report.to_dict(), rules=[r.to_dict() for r in rules], released_files=[
                    {"name": "loans.parquet", "rows": released.table.height, "sha256": "2" * 64, "bytes": 10}])
    # run
    document = build_certificate(**args)
    # assert: l is a warning saying why, never a pass; the certificate is issued and says so
    l_rule = next(r for r in document["rules"] if r["rule"] == "l_diversity")
    assert l_rule["verdict"] == "warn" and l_rule["passed"] and "not applicable" in l_rule["message"]
    assert document["anonymity"]["l_status"].startswith("not applicable")
    assert any("could not be shown to pass and" in s and "l-diversity" in s for s in document["explanation"])
    assert "l-diversity" in document["summary"]["verdict"] and document["summary"]["verdict"].startswith("PASS with")


def test_a_failed_rule_refuses_to_build_a_certificate(release):
    # setup: the same audit under a policy it does not meet
    strict = evaluate_policy(release["report"], AuditPolicy(max_mia_auc=0.2, max_dcr_share=0.1, require_measured=False))
    failed = [r.rule for r in strict if not r.passed]
    # run
    with pytest.raises(CertificateError) as caught:
        build_certificate(**certificate_args(release, rules=[r.to_dict() for r in strict]))
    # assert: every failed rule is named
    assert {"mia_auc", "dcr_share"} <= set(failed)
    for rule in failed:
        assert rule in str(caught.value)
    assert "no certificate is issued" in str(caught.value)


def test_k_below_the_requirement_refuses_to_build(release):
    # run / assert
    with pytest.raises(CertificateError, match="k achieved"):
        build_certificate(**certificate_args(release, anonymity={"k_required": 50, "k_achieved": 5}))


def test_an_unmeasured_figure_cannot_be_nan(release):
    # setup
    audit = release["report"].to_dict()
    audit["mia"] = dict(audit["mia"], auc=float("nan"))
    # run / assert
    with pytest.raises(CertificateError, match="finite"):
        build_certificate(**certificate_args(release, audit=audit))


# --------------------------------------------------------------------------- verification


def test_an_issued_certificate_verifies_with_its_files_and_pdf(release, tmp_path, prod_key):
    # setup
    issued = issue_certificate(prod_key, **certificate_args(release))
    json_path, pdf_path = tmp_path / "c.json", tmp_path / "c.pdf"
    json_path.write_bytes(issued.json_bytes)
    pdf_path.write_bytes(issued.pdf_bytes)
    # run
    result = verify_certificate(json_path, data_dir=release["folder"], pdf_path=pdf_path,
                                trusted_keys=[prod_key.key_id], now=DURING)
    # assert
    assert result.ok, result.problems
    assert [f["name"] for f in result.checked_files] == ["loans.parquet", "anonymization.json"]
    assert all(f["ok"] for f in result.checked_files)
    assert result.payload_sha256 == issued.payload_sha256 == payload_sha256(issued.document)
    assert result.notes == []


@pytest.mark.parametrize("edit", ["figure", "tenant", "threshold", "development_flag"])
def test_editing_one_character_of_the_json_fails_verification(release, tmp_path, dev_key, edit):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    json_path, _ = write(tmp_path, signed)
    text = json_path.read_text()
    if edit == "figure":
        auc = signed["audit"]["mia"]["auc"]
        old = f'"auc": {json.dumps(auc)}'
        # the first digit after the point: editing a 17th significant digit can
        # parse back to the same double, which the canonical form cannot see
        digit = old.index(".") + 1
        new = old[:digit] + str((int(old[digit]) + 1) % 10) + old[digit + 1:]
    elif edit == "tenant":
        old, new = '"tenant": "acme"', '"tenant": "acmf"'
    elif edit == "threshold":
        old, new = '"threshold": 0.6', '"threshold": 0.7'
    else:
        old, new = '"development": true', '"development": false'
    assert old in text
    json_path.write_text(text.replace(old, new, 1))
    # run
    result = verify_certificate(json_path, now=DURING)
    # assert
    assert not result.ok
    assert any("changed after signing" in problem for problem in result.problems)


def test_white_space_does_not_matter_but_a_duplicate_key_does(release, tmp_path, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    compact, duplicated = tmp_path / "compact.json", tmp_path / "dup.json"
    compact.write_text(json.dumps(signed, separators=(",", ":")))
    duplicated.write_text('{"tenant": "evil", ' + json.dumps(signed)[1:])
    # run / assert
    assert verify_certificate(compact, now=DURING).ok
    result = verify_certificate(duplicated, now=DURING)
    assert not result.ok and "duplicate key 'tenant'" in result.problems[0]


def test_a_replaced_released_file_fails_naming_it(release, tmp_path, dev_key):
    # setup: a copy of the release folder with one file replaced
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    folder = tmp_path / "release"
    folder.mkdir()
    for entry in release["files"]:
        (folder / entry["name"]).write_bytes((release["folder"] / entry["name"]).read_bytes())
    frame = pl.read_parquet(folder / "loans.parquet")
    frame.head(frame.height - 1).write_parquet(folder / "loans.parquet")
    actual = sha256(folder / "loans.parquet")
    # run
    result = verify_certificate(signed, data_dir=folder, now=DURING)
    # assert
    expected = release["files"][0]["sha256"]
    assert not result.ok
    assert result.problems == [
        f"released file 'loans.parquet' does not match the certificate: expected sha256 {expected}, found {actual}"
    ]
    assert [f["ok"] for f in result.checked_files] == [False, True]


def test_a_deleted_released_file_fails_naming_it(release, tmp_path, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "loans.parquet").write_bytes((release["folder"] / "loans.parquet").read_bytes())
    # run
    result = verify_certificate(signed, data_dir=folder, now=DURING)
    # assert
    assert not result.ok and len(result.problems) == 1
    assert "'anonymization.json' is missing" in result.problems[0]
    assert release["files"][1]["sha256"] in result.problems[0]


def test_a_released_name_leaving_the_data_folder_is_not_read(release, tmp_path, dev_key):
    # setup: a hostile certificate, validly signed by some key, naming a file outside the folder
    files = [dict(release["files"][0], name="sub/../../outside.parquet")]
    (tmp_path / "outside.parquet").write_bytes(b"x")
    doc = build_certificate(**certificate_args(release))
    doc["released_files"] = files
    signed = sign_certificate(doc, dev_key)
    (tmp_path / "data").mkdir()
    # run
    result = verify_certificate(signed, data_dir=tmp_path / "data", now=DURING)
    # assert
    assert not result.ok and "is not a name inside" in result.problems[0]


def test_an_expired_certificate_fails_verification(release, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release, validity_days=30)), dev_key)
    # run
    late = verify_certificate(signed, now=ISSUED + timedelta(days=31))
    early = verify_certificate(signed, now=ISSUED - timedelta(days=1))
    # assert
    assert not late.ok and late.problems[0].startswith("the certificate expired on 2025-03-31T12:00:00+00:00")
    assert not early.ok and "dated in the future" in early.problems[0]
    assert verify_certificate(signed, now=ISSUED + timedelta(days=29)).ok


def test_an_untrusted_key_fails_verification_even_when_the_signature_is_valid(release, dev_key, prod_key):
    # setup: someone re-signs an edited certificate with their own key
    signed = sign_certificate(build_certificate(**certificate_args(release)), prod_key)
    forged = dict(signed, display_name="Someone Else")
    forged = sign_certificate(forged, dev_key)
    # run
    result = verify_certificate(forged, trusted_keys=[prod_key.public_key_b64], now=DURING)
    # assert: integrity holds, trust does not
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"the certificate is signed by key {dev_key.key_id}, which is not among the "
                                         "trusted keys: if its issuer published this key id to you, trust it with "
                                         "`credittwin keys trust")
    assert verify_certificate(signed, trusted_keys=[prod_key.public_key_b64], now=DURING).ok


# --------------------------------------------------------------------------- the trust store


def test_the_trust_store_keeps_each_key_once_with_its_reason(tmp_path, prod_key):
    # setup
    store = tmp_path / "keys" / "trusted.json"
    # run
    first, added = trust_key(store, prod_key.public_key_b64, reason="published by Acme", actor="ana", source="PEM x")
    again, added_again = trust_key(store, prod_key.public_key_b64, reason="other", actor="bob", source="PEM y")
    keys = read_trust_store(store)
    # assert
    assert added and not added_again
    assert [(k.key_id, k.reason, k.added_by, k.origin) for k in keys] == [
        (prod_key.key_id, "published by Acme", "ana", "trust store")]
    assert again == keys[0] == first
    assert read_trust_store(tmp_path / "absent.json") == []


def test_trusting_a_key_without_a_reason_is_refused(tmp_path, prod_key):
    # run / assert
    with pytest.raises(CertificateError, match="needs a reason"):
        trust_key(tmp_path / "trusted.json", prod_key.public_key_b64, reason="  ", actor="ana", source="PEM x")
    assert not (tmp_path / "trusted.json").exists()


def test_a_trust_entry_edited_to_pair_a_trusted_id_with_another_key_is_refused(tmp_path, prod_key, dev_key):
    # setup: the forger keeps the trusted id but swaps in their own public key
    store = tmp_path / "trusted.json"
    trust_key(store, prod_key.public_key_b64, reason="published by Acme", actor="ana", source="PEM x")
    document = json.loads(store.read_text())
    document["keys"][0]["public_key"] = dev_key.public_key_b64
    store.write_text(json.dumps(document))
    # run / assert
    with pytest.raises(CertificateError, match=f"pairs key id '{prod_key.key_id}' with a public key whose id is "
                                               f"{dev_key.key_id}"):
        read_trust_store(store)


def test_a_public_key_is_read_from_a_public_or_private_pem_and_only_ed25519(tmp_path, prod_key):
    # setup
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (Encoding, NoEncryption, PrivateFormat, PublicFormat,
                                                              load_pem_private_key)

    private_key = load_pem_private_key(prod_key.source.read_bytes(), password=None)
    public_pem = tmp_path / "public.pem"
    public_pem.write_bytes(private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    other = tmp_path / "ec.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    # run / assert
    assert public_key_from_pem(public_pem) == public_key_from_pem(prod_key.source) == prod_key.public_key_b64
    with pytest.raises(CertificateError, match="not an Ed25519 key"):
        public_key_from_pem(other)


def test_the_deployment_trusts_its_own_keys_but_not_a_development_key_in_production(tmp_path, prod_key):
    # setup: a development key generated under the data root, a production key file, an empty store
    dev = load_signing_key(None, environment="development", dev_key_dir=tmp_path / "keys")
    store = tmp_path / "keys" / "trusted.json"
    # run
    development = deployment_trust(store, signing_key_file=prod_key.source, environment="development",
                                   dev_key_dir=tmp_path / "keys")
    production = deployment_trust(store, signing_key_file=prod_key.source, environment="production",
                                  dev_key_dir=tmp_path / "keys")
    # assert
    assert [(k.key_id, k.origin, k.development) for k in development] == [
        (prod_key.key_id, "signing key", False), (dev.key_id, "development key", True)]
    assert [k.key_id for k in production] == [prod_key.key_id]
    assert not store.exists()  # nothing is written by looking


def test_a_key_is_trusted_from_a_certificate_only_when_it_signed_it(release, tmp_path, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    json_path, _ = write(tmp_path, signed)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json_path.read_text().replace('"tenant": "acme"', '"tenant": "acmf"'))
    # run / assert
    assert signer_of_certificate(json_path) == (dev_key.public_key_b64, True)
    with pytest.raises(CertificateError, match="does not verify under its own key"):
        signer_of_certificate(tampered)


def test_a_development_key_is_a_problem_in_production(release, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    # run
    development = verify_certificate(signed, trusted_keys=[dev_key.key_id], now=DURING)
    production = verify_certificate(signed, trusted_keys=[dev_key.key_id], environment="production", now=DURING)
    # assert
    assert development.ok and any(DEVELOPMENT_BANNER in note for note in development.notes)
    assert not production.ok
    assert production.problems == [f"the certificate is signed with a development key ({dev_key.key_id}), which "
                                   "production (CREDITTWIN_ENV=production) never accepts: have the release "
                                   "re-certified with the deployment's production key"]


def test_a_named_pdf_that_is_missing_fails(release, tmp_path, dev_key):
    # setup
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    # run
    result = verify_certificate(signed, pdf_path=tmp_path / "certificate.pdf", now=DURING)
    # assert
    assert not result.ok and "is missing: a certificate is issued as its JSON and its PDF together" in result.problems[0]


def test_a_signed_manifest_covers_every_bundle_file(release, tmp_path, dev_key, prod_key):
    # setup: a bundle of the certificate and a report, with a manifest signed by the certificate's key
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    folder = tmp_path / "bundle"  # apart from the key files under tmp_path
    folder.mkdir()
    json_path, pdf_path = write(folder, signed)
    (folder / "report.json").write_text('{"score": 1}')
    manifest = {"payload_sha256": payload_sha256(signed), "files": [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in (json_path, pdf_path, folder / "report.json")
    ]}
    manifest_path = folder / "manifest.json"
    manifest_path.write_text(json.dumps(sign_manifest(manifest, dev_key)))
    # run
    good = verify_certificate(json_path, manifest_path=manifest_path, now=DURING)
    (folder / "notes.txt").write_text("added later")
    extra = verify_certificate(json_path, manifest_path=manifest_path, now=DURING)
    (folder / "notes.txt").unlink()
    manifest_path.write_text(json.dumps(sign_manifest(manifest, prod_key)))
    other_signer = verify_certificate(json_path, manifest_path=manifest_path, now=DURING)
    # assert
    assert good.ok, good.problems
    assert [(f["name"], f["status"]) for f in good.bundle_files] == [
        ("certificate.json", "ok"), ("certificate.pdf", "ok"), ("report.json", "ok")]
    assert extra.problems == ["'notes.txt' is in the bundle but not in its manifest.json: it is not part of the "
                              "exported release; remove it, or export the bundle again"]
    assert other_signer.problems == [f"the bundle's manifest.json is signed by key {prod_key.key_id}, which neither "
                                     "signed the certificate nor is trusted: export the bundle again"]


def test_the_pdf_must_carry_the_hash_and_say_what_the_json_says(release, tmp_path, dev_key):
    # setup: the PDF of another certificate, and a PDF of an edited document with the right hash line
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    other = sign_certificate(build_certificate(**certificate_args(release, display_name="Other")), dev_key)
    json_path, _ = write(tmp_path, signed)
    wrong = tmp_path / "wrong.pdf"
    wrong.write_bytes(render_certificate_pdf(other))
    doctored = tmp_path / "doctored.pdf"
    edited = json.loads(json.dumps(signed))
    edited["anonymity"]["k_achieved"] = 99
    doctored.write_bytes(render_certificate_pdf(edited))
    # run
    wrong_result = verify_certificate(json_path, pdf_path=wrong, now=DURING)
    doctored_result = verify_certificate(json_path, pdf_path=doctored, now=DURING)
    # assert
    assert any("does not carry the certificate's payload SHA-256" in p for p in wrong_result.problems)
    assert len(doctored_result.problems) == 1 and "does not say what the certificate JSON says" in doctored_result.problems[0]


def test_a_certificate_issued_in_the_earlier_layout_still_verifies(tmp_path):
    # setup: a certificate and PDF as `credittwin demo` issued them before the executive summary existed
    json_path, pdf_path = DATA / "certificate_layout1.json", DATA / "certificate_layout1.pdf"
    document = json.loads(json_path.read_text())
    during = datetime.fromisoformat(document["issued_at"]) + timedelta(days=1)
    edited = json.loads(json.dumps(document))
    edited["anonymity"]["k_achieved"] = 50
    doctored = tmp_path / "doctored.pdf"
    doctored.write_bytes(render_certificate_pdf_v1(edited))
    # run
    good = verify_certificate(json_path, pdf_path=pdf_path, now=during)
    bad = verify_certificate(json_path, pdf_path=doctored, now=during)
    # assert: the earlier layout is accepted only when it says what the JSON says, and the note says which
    assert "summary" not in document and "materialized_by_run.raw_loan_tape" in pdf_text(pdf_path.read_bytes())
    assert good.ok, good.problems
    assert good.pdf_file == {"name": "certificate_layout1.pdf", "ok": True, "layout": "earlier"}
    assert any("layout of certificates issued before the executive summary" in note for note in good.notes)
    assert not bad.ok and "does not say what the certificate JSON says" in bad.problems[0]


def test_a_new_certificate_is_not_accepted_with_a_pdf_in_the_earlier_layout(release, tmp_path, dev_key):
    # setup: the right figures, but without the executive summary the certificate now carries
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    json_path, _ = write(tmp_path, signed)
    old = tmp_path / "old.pdf"
    old.write_bytes(render_certificate_pdf_v1(signed))
    # run
    result = verify_certificate(json_path, pdf_path=old, now=DURING)
    # assert
    assert not result.ok and result.pdf_file["ok"] is False
    assert "does not say what the certificate JSON says" in result.problems[0]


def test_a_manifest_must_list_each_certified_file_with_its_certified_hash(release, tmp_path, dev_key):
    # setup: a bundle whose signed manifest lists loans.parquet with the hash of other bytes, which are in the folder
    signed = sign_certificate(build_certificate(**certificate_args(release)), dev_key)
    folder = tmp_path / "bundle"
    folder.mkdir()
    write(folder, signed)
    (folder / "loans.parquet").write_bytes(b"other loans")
    (folder / "anonymization.json").write_bytes((release["folder"] / "anonymization.json").read_bytes())
    manifest = {"payload_sha256": payload_sha256(signed), "files": [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(folder.iterdir())]}
    (folder / MANIFEST_NAME).write_text(json.dumps(sign_manifest(manifest, dev_key)))
    # run: without --data, the manifest is what checks the data files
    result = verify_certificate(folder / "certificate.json", manifest_path=folder / MANIFEST_NAME, now=DURING)
    # assert
    assert not result.ok
    assert result.problems == [f"the bundle's manifest.json lists 'loans.parquet' with sha256 {sha256(folder / 'loans.parquet')}, "
                               f"but the certificate certifies sha256 {release['files'][0]['sha256']}: export the bundle again"]
    assert ("loans.parquet", "not certified") in [(f["name"], f["status"]) for f in result.bundle_files]


def test_an_unreadable_or_unsigned_certificate_is_one_readable_problem(tmp_path):
    # setup
    broken, unsigned = tmp_path / "broken.json", tmp_path / "unsigned.json"
    broken.write_text('{"tenant": "acme",')
    unsigned.write_text(json.dumps({"tenant": "acme", "schema": CERTIFICATE_SCHEMA}))
    # run / assert
    assert "is not valid JSON" in verify_certificate(broken).problems[0]
    assert "no complete signature block" in verify_certificate(unsigned).problems[0]
    assert "cannot read the certificate" in verify_certificate(tmp_path / "absent.json").problems[0]


# --------------------------------------------------------------------------- keys


def test_production_without_a_key_file_names_the_setting(tmp_path):
    # run
    with pytest.raises(CertificateError) as caught:
        load_signing_key(None, environment="production", dev_key_dir=tmp_path, tenant="acme")
    # assert
    assert KEY_SETTING in str(caught.value) and "openssl genpkey -algorithm ed25519" in str(caught.value)
    assert "credittwin keygen" in str(caught.value) and caught.value.tenant == "acme"
    assert not (tmp_path / DEV_KEY_NAME).exists()


def test_a_world_readable_key_is_refused_in_production(tmp_path):
    # setup
    key = generate_key_file(tmp_path / "signing.pem")
    os.chmod(key.source, 0o644)
    # run
    with pytest.raises(CertificateError) as caught:
        load_signing_key(key.source, environment="production", dev_key_dir=tmp_path)
    # assert
    assert "readable by its group or by others (mode 644)" in str(caught.value) and "chmod 600" in str(caught.value)
    assert load_signing_key(key.source, environment="development", dev_key_dir=tmp_path).key_id == key.key_id
    os.chmod(key.source, 0o600)
    loaded = load_signing_key(key.source, environment="production", dev_key_dir=tmp_path)
    assert loaded.key_id == key.key_id and loaded.development is False


def test_a_missing_encrypted_or_non_ed25519_key_file_is_refused(tmp_path):
    # setup
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    for path in (ec_key, locked, garbage):
        os.chmod(path, 0o600)
    # run / assert
    for path, message in ((tmp_path / "absent.pem", "cannot be read"), (ec_key, "not an Ed25519 key"),
                          (locked, "encrypted"), (garbage, "not a PEM private key")):
        with pytest.raises(CertificateError, match=message):
            load_signing_key(path, environment="production", dev_key_dir=tmp_path)


def test_the_development_key_is_generated_once_and_reused(tmp_path):
    # setup
    folder = tmp_path / "keys"
    # run: two loads in a row, then eight racing loads on a fresh folder
    first = load_signing_key(None, environment="development", dev_key_dir=folder)
    second = load_signing_key(None, environment="development", dev_key_dir=folder)
    race_folder = tmp_path / "race"
    with ThreadPoolExecutor(8) as pool:
        raced = list(pool.map(lambda _: load_signing_key(None, environment="development", dev_key_dir=race_folder),
                              range(8)))
    # assert
    assert first.development and first.key_id == second.key_id and first.source == folder / DEV_KEY_NAME
    assert stat.S_IMODE((folder / DEV_KEY_NAME).stat().st_mode) == 0o600
    assert len({key.key_id for key in raced}) == 1
    assert sorted(p.name for p in race_folder.iterdir()) == [DEV_KEY_NAME]
    assert first.key_id == hashlib.sha256(base64.b64decode(first.public_key_b64)).hexdigest()[:16]


def test_keygen_writes_a_private_key_and_never_overwrites_one(tmp_path):
    # setup
    path = tmp_path / "keys" / "signing.pem"
    # run
    key = generate_key_file(path)
    # assert
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and not key.development
    with pytest.raises(CertificateError, match="already exists"):
        generate_key_file(path)
    replaced = generate_key_file(path, overwrite=True)
    assert replaced.key_id != key.key_id and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_scope_names_the_tape_and_its_period_in_months_and_withholds_it_under_dp(tmp_path):
    # setup: a demo tape as a lender uploads it, read as raw_loan_tape reads it
    from models.reports.certify import tape_scope
    from models.results import TapeSplit
    from models.tape.demo import generate_portfolio, write_landing
    from models.tape.loan_tape import find_upload, read_tape

    write_landing(generate_portfolio(400, months=12, seed=3), tmp_path / "acme", fmt="csv")
    upload = find_upload(tmp_path / "acme", "acme")
    tape = read_tape(upload)
    split = TapeSplit(loans=tape.loans, performance=tape.performance, schema=tape.schema, tenant_config=tape.config,
                      ingest={"files": [p.name for p in upload.files]})
    private = tape.config.model_copy(update={"privacy": tape.config.privacy.model_copy(update={"epsilon": 1.0})})
    dates = tape.loans.get_column("origination_date")
    # run
    scope = tape_scope(split)
    withheld = tape_scope(TapeSplit(loans=tape.loans, performance=tape.performance, schema=tape.schema,
                                    tenant_config=private, ingest=split.ingest))
    # assert
    assert scope == {"input_files": ["loans.csv", "performance.csv"], "train_rows": split.train.height,
                     "holdout_rows": split.holdout.height,
                     "period": {"column": "origination_date", "first": f"{dates.min():%Y-%m}", "last": f"{dates.max():%Y-%m}"}}
    assert withheld["period"]["column"] == "origination_date" and "first" not in withheld["period"]
    assert "under differential privacy" in withheld["period"]["withheld"]
