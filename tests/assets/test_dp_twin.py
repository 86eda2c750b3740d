"""A tenant under privacy.epsilon: the DP twin is charged to the ledger before it runs, once."""

import dagster as dg
import yaml

from resources.ledger import PrivacyLedger
from resources.settings import Settings
from resources.storage import VersionedStore
from tests.conftest import DP_DOMAINS, failure_text, materialize_tenant, write_dp_landing


def _write(folder, privacy):
    write_dp_landing(folder, privacy, rows=1500)


def _run(settings, instance, only):
    return materialize_tenant(settings, instance, "dpbank", only)


def test_dp_twin_is_charged_once_and_refused_over_budget(tmp_path):
    # setup
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpbank"
    privacy = {"k": 5, "epsilon": 1.0, "epsilon_budget": 1.5, "delta": 1e-6, "domains": DP_DOMAINS}
    _write(folder, privacy)
    with dg.instance_for_test() as instance:
        # run: fit under DP
        first = _run(settings, instance, ["raw_loan_tape", "fitted_copula"])
        assert first.success, [e.event_specific_data.error.message for e in first.get_step_failure_events()]
        store = VersionedStore(settings.data_dir, ["fitted_copula"], "dpbank")
        stored = store.read()
        assert stored.document("engine")["name"] == "credittwin-dp"
        assert stored.document("privacy")["label"].startswith("differentially private")
        with PrivacyLedger(settings.ledger) as ledger:
            status = ledger.status("dpbank")
        assert len(status.charges) == 1 and status.spent.epsilon == 1.0
        # run again on the same upload and settings: not charged twice, the stored model is released again
        again = _run(settings, instance, ["fitted_copula"])
        assert again.success
        assert store.read().manifest["content_sha256"] == stored.manifest["content_sha256"]
        with PrivacyLedger(settings.ledger) as ledger:
            assert len(ledger.status("dpbank").charges) == 1
        # a new DP configuration would need another epsilon of 1.0 with only 0.5 left: refused, nothing runs
        (folder / "tenant.yaml").write_text(
            yaml.safe_dump({**yaml.safe_load((folder / "tenant.yaml").read_text()), "privacy": {**privacy, "dp_split": 0.6}})
        )
        refused = _run(settings, instance, ["raw_loan_tape", "fitted_copula"])
        assert not refused.success
        message = " ".join(e.event_specific_data.error.message for e in refused.get_step_failure_events())
        assert "tenant 'dpbank'" in message and "remaining" in message
        assert store.read().manifest["content_sha256"] == stored.manifest["content_sha256"]
        with PrivacyLedger(settings.ledger) as ledger:
            assert ledger.status("dpbank").spent.epsilon == 1.0


def test_non_dp_twin_is_labelled_and_charges_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    _write(tmp_path / "data" / "landing" / "dpbank", {"k": 5})
    with dg.instance_for_test() as instance:
        result = _run(settings, instance, ["raw_loan_tape", "fitted_copula"])
        assert result.success
    stored = VersionedStore(settings.data_dir, ["fitted_copula"], "dpbank").read()
    assert stored.document("privacy")["label"].startswith("not differentially private")
    with PrivacyLedger(settings.ledger) as ledger:
        assert ledger.status("dpbank").charges == ()


def test_dp_cascade_is_charged_before_training_and_releases_a_dp_model(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpbank"
    privacy = {"k": 5, "epsilon": 1.0, "dpsgd_epsilon": 2.0, "epsilon_budget": 5.0, "delta": 1e-6, "domains": DP_DOMAINS}
    _write(folder, privacy)
    run_config = {"ops": {"lstm_cascade": {"config": {"epochs": 2, "hidden_size": 16}}}}
    with dg.instance_for_test() as instance:
        result = materialize_tenant(
            settings, instance, "dpbank", ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio"],
            run_config=run_config,
        )
        # the twin and the cascade materialize; the portfolio is stored only when its blocking fidelity check
        # passes, which this DP twin (undeclared numeric columns left out, issue 14 item 7) may not on 1,500 loans
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"raw_loan_tape", "fitted_copula", "lstm_cascade"} <= materialized
        if "synthetic_portfolio" not in materialized:
            assert "synthetic_fidelity" in failure_text(result), failure_text(result)
    stored = VersionedStore(settings.data_dir, ["lstm_cascade"], "dpbank").read()
    assert stored.document("status")["dp"] is True
    assert stored.document("privacy")["label"].startswith("DP-SGD: epsilon=")
    assert "replace-one borrower; the number of borrowers is public" in stored.document("privacy")["label"]
    assert not (stored.path / "markov").exists()  # the non-private baseline is scored, never released
    if "synthetic_portfolio" in materialized:
        portfolio = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "dpbank").read()
        assert portfolio.table("performance").height > 0
    with PrivacyLedger(settings.ledger) as ledger:
        charges = ledger.status("dpbank").charges
    assert sorted(c.asset for c in charges) == ["fitted_copula", "lstm_cascade"]
    dpsgd = next(c for c in charges if c.asset == "lstm_cascade")
    # charged as its replace-one (epsilon, delta), at most the requested 2.0 (issue 14 item 4)
    assert dpsgd.mechanism.kind == "pure" and 1.0 < dpsgd.epsilon <= 2.0
    assert "replace-one borrower" in dpsgd.mechanism.description
    # re-executing the same training is not charged again and releases the stored model, not fresh noise
    with dg.instance_for_test() as instance:
        again = materialize_tenant(settings, instance, "dpbank", ["lstm_cascade"], run_config=run_config)
        assert again.success
    assert VersionedStore(settings.data_dir, ["lstm_cascade"], "dpbank").read().manifest["content_sha256"] == (
        stored.manifest["content_sha256"]
    )
    with PrivacyLedger(settings.ledger) as ledger:
        assert len(ledger.status("dpbank").charges) == 2


def test_a_dp_setting_the_twin_would_refuse_is_refused_at_ingest_before_the_cascade_charges(tmp_path):
    # setup: the target's domain declared as numbers, which the DP copula refuses; the cascade trains under DP-SGD
    # too. Before, the whole graph ran: lstm_cascade charged its epsilon, then fitted_copula failed, and fixing
    # the line charged the cascade a second time.
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpbank"
    privacy = {"k": 5, "epsilon": 1.0, "epsilon_budget": 5.0, "delta": 1e-6,
               "domains": {**DP_DOMAINS, "default_flag": {"low": 0, "high": 1}}}
    _write(folder, privacy)
    with dg.instance_for_test() as instance:
        # run: the whole graph, as the landing sensor starts it
        result = _run(settings, instance, None)
    # assert: refused at raw_loan_tape naming the column and the key; nothing charged
    assert not result.success
    failed = {e.step_key for e in result.get_step_failure_events()}
    assert failed == {"raw_loan_tape"}, failure_text(result)
    assert "column 'default_flag'" in failure_text(result) and "tenant 'dpbank'" in failure_text(result)
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"raw_loan_tape"}  # neither charging step (fitted_copula, lstm_cascade) ran
