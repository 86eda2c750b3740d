"""The privacy budget ledger against SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.privacy.accounting import MechanismSpec
from models.privacy.errors import BudgetExceededError, InvalidMechanismError, LedgerUnavailableError, PrivacyBudgetError
from resources.ledger import (
    KEY_SCHEME,
    LEGACY_KEY_SCHEME,
    IdempotencyKey,
    PrivacyLedger,
    PrivacyLedgerResource,
    default_ledger_url,
    format_budget,
    metadata,
    normalise_url,
)

REPO = Path(__file__).resolve().parents[2]
TENANT = "acme"
ASSET = "fitted_copula"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path: Path) -> str:
    """A fresh, empty ledger database on each backend."""
    if request.param == "sqlite":
        return default_ledger_url(tmp_path / "data")
    return request.getfixturevalue("pg_database")


@pytest.fixture
def ledger(ledger_url: str):
    """A migrated ledger with no budgets yet."""
    with PrivacyLedger(ledger_url) as opened:
        opened.migrate()
        yield opened


def _key(seed: int, asset: str = ASSET) -> IdempotencyKey:
    return IdempotencyKey(tenant=TENANT, asset=asset, input_data_version="dv-1", config_hash="cfg-1", seed=seed)


def _charge(ledger: PrivacyLedger, seed: int, mechanism: MechanismSpec | None = None, run_id: str = "run-1"):
    return ledger.charge(
        tenant=TENANT,
        asset=ASSET,
        run_id=run_id,
        mechanism=mechanism or MechanismSpec(kind="laplace", epsilon=0.5),
        idempotency=_key(seed),
    )


def _charge_count(url: str) -> int:
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM privacy_charges")).scalar_one()
    finally:
        engine.dispose()


def test_migrate_is_idempotent_and_matches_the_table_definitions(ledger: PrivacyLedger):
    # setup
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    # run
    ledger.migrate()

    # assert
    engine = sa.create_engine(ledger.url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": "ledger_alembic_version"})
            differences = compare_metadata(context, metadata)
            version = connection.execute(sa.text("SELECT version_num FROM ledger_alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert differences == []
    assert version == "0001"


def test_two_concurrent_migrations_both_succeed(ledger_url: str):
    # setup
    ledgers = [PrivacyLedger(ledger_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def migrate(one: PrivacyLedger) -> None:
        barrier.wait()
        try:
            one.migrate()
        except BaseException as error:  # collected and asserted below, in the test's thread
            errors.append(error)

    # run
    threads = [threading.Thread(target=migrate, args=(one,)) for one in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # assert
    assert errors == []
    ledgers[0].ensure_budget(TENANT, 1.0, 1e-6)
    assert ledgers[1].status(TENANT).budget.epsilon == 1.0
    for one in ledgers:
        one.close()


def test_charge_is_recorded_and_a_retry_is_not_charged_again(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 2.0, 1e-6)

    # run
    first = _charge(ledger, seed=1)
    retry = _charge(ledger, seed=1, run_id="run-2-reexecution")

    # assert
    assert first.charged is True
    assert retry.charged is False
    assert retry.id == first.id
    assert retry.run_id == "run-1"
    status = ledger.status(TENANT)
    assert len(status.charges) == 1
    assert status.spent.epsilon == pytest.approx(0.5)
    assert status.remaining_epsilon == pytest.approx(1.5)
    assert status.charges[0].accountant == "pure-sum"


def test_charge_over_budget_is_refused_with_spent_requested_remaining(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 1.0, 1e-6)
    _charge(ledger, seed=1, mechanism=MechanismSpec(kind="laplace", epsilon=0.75))

    # run
    with pytest.raises(BudgetExceededError, match=r"tenant 'acme'.*spent epsilon=0\.75.*requested epsilon=0\.5.*"
                       r"remaining epsilon=0\.25") as refused:
        _charge(ledger, seed=2)

    # assert
    error = refused.value
    assert (error.spent_epsilon, error.requested_epsilon, error.remaining_epsilon) == pytest.approx((0.75, 0.5, 0.25))
    assert error.would_reach_epsilon == pytest.approx(1.25)
    assert len(ledger.status(TENANT).charges) == 1


def test_gaussian_charges_compose_through_rdp_not_by_adding(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 10.0, 1e-5)
    dpsgd = MechanismSpec(kind="subsampled_gaussian", noise_multiplier=1.2, sampling_rate=0.02, steps=200, delta=1e-7)

    # run
    charges = [_charge(ledger, seed=seed, mechanism=dpsgd) for seed in range(3)]
    status = ledger.status(TENANT)

    # assert
    assert all(charge.accountant == "dp_accounting.rdp" for charge in charges)
    assert status.spent.accountant == "dp_accounting.rdp"
    assert charges[0].epsilon < status.spent.epsilon < 3 * charges[0].epsilon
    assert status.spent.delta == pytest.approx(3e-7)


def test_stored_running_composition_can_be_rebuilt_from_the_charges(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 10.0, 1e-5)
    _charge(ledger, seed=1, mechanism=MechanismSpec(kind="gaussian", noise_multiplier=3.0, delta=1e-7))
    _charge(ledger, seed=2)
    before = ledger.status(TENANT).spent
    engine = sa.create_engine(ledger.url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE privacy_budgets SET spent_accounting = NULL"))
    engine.dispose()

    # run
    _charge(ledger, seed=3, mechanism=MechanismSpec(kind="gaussian", noise_multiplier=3.0, delta=1e-7))
    after = ledger.status(TENANT).spent

    # assert
    assert after.details["pure-sum"]["epsilon"] == pytest.approx(before.details["pure-sum"]["epsilon"])
    assert after.details["dp_accounting.rdp"]["mechanisms"] == 2
    assert after.epsilon > before.epsilon


def test_concurrent_charges_exactly_k_of_n_succeed(ledger: PrivacyLedger):
    # setup: a budget for exactly 5 charges of 0.3, raced by 12 runs
    ledger.ensure_budget(TENANT, 1.5, 1e-6)
    barrier = threading.Barrier(12)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(seed: int) -> None:
        barrier.wait()
        try:
            _charge(ledger, seed=seed, mechanism=MechanismSpec(kind="laplace", epsilon=0.3))
            result = "charged"
        except BudgetExceededError:
            result = "refused"
        with lock:
            outcomes.append(result)

    # run
    threads = [threading.Thread(target=attempt, args=(seed,)) for seed in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # assert
    assert sorted(outcomes) == ["charged"] * 5 + ["refused"] * 7
    status = ledger.status(TENANT)
    assert len(status.charges) == 5
    assert status.spent.epsilon == pytest.approx(5 * 0.3)
    assert status.spent.epsilon <= 1.5 * (1 + 1e-9)


def test_charges_are_append_only_in_the_database(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 2.0, 1e-6)
    _charge(ledger, seed=1)
    engine = sa.create_engine(ledger.url)

    # run / assert
    for statement in ("UPDATE privacy_charges SET epsilon = 0", "DELETE FROM privacy_charges"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(sa.text(statement))
    engine.dispose()
    assert ledger.status(TENANT).spent.epsilon == pytest.approx(0.5)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budget_epsilon_is_refused_naming_the_tenant(ledger: PrivacyLedger, epsilon: float):
    with pytest.raises(PrivacyBudgetError, match=r"tenant 'acme'.*epsilon must be a finite number greater than 0"):
        ledger.ensure_budget(TENANT, epsilon, 1e-6)


def test_budget_delta_of_one_over_n_is_refused(ledger: PrivacyLedger):
    with pytest.raises(PrivacyBudgetError, match=r"not below 1/n.*use delta well below 1/n"):
        ledger.ensure_budget(TENANT, 1.0, 1 / 500, n_records=500)


def test_ensure_budget_never_changes_an_existing_budget(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 1.0, 1e-6)

    # run
    again = ledger.ensure_budget(TENANT, 9.0, 1e-7)

    # assert
    assert (again.epsilon, again.delta) == (1.0, 1e-6)
    assert len(ledger.history(TENANT)) == 1


def test_raise_budget_is_logged_and_cannot_go_below_spent(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 1.0, 1e-6)
    _charge(ledger, seed=1, mechanism=MechanismSpec(kind="laplace", epsilon=0.8))

    # run
    raised = ledger.raise_budget(TENANT, 3.0, 1e-6, reason="DPO approved ticket 42", actor="alice")

    # assert
    assert raised.epsilon == 3.0
    change = ledger.history(TENANT)[-1]
    assert (change.old_epsilon, change.new_epsilon, change.reason, change.actor) == (
        1.0, 3.0, "DPO approved ticket 42", "alice"
    )
    with pytest.raises(PrivacyBudgetError, match=r"epsilon=0\.8 .*already spent"):
        ledger.raise_budget(TENANT, 0.5, 1e-6, reason="tighten", actor="alice")
    with pytest.raises(PrivacyBudgetError, match="needs a reason"):
        ledger.raise_budget(TENANT, 4.0, 1e-6, reason="  ", actor="alice")
    assert ledger.status(TENANT).budget.epsilon == 3.0


def test_charge_without_budget_or_with_a_foreign_key_is_refused(ledger: PrivacyLedger):
    # setup
    with pytest.raises(PrivacyBudgetError, match="tenant 'acme': has no privacy budget"):
        _charge(ledger, seed=1)
    ledger.ensure_budget(TENANT, 1.0, 1e-6)

    # run / assert
    with pytest.raises(PrivacyBudgetError, match="idempotency key names tenant 'acme' and asset 'other'"):
        ledger.charge(
            tenant=TENANT, asset=ASSET, run_id="r", mechanism=MechanismSpec(kind="pure", epsilon=0.1),
            idempotency=_key(1, asset="other"),
        )
    with pytest.raises(InvalidMechanismError, match="certifies epsilon"):
        _charge(ledger, seed=2, mechanism=MechanismSpec(kind="laplace", scale=1.0, epsilon=0.5))
    assert ledger.status(TENANT).charges == ()


def test_unreachable_database_refuses_the_charge(tmp_path: Path):
    # setup
    dead = PrivacyLedger("postgresql://postgres@127.0.0.1:1/credittwin")

    # run / assert
    with pytest.raises(LedgerUnavailableError, match="nothing was charged.*Fix: check that the database is reachable"):
        _charge(dead, seed=1)
    dead.close()


def test_connection_killed_between_lock_and_commit_neither_half_writes_nor_loses(pg_database: str, pg_server_url: str):
    # setup
    import psycopg2

    def kill_my_backend(connection: sa.Connection) -> None:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        admin = psycopg2.connect(pg_server_url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()

    with PrivacyLedger(pg_database) as setup:
        setup.migrate()
        setup.ensure_budget(TENANT, 1.0, 1e-6)
    doomed = PrivacyLedger(pg_database, before_commit=kill_my_backend)

    # run
    with pytest.raises(LedgerUnavailableError, match="rolled back"):
        _charge(doomed, seed=7)
    doomed.close()

    # assert
    assert _charge_count(pg_database) == 0
    with PrivacyLedger(pg_database) as healthy:
        assert _charge(healthy, seed=7).charged is True
        assert _charge(healthy, seed=7).charged is False
        assert healthy.status(TENANT).spent.epsilon == pytest.approx(0.5)
    assert _charge_count(pg_database) == 1


_CHARGE_THEN_HANG = """
import sys, time
from models.privacy.accounting import MechanismSpec
from resources.ledger import IdempotencyKey, PrivacyLedger
ledger = PrivacyLedger(sys.argv[1])
key = IdempotencyKey(tenant="acme", asset="fitted_copula", input_data_version="dv-1", config_hash="cfg-1", seed=99)
charge = ledger.charge(tenant="acme", asset="fitted_copula", run_id="run-killed",
                       mechanism=MechanismSpec(kind="laplace", epsilon=0.5), idempotency=key)
print(f"charged {charge.id} {charge.charged}", flush=True)
time.sleep(120)
"""


def test_run_killed_after_charging_is_not_charged_again_on_reexecution(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 1.0, 1e-6)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _CHARGE_THEN_HANG, ledger.url], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )

    # run: the run dies after the charge, before its private work
    line = process.stdout.readline().split()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    process.stdout.close()
    again = _charge(ledger, seed=99, run_id="run-reexecuted")

    # assert
    assert line[0] == "charged" and line[2] == "True"
    assert process.returncode == -signal.SIGKILL
    assert again.charged is False
    assert again.id == int(line[1])
    assert again.run_id == "run-killed"
    assert ledger.status(TENANT).spent.epsilon == pytest.approx(0.5)


def test_format_budget_shows_total_spent_remaining_and_charges(ledger: PrivacyLedger):
    # setup
    ledger.ensure_budget(TENANT, 2.0, 1e-6)
    empty = format_budget(ledger.status(TENANT))
    _charge(ledger, seed=1, mechanism=MechanismSpec(kind="gaussian", noise_multiplier=4.0, delta=1e-7))

    # run
    text = format_budget(ledger.status(TENANT))

    # assert
    assert "No charges." in empty
    for expected in ("tenant 'acme'", "total", "spent", "remaining", "Charges (1)", ASSET, "dp_accounting.rdp", "gaussian z=4"):
        assert expected in text


def test_idempotency_key_digest_is_a_stable_sha256_of_rfc_8785_json():
    # setup
    key = _key(3)
    fields = {"tenant": TENANT, "asset": ASSET, "input_data_version": "dv-1", "config_hash": "cfg-1", "seed": 3}
    canonical = '{"asset":"fitted_copula","config_hash":"cfg-1","input_data_version":"dv-1","seed":3,"tenant":"acme",' \
        '"v":"credittwin-ledger-key/v2"}'
    legacy = json.dumps({"v": "credittwin-ledger-key/v1", **fields}, sort_keys=True, separators=(",", ":"))

    # run
    digest = key.digest()

    # assert: the scheme is hashed in, so the two schemes never give one key the same digest
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    assert key.digest(LEGACY_KEY_SCHEME) == hashlib.sha256(legacy.encode()).hexdigest() != digest
    assert _key(4).digest() != digest
    assert IdempotencyKey.from_dict(key.to_dict()) == key
    with pytest.raises(PrivacyBudgetError, match="seed must be an integer"):
        IdempotencyKey(TENANT, ASSET, "dv-1", "cfg-1", seed=1.5)
    with pytest.raises(PrivacyBudgetError, match="2\\^53"):
        IdempotencyKey(TENANT, ASSET, "dv-1", "cfg-1", seed=2**60)


def test_a_charge_stored_under_the_legacy_key_is_not_charged_again(ledger: PrivacyLedger, monkeypatch):
    # setup: a charge made by a version that hashed keys with json.dumps, as an existing database holds it
    ledger.ensure_budget(TENANT, 2.0, 1e-6)
    current_digest = IdempotencyKey.digest
    monkeypatch.setattr(IdempotencyKey, "digest", lambda key, scheme=None: current_digest(key, LEGACY_KEY_SCHEME))
    old = _charge(ledger, seed=1)
    monkeypatch.undo()
    assert old.idempotency_hash == _key(1).digest(LEGACY_KEY_SCHEME)

    # run: the re-execution after the upgrade, and a new charge
    retry = _charge(ledger, seed=1, run_id="run-2-after-upgrade")
    new = _charge(ledger, seed=2, run_id="run-3")

    # assert: the old charge is returned, not charged twice; new charges are keyed under RFC 8785
    assert (retry.charged, retry.id, retry.idempotency_hash) == (False, old.id, old.idempotency_hash)
    assert new.charged and new.idempotency_hash == _key(2).digest(KEY_SCHEME)
    assert _charge(ledger, seed=2, run_id="run-4").id == new.id
    assert ledger.status(TENANT).spent.epsilon == pytest.approx(1.0)
    assert _charge_count(ledger.url) == 2


def test_urls_are_normalised_and_unsupported_ones_refused(tmp_path: Path):
    # run / assert
    assert normalise_url("postgresql://u@h:5432/db").startswith("postgresql+psycopg2://")
    assert normalise_url("postgres://u@h/db").startswith("postgresql+psycopg2://")
    assert default_ledger_url(tmp_path).endswith("/credittwin.sqlite")
    with pytest.raises(PrivacyBudgetError, match="in-memory SQLite"):
        PrivacyLedger("sqlite://")
    with pytest.raises(PrivacyBudgetError, match="not 'mysql'"):
        PrivacyLedger("mysql://u@h/db")


def test_dagster_resource_gives_a_migrated_ledger(tmp_path: Path):
    # setup
    resource = PrivacyLedgerResource(url=default_ledger_url(tmp_path))

    # run
    with resource.ledger() as opened:
        opened.ensure_budget(TENANT, 1.0, 1e-6)
        status = opened.status(TENANT)

    # assert
    assert status.budget.epsilon == 1.0
    assert math.isclose(status.remaining_epsilon, 1.0)
    assert "url" in PrivacyLedgerResource.model_fields
    assert PrivacyLedgerResource.model_fields["url"].description


def test_default_delta_budget_lasts_many_weekly_regenerations(tmp_path):
    """Issue 14 defect 8: with the default budget, one release no longer spends the whole delta."""
    from models.privacy.accounting import DEFAULT_EPSILON_BUDGET, MechanismSpec, release_delta, resolve_budget
    from resources.ledger import IdempotencyKey, PrivacyLedger, default_ledger_url

    # setup: a 5,000-borrower tenant with the platform default budget
    epsilon, delta = resolve_budget(None, None, 5000, tenant="weekly")
    per_release = release_delta(None, 5000)
    with PrivacyLedger(default_ledger_url(tmp_path)) as ledger:
        ledger.migrate()
        ledger.ensure_budget("weekly", epsilon, delta, n_records=5000)
        # run: weekly regenerations, each a fresh charge spending the per-release delta
        for week in range(5):
            ledger.charge(
                tenant="weekly", asset="lstm_cascade", run_id=f"week{week}",
                mechanism=MechanismSpec(kind="pure", epsilon=DEFAULT_EPSILON_BUDGET / 10, delta=per_release),
                idempotency=IdempotencyKey("weekly", "lstm_cascade", f"upload{week}", "c" * 64, 0),
            )
        status = ledger.status("weekly")
    # assert: five runs spent a twentieth of the delta budget
    assert len(status.charges) == 5
    assert status.remaining_delta >= 0.9 * delta
