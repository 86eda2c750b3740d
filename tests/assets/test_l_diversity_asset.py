"""anonymized_portfolio enforces and re-checks l on each of tenant.yaml's sensitive_columns (issue 14, defect 6)."""

import dagster as dg
import yaml

from models.tape.demo import generate_portfolio, write_landing
from resources.settings import Settings
from resources.storage import VersionedStore
from tests.conftest import materialize_tenant, relax_audit

ASSETS = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio"]
FAST_CASCADE = {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}


def test_anonymized_portfolio_checks_l_on_every_sensitive_column(tmp_path):
    # setup: a demo book whose tenant.yaml declares the product and the grade sensitive beside the default flag
    from models.privacy.anonymize import verify_k_anonymity

    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    folder = data / "landing" / "bank"
    write_landing(generate_portfolio(500, months=6, seed=5), folder, fmt="parquet")
    relax_audit(folder, sensitive_columns=["default_flag", "product", "grade"])
    assert yaml.safe_load((folder / "tenant.yaml").read_text())["sensitive_columns"][1:] == ["product", "grade"]

    with dg.instance_for_test() as instance:
        # run
        result = materialize_tenant(settings, instance, "bank", ASSETS, run_config={"ops": FAST_CASCADE})

        # assert: the blocking check passed on each column, and each column's l is recorded
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "k_anonymity")
        by_column = check.metadata["l_by_column"].value
        assert check.passed and set(by_column) == {"default_flag", "product", "grade"}
        assert min(by_column.values()) >= 2
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("anonymized_portfolio"), asset_partitions=["bank"]), limit=1
        ).records[0]
        assert record.asset_materialization.metadata["l_by_column"].value == by_column
        stored = VersionedStore(settings.data_dir, ["anonymized_portfolio"], "bank").read()
        loans = stored.table("loans")
        assert verify_k_anonymity(loans, ["age", "region", "annual_income"], ["product", "grade"], 5, 2).passed
        assert stored.document("anonymization")["l_by_column"] == by_column
