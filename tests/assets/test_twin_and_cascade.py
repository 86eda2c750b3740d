"""fitted_copula, lstm_cascade and synthetic_portfolio materialized through Dagster on a small demo book."""

import dagster as dg
import polars as pl
import pytest

from models.tape.demo import generate_portfolio, write_landing
from resources.settings import Settings
from resources.storage import VersionedStore
from tests.conftest import materialize_tenant, relax_audit

FAST_CASCADE = {"lstm_cascade": {"config": {"epochs": 8, "hidden_size": 32}}}


def _materialize(settings, instance, tenant, run_config=None, only=None):
    return materialize_tenant(settings, instance, tenant, only or None, run_config={"ops": run_config or FAST_CASCADE})


def _latest_metadata(instance, asset, tenant):
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[tenant]), limit=1
    ).records[0]
    return record.asset_materialization.metadata


@pytest.fixture(scope="module")
def demo_book(tmp_path_factory):
    data = tmp_path_factory.mktemp("twin") / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    portfolio = generate_portfolio(900, months=12, seed=3)
    write_landing(portfolio, data / "landing" / "bank", fmt="parquet")
    relax_audit(data / "landing" / "bank")
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "bank")
        yield settings, instance, result, portfolio


def test_whole_graph_materializes_with_checks(demo_book):
    _, _, result, _ = demo_book
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert {e.partition for e in result.get_asset_check_evaluations()} == {"bank"}  # shown per tenant in the UI
    assert checks[("synthetic_portfolio", "synthetic_fidelity")]
    assert ("synthetic_portfolio", "sequence_fidelity") in checks
    assert ("lstm_cascade", "cascade_beats_markov") in checks
    # per segment: on 900 loans the holdout is thin, so most segments are inconclusive; the check is never a pass
    # without a judged segment, and a judged segment shows in the table with its verdict
    segment = next(e for e in result.get_asset_check_evaluations() if e.check_name == "segment_fidelity")
    assert segment.severity == dg.AssetCheckSeverity.WARN
    if "not_measured" in segment.metadata:
        assert not segment.passed and "too thin" in segment.metadata["not_measured"].value
    else:
        shown = {(r.data["dimension"], r.data["segment"]) for r in segment.metadata["segments"].value.records}
        assert ("book", "all") in shown and any(d == "grade" for d, _ in shown)
    sequence = next(e for e in result.get_asset_check_evaluations() if e.check_name == "sequence_fidelity")
    assert {"cdr12_real", "cdr12_synthetic", "cdr12_relative_diff", "transition_distance"} <= set(sequence.metadata)
    applied = sequence.metadata["thresholds_applied"].value
    assert applied["cdr12_relative"] >= 0.10 and all(v >= 0.02 for v in applied["transition_rows"].values())


def test_fitted_copula_records_what_it_modelled(demo_book):
    settings, instance, _, _ = demo_book
    metadata = _latest_metadata(instance, "fitted_copula", "bank")
    assert "credit_score" in metadata["columns_modelled"].value
    assert set(metadata["identifiers_regenerated"].value) == {"loan_id", "borrower_id"}
    assert "data:image/png;base64," in metadata["correlation_heatmap"].value
    stored = VersionedStore(settings.data_dir, ["fitted_copula"], "bank").read()
    assert (stored.path / "model" / "model.json").exists()
    assert (stored.path / "plots" / "correlation.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(stored.path.rglob("*.pkl")) and not list(stored.path.rglob("*.pickle"))


def test_synthetic_portfolio_is_new_loans_with_histories(demo_book):
    settings, instance, _, portfolio = demo_book
    stored = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "bank").read()
    loans, performance = stored.table("loans"), stored.table("performance")
    real_ids = set(portfolio.loans.get_column("loan_id").to_list())
    assert not real_ids & set(loans.get_column("loan_id").to_list())
    assert set(loans.columns) == set(portfolio.loans.columns)
    assert set(performance.get_column("loan_id").unique().to_list()) <= set(loans.get_column("loan_id").to_list())
    model_sha = VersionedStore(settings.data_dir, ["fitted_copula"], "bank").read().manifest["content_sha256"]
    metadata = _latest_metadata(instance, "synthetic_portfolio", "bank")
    assert metadata["model_sha256"].value == model_sha
    assert metadata["seed"].value == 0
    # the demo's flag is set exactly when the history reaches default: each released history agrees with its flag
    given = metadata["histories_given_default_flag"].value
    assert given["applied"] and given["agreement"] == 1.0, given
    reached = performance.group_by("loan_id").agg((pl.col("status") == "default").any().alias("reached"))
    joined = loans.select("loan_id", pl.col("default_flag").cast(pl.Boolean)).join(reached, on="loan_id")
    assert joined.height == loans.height
    agreement = (joined.get_column("default_flag") == joined.get_column("reached")).mean()
    assert agreement >= 0.99 and agreement >= 1 - given["draws"]["unmatched"] / loans.height, given
    cascade = _latest_metadata(instance, "lstm_cascade", "bank")
    assert cascade["holdout_loglik_cascade"].value < 0 and cascade["holdout_loglik_markov"].value < 0
    assert "data:image/png;base64," in cascade["training_curve"].value
    real, generated = cascade["transition_matrix_real"], cascade["transition_matrix_generated"]
    assert [record.data["from"] for record in real.records] == [column.name for column in real.schema.columns][1:]
    assert sum(v for k, v in generated.records[0].data.items() if k != "from") == pytest.approx(1, abs=0.01)


def test_requested_rate_and_fixed_category_through_run_config(demo_book):
    settings, instance, _, _ = demo_book
    config = {
        **FAST_CASCADE,
        "synthetic_portfolio": {
            "config": {"rows": 2000, "seed": 5, "target_default_rate": 0.2, "conditions": {"product": "mortgage"}}
        },
    }
    store = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "bank")
    before = store.current()
    result = _materialize(settings, instance, "bank", run_config=config, only=["synthetic_portfolio"])
    # the sample is judged; on a book this small the conditioned reference is too thin for it to pass the blocking
    # fidelity check, so it is not stored (the last good portfolio stays current) and its figures travel in the failure
    fidelity = next(e for e in result.get_asset_check_evaluations() if e.check_name == "synthetic_fidelity")
    assert "worst_columns" in fidelity.metadata and not fidelity.passed
    assert store.current() == before
    failure = next(e for e in result.get_step_failure_events() if e.step_key == "synthetic_portfolio")
    figures = failure.event_specific_data.user_failure_data.metadata
    assert figures["dagster/row_count"].value == 2000
    assert figures["conditions"].value == {"target_rate": 0.2, "fixed": {"product": "mortgage"}}
    assert abs(figures["default_rate"].value - 0.2) <= 0.005
    assert figures["seed"].value == 5


def test_tenant_without_history_skips_the_cascade_and_still_releases(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "nohist"
    write_landing(generate_portfolio(400, months=6, seed=1), folder, fmt="csv")
    (folder / "performance.csv").unlink()
    relax_audit(folder)
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "nohist")
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
        assert "no performance history" in _latest_metadata(instance, "lstm_cascade", "nohist")["skipped"].value
        stored = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "nohist").read()
        assert "performance" not in stored.tables and stored.table("loans").height > 0
        # the history checks measured nothing: each is a warning with its reason, never a pass
        for name in ("cascade_beats_markov", "segment_fidelity", "sequence_fidelity"):
            check = next(e for e in result.get_asset_check_evaluations() if e.check_name == name)
            assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
            assert "no performance history" in check.metadata["not_measured"].value


def test_bad_tape_for_the_twin_names_tenant_file_and_column(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "flat"
    portfolio = generate_portfolio(300, months=6, seed=1)
    portfolio.loans = portfolio.loans.with_columns(pl.lit(0).cast(pl.Int64).alias("default_flag"))
    write_landing(portfolio, folder, fmt="csv")
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "flat", only=["raw_loan_tape", "fitted_copula"])
        assert not result.success
        message = " ".join(e.event_specific_data.error.message for e in result.get_step_failure_events())
        assert "tenant 'flat'" in message and "loans.csv" in message and "'default_flag'" in message


def test_constant_column_is_released_and_listed_not_refused(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "flat"
    portfolio = generate_portfolio(300, months=6, seed=1)
    portfolio.loans = portfolio.loans.with_columns(pl.lit("same").alias("region"))
    write_landing(portfolio, folder, fmt="csv")
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "flat", only=["raw_loan_tape", "fitted_copula"])
        assert result.success
        metadata = _latest_metadata(instance, "fitted_copula", "flat")
        assert "region" in metadata["constant_columns"].value
        assert "region" not in metadata["columns_modelled"].value


def test_anonymized_portfolio_meets_k_and_l_by_an_independent_group_by(demo_book):
    from models.privacy.anonymize import verify_k_anonymity

    settings, instance, result, _ = demo_book
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("anonymized_portfolio", "k_anonymity")]
    stored = VersionedStore(settings.data_dir, ["anonymized_portfolio"], "bank").read()
    loans = stored.table("loans")
    assert verify_k_anonymity(loans, ["age", "region", "annual_income"], "default_flag", 5, 2).passed
    assert loans.get_column("age").dtype == pl.String  # generalized to ranges
    kept = set(loans.get_column("loan_id").to_list())
    assert set(stored.table("performance").get_column("loan_id").unique().to_list()) <= kept
    metadata = _latest_metadata(instance, "anonymized_portfolio", "bank")
    assert metadata["k_achieved"].value >= 5 and metadata["l_achieved"].value >= 2
    assert metadata["rows_suppressed"].value <= 0.05 * loans.height + 1


@pytest.fixture(scope="module")
def servicing_tenant(tmp_path_factory):
    """Real loans (modeldata credit_data) uploaded with a servicer's history: ID, month "2019-03", STATUS, dpd, no amounts."""
    import yaml

    from tests.models.servicing_book import servicing_book, tenant_yaml

    data = tmp_path_factory.mktemp("servicing") / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    loans, history = servicing_book(1500, seed=0, period="text")
    folder = data / "landing" / "servicer"
    folder.mkdir(parents=True)
    loans.write_csv(folder / "loans.csv")
    history.write_csv(folder / "performance.csv")
    (folder / "tenant.yaml").write_text(yaml.safe_dump(tenant_yaml()))
    relax_audit(folder)
    with dg.instance_for_test() as instance:
        result = _materialize(
            settings, instance, "servicer", only=["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio"]
        )
        yield settings, result, history


def test_a_servicers_history_without_payment_reaches_a_release_in_its_own_vocabulary(servicing_tenant):
    # setup
    from models.sequences.histories import render_history, transition_distance

    settings, result, history = servicing_tenant
    # run: the release writes the synthetic history with the vocabulary recorded at ingest
    tape = VersionedStore(settings.data_dir, ["raw_loan_tape"], "servicer").read()
    portfolio = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "servicer").read()
    released = render_history(portfolio.table("performance"), tape.document("ingest")["performance"]["vocabulary"])
    # assert: the graph ran; the release has the file's columns, spellings and month format, no amounts
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    assert released.columns == ["ID", "month", "STATUS", "dpd"]
    assert set(released.get_column("STATUS").unique()) <= set(history.get_column("STATUS").unique())
    assert released.get_column("month").str.contains(r"^\d{4}-\d{2}$").all()
    assert released.schema["dpd"] == pl.Int64
    assert set(released.get_column("ID").to_list()) <= set(portfolio.table("loans").get_column("ID").to_list())
    # the synthetic book moves like the real one, whichever vocabulary both are read in
    real = tape.table("performance")
    distance = transition_distance(real, portfolio.table("performance"))
    assert distance["mean"] < 0.03, distance
    # the servicer's "bad" is its own label, not the charge-off in the history: the histories are drawn without it
    metadata = next(
        e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey("synthetic_portfolio")
    )
    given = metadata["histories_given_default_flag"].value
    assert not given["applied"] and given["agreement"] < 0.99 and "means something else" in given["reason"], given
    # this tape has no grade, DTI or product column: per-segment fidelity says so, a warning, never a pass
    segment = next(e for e in result.get_asset_check_evaluations() if e.check_name == "segment_fidelity")
    assert not segment.passed and "no grade, DTI or product column" in segment.metadata["not_measured"].value


def test_released_histories_stop_at_the_tapes_cut_off(tmp_path):
    # setup: a servicer's extract as of 2022-12: loans originated over 2021, no origination date in the loans file,
    # each history written by month up to the cut-off, so young vintages have short histories
    import yaml

    from models.sequences.histories import render_history
    from tests.models.sequences.cutoff_books import CUTOFF, cutoff_book, history_ends

    loans, perf, _ = cutoff_book(300, seed=3, origination=False)
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "extract"
    folder.mkdir(parents=True)
    loans.write_csv(folder / "loans.csv")
    perf.select("loan_id", pl.col("reporting_month").dt.strftime("%Y-%m").alias("month"), "status",
                "days_past_due", "balance", "payment").write_csv(folder / "performance.csv")
    config = {"target": {"column": "default_flag", "positive": 1}, "id_columns": ["loan_id", "borrower_id"],
              "quasi_identifiers": ["grade"]}
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    relax_audit(folder)
    history_assets = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio"]
    quick = {"lstm_cascade": {"config": {"epochs": 3}}}
    with dg.instance_for_test() as instance:
        # run
        result = _materialize(settings, instance, "extract", run_config=quick, only=history_assets)
        # assert: no released month passes the cut-off, and every open history runs up to it
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
        tape = VersionedStore(settings.data_dir, ["raw_loan_tape"], "extract").read()
        performance = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "extract").read().table("performance")
        released = render_history(performance, tape.document("ingest")["performance"]["vocabulary"])
        assert released.get_column("month").max() == "2022-12"
        ends = history_ends(performance)
        assert ends.get_column("last").max() == CUTOFF
        assert ends.filter(pl.col("open")).get_column("last").unique().to_list() == [CUTOFF]
        cutoff = _latest_metadata(instance, "synthetic_portfolio", "extract")["history_cutoff"].value
        assert cutoff["capped"] and cutoff["as_of"] == "2022-12", cutoff
        assert cutoff["source"] == "the history's last reporting month"
        assert "drawn from the real loans' first reporting months" in cutoff["first_month"]
        # a declared as-of month the history contradicts is refused when the tape is read (before any privacy
        # budget could be charged), naming the tenant, file and key
        relax_audit(folder, performance={"as_of": "2022-06"})
        refused = _materialize(settings, instance, "extract", run_config=quick, only=["raw_loan_tape", "lstm_cascade"])
        message = " ".join(e.event_specific_data.error.message for e in refused.get_step_failure_events())
        assert {e.step_key for e in refused.get_step_failure_events()} == {"raw_loan_tape"}
        assert "tenant 'extract'" in message and "'tenant.yaml'" in message
        assert "key 'performance.as_of' declares the history's cut-off 2022-06" in message


def test_a_history_with_days_past_due_only_warns_that_its_default_rate_was_not_measured(tmp_path):
    # setup: a servicer's history with days past due and no status column: its buckets never reach default, so the
    # 12-month default rate compares 0 with 0, a comparison that cannot fail
    import yaml

    portfolio = generate_portfolio(600, months=12, seed=4)
    portfolio.performance = portfolio.performance.drop("status")
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpd"
    write_landing(portfolio, folder, fmt="parquet")
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config.pop("performance", None)
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    relax_audit(folder)
    with dg.instance_for_test() as instance:
        # run
        result = _materialize(settings, instance, "dpd", run_config={"lstm_cascade": {"config": {"epochs": 2}}},
                              only=["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio"])
    # assert: a warning with its reason, not a pass
    assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "sequence_fidelity")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "reach no default within 12 months" in check.metadata["not_evaluated"].value
