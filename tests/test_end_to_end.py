"""The tenant graph materialized through Dagster on SQLite and on the PostgreSQL server."""

import dagster as dg
import pytest

from pipelines.definitions import build_definitions
from resources.storage import VersionedStore
from tests.conftest import failure_text, write_small_tape


# The 120-loan tape is below the PD model's 200-row minimum (risk_model fails, naming it); the risk assets are
# materialized end to end in tests/assets/test_risk_and_reports.py and tests/pipelines/test_cli.py.
TOO_SMALL_FOR_A_PD_MODEL = {"risk_model", "portfolio_scores", "stress_test"}


def _run(settings, instance, tenant="acme", only=None):
    if not instance.has_dynamic_partition("tenants", tenant):
        instance.add_dynamic_partitions("tenants", [tenant])
    definitions = build_definitions(settings)
    job = definitions.resolve_job_def("tenant_pipeline")
    if not only:
        keys = definitions.resolve_asset_graph().get_all_asset_keys()
        only = [key.to_user_string() for key in keys if key.to_user_string() not in TOO_SMALL_FOR_A_PD_MODEL]
    selection = [dg.AssetKey(name) for name in only]
    return job.execute_in_process(partition_key=tenant, instance=instance, raise_on_error=False, asset_selection=selection)


def _assert_materialized(result, instance):
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"raw_loan_tape", "loan_features", "fitted_copula", "lstm_cascade", "synthetic_portfolio"} <= keys
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["loan_ids_unique"] and checks["tape_not_empty"] and checks["target_column_present"]
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_loan_tape"), asset_partitions=["acme"]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 120
    assert metadata["train_rows"].value + metadata["holdout_rows"].value == 120
    assert 0.0 <= metadata["default_rate"].value <= 1.0
    assert len(metadata["input_sha256"].value) == 64
    assert {c.name for c in metadata["dagster/column_schema"].schema.columns} >= {"loan_id", "default_flag"}


def test_tenant_materializes_on_sqlite(settings, tmp_path):
    write_small_tape(settings.landing_dir / "acme")
    with dg.instance_for_test() as instance:
        result = _run(settings, instance)
        _assert_materialized(result, instance)


def test_tenant_materializes_on_postgres(settings, pg_database):
    write_small_tape(settings.landing_dir / "acme")
    overrides = {"storage": {"postgres": {"postgres_url": pg_database}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = _run(settings, instance)
        _assert_materialized(result, instance)


def _bad_upload_fails(settings, instance, mutate, expected):
    """Materialize a good upload, break it with `mutate`, and check the failure and the kept output."""
    folder = write_small_tape(settings.landing_dir / "acme")
    assert _run(settings, instance, only=["raw_loan_tape"]).success
    store = VersionedStore(settings.data_dir, ["raw_loan_tape"], "acme")
    good_version = store.current()
    mutate(folder)
    result = _run(settings, instance, only=["raw_loan_tape"])
    assert not result.success
    message = " ".join(e.event_specific_data.error.message for e in result.get_step_failure_events())
    for fragment in expected:
        assert fragment in message, message
    assert store.current() == good_version  # the last good tape stays in place
    return result, folder


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda f: (f / "loans.csv").write_text(""), ["tenant 'acme'", "loans.csv", "empty"]),
        (lambda f: (f / "loans.csv").write_text("loan_id,age,default_flag\n"), ["tenant 'acme'", "loans.csv", "no rows"]),
        (
            lambda f: (f / "performance.csv").write_text("loan_id,period,status,days_past_due,balance,payment\nZZZ,1,current,0,1,1\n"),
            ["tenant 'acme'", "performance.csv", "loan_id"],
        ),
        (
            lambda f: (f / "tenant.yaml").write_text("target: {column: default_flag}\nquasi_identifier: [age]\n"),
            ["tenant 'acme'", "tenant.yaml", "unknown key 'quasi_identifier'"],
        ),
        (
            lambda f: (f / "tenant.yaml").write_text(
                "target: {column: default_flag}\nid_columns: [loan_id]\nprivacy: {epsilon_budget: 1.0, delta: 0.01}\n"
            ),
            ["tenant 'acme'", "tenant.yaml", "1/n"],
        ),
    ],
    ids=["empty-file", "header-only", "performance-ids-not-in-loans", "tenant-yaml-unknown-key", "delta-above-1-over-n"],
)
def test_unusable_upload_fails_clearly_and_keeps_last_good_output(settings, tmp_path, mutate, expected):
    with dg.instance_for_test() as instance:
        _, folder = _bad_upload_fails(settings, instance, mutate, expected)
        notes = list(folder.glob("*.rejected.txt"))
        assert notes and "tenant 'acme'" in notes[0].read_text()


def test_ingest_registers_the_tenants_privacy_budget(settings, tmp_path):
    from resources.ledger import PrivacyLedger

    write_small_tape(settings.landing_dir / "acme")
    with dg.instance_for_test() as instance:
        assert _run(settings, instance, only=["raw_loan_tape"]).success
    with PrivacyLedger(settings.ledger) as ledger:
        status = ledger.status("acme")
    assert status.budget.epsilon == 3.0 and 0 < status.budget.delta < 1 / 120
    assert status.charges == ()


def test_duplicate_loan_ids_fail_the_blocking_check(settings, tmp_path):
    def duplicate(folder):
        lines = (folder / "loans.csv").read_text().splitlines()
        (folder / "loans.csv").write_text("\n".join(lines + [lines[1]]) + "\n")

    with dg.instance_for_test() as instance:
        result, folder = _bad_upload_fails(settings, instance, duplicate, ["tenant 'acme'", "loans.csv", "loan_ids_unique"])
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["loan_ids_unique"].passed is False
        assert "L00000" in str(checks["loan_ids_unique"].metadata)  # the failing example is shown


def test_missing_declared_target_fails_the_blocking_check(settings, tmp_path):
    def drop_target(folder):
        (folder / "tenant.yaml").write_text("target: {column: defaulted, positive: 1}\nid_columns: [loan_id]\n")

    with dg.instance_for_test() as instance:
        result, _ = _bad_upload_fails(
            settings, instance, drop_target, ["tenant 'acme'", "loans.csv", "target.column", "defaulted"]
        )
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["target_column_present"] is False


# --------------------------------------------------------------------------- a failed blocking check moves nothing

# Few epochs and attacks; everything else is the production path. The 900-loan book passes every gate as uploaded.
FAST = {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}
CERTIFIED = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio",
             "privacy_audit", "privacy_certificate", "risk_model"]


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    """A tenant materialized up to its certificate and registered PD model, every blocking check passed."""
    from models.tape.demo import generate_portfolio, write_landing
    from resources.settings import Settings
    from tests.conftest import relax_audit

    data = tmp_path_factory.mktemp("blocking") / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    folder = data / "landing" / "bank"
    write_landing(generate_portfolio(900, months=12, seed=11), folder, fmt="parquet")
    relax_audit(folder, risk={"max_calibration_error": 0.15})
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, CERTIFIED)
        assert result.success, failure_text(result)
        yield settings, instance, folder


def _materialize(settings, instance, assets):
    from tests.conftest import materialize_tenant

    return materialize_tenant(settings, instance, "bank", assets, run_config={"ops": FAST})



def _currents(settings, assets) -> dict:
    return {asset: VersionedStore(settings.data_dir, [asset], "bank").current() for asset in assets}


def _latest_run(instance, asset) -> str:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=["bank"]), limit=1
    ).records[0].run_id


def _assert_blocked(result, instance, settings, asset, check, before):
    """`asset` failed `check`, stored nothing and recorded no materialization; the check and its reasons are shown."""
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == check)
    assert evaluation.passed is False and evaluation.asset_key == dg.AssetKey(asset)
    message = failure_text(result)
    assert f"{asset} failed its blocking check(s) {check}" in message and "stays current" in message
    assert _currents(settings, before) == before
    assert _latest_run(instance, asset) != result.run_id
    assert asset not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_failed_fidelity_check_keeps_the_last_good_synthetic_portfolio_current(certified):
    # setup: a new upload far from the book the twin was fitted on (amounts in thousandths), judged by the old twin
    import polars as pl

    settings, instance, folder = certified
    before = _currents(settings, ["synthetic_portfolio", "anonymized_portfolio"])
    original = (folder / "loans.parquet").read_bytes()
    loans = pl.read_parquet(folder / "loans.parquet")
    loans.with_columns(pl.col("annual_income") * 1000, pl.col("loan_amount") * 1000).write_parquet(folder / "loans.parquet")
    try:
        # run
        result = _materialize(settings, instance, ["raw_loan_tape", "synthetic_portfolio", "anonymized_portfolio"])
        # assert: nothing moved, and anonymized_portfolio did not run on the failed sample
        _assert_blocked(result, instance, settings, "synthetic_portfolio", "synthetic_fidelity", before)
        assert "anonymized_portfolio" not in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    finally:
        (folder / "loans.parquet").write_bytes(original)


def test_a_failed_privacy_audit_keeps_the_last_passed_audit_and_its_certificate_current(certified):
    # setup: a policy this release cannot meet (at most 1% of released rows closer to train than to holdout)
    import yaml

    settings, instance, folder = certified
    before = _currents(settings, ["privacy_audit", "privacy_certificate"])
    original = (folder / "tenant.yaml").read_text()
    config = yaml.safe_load(original)
    config["audit"] = {**config["audit"], "max_dcr_share": 0.01}
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    try:
        # run
        result = _materialize(settings, instance, ["raw_loan_tape", "privacy_audit", "privacy_certificate"])
        alone = _materialize(settings, instance, ["privacy_certificate"])
        # assert: the certificate alone does not certify under the last passed audit's older policy either
        _assert_blocked(result, instance, settings, "privacy_audit", "privacy_policy", before)
        assert not alone.success and "another audit policy than tenant.yaml's current one" in failure_text(alone)
        assert _currents(settings, before) == before
    finally:
        (folder / "tenant.yaml").write_text(original)


def test_a_failed_registration_gate_keeps_the_last_registered_model_current(certified):
    # setup: the same loans, but no holdout loan defaulted: the model cannot be evaluated on the real holdout
    import polars as pl

    from models.tape.split import split_by_unit

    settings, instance, folder = certified
    before = _currents(settings, ["risk_model"])
    original = (folder / "loans.parquet").read_bytes()
    loans = pl.read_parquet(folder / "loans.parquet")
    side = split_by_unit(loans, "borrower_id", "loan_id", 0.2)  # the tape splits by borrower
    loans.with_columns(
        pl.when(side == "holdout").then(0).otherwise(pl.col("default_flag")).alias("default_flag")
    ).write_parquet(folder / "loans.parquet")
    try:
        # run
        result = _materialize(settings, instance, ["raw_loan_tape", "risk_model"])
        # assert
        _assert_blocked(result, instance, settings, "risk_model", "registration_gate", before)
        assert "not evaluable" in failure_text(result)
    finally:
        (folder / "loans.parquet").write_bytes(original)
