"""The per-tenant differential-privacy budget ledger, in SQL.

Each tenant has a total budget (epsilon, delta) and an append-only list of
charges. A charge is made before the private computation runs, in one
transaction that locks the tenant's budget row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): it returns the existing charge when
the idempotency key was charged before (a retry or a re-execution), and
otherwise composes what was spent with the new mechanism through
`models.privacy.accounting` and either records the charge or refuses it with
`BudgetExceededError`. Two runs racing for the last of a budget therefore
serialise on the row lock and exactly one proceeds.

An idempotency key is stored as the SHA-256 of its RFC 8785 canonical JSON
(`KEY_SCHEME`). Charges made before RFC 8785 were keyed over Python's
``json.dumps`` (`LEGACY_KEY_SCHEME`); a charge looks its key up under both, so
re-executing a computation charged before the upgrade does not charge it again.

The schema is created by the Alembic migrations in ``resources/migrations``
(`PrivacyLedger.migrate`). The embedded default is SQLite under the data dir
(`default_ledger_url`); production and CI use PostgreSQL.

`PrivacyLedger` has no Dagster dependency beyond this module's import, so it is
tested alone; `PrivacyLedgerResource` is the thin Dagster resource around it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from models.privacy.accounting import (
    NEIGHBOURS,
    RELEASES_PER_DELTA_BUDGET,
    Composition,
    MechanismSpec,
    RdpCurve,
    RunningComposition,
    account,
    rdp_curve,
    validate_budget,
)
from models.files import MAX_SAFE_INTEGER, canonical_json
from models.privacy.errors import BudgetExceededError, LedgerUnavailableError, PrivacyBudgetError
from models.tape.tenant import validate_tenant_id
from resources import sqlstore
from resources.sqlstore import SqlStore, id_column

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LEDGER_VERSION_TABLE = "ledger_alembic_version"
LEDGER_FILE = "credittwin.sqlite"
ACCOUNTANT = "rdp"
"""The ledger composes Gaussian mechanisms in RDP: each charge's RDP curve is
stored with it and curves add, so a charge composes any history in O(charges)."""

# composing in floating point must not refuse the k-th of k equal charges that fit exactly
_BUDGET_RELATIVE_SLACK = 1e-9
KEY_SCHEME = "credittwin-ledger-key/v2"
"""How new charges' idempotency keys are hashed: RFC 8785 canonical JSON (`models.files.canonical_json`)."""
LEGACY_KEY_SCHEME = "credittwin-ledger-key/v1"
"""How keys were hashed before v2: Python's ``json.dumps`` with sorted keys. A charge stored so is still found by
a retry, which looks a key up under both schemes, so it is never charged twice."""
KEY_SCHEMES = (KEY_SCHEME, LEGACY_KEY_SCHEME)
_TEXT_LIMIT = 255

metadata = sa.MetaData()

privacy_budgets = sa.Table(
    "privacy_budgets",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("epsilon_total", sa.Double(), nullable=False),
    sa.Column("delta_total", sa.Double(), nullable=False),
    # the running composition of the tenant's charges (models.privacy.accounting.RunningComposition), kept
    # under the same row lock as the charges so a charge composes in O(1); the charges stay authoritative
    sa.Column("spent_accounting", sa.JSON(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

privacy_charges = sa.Table(
    "privacy_charges",
    metadata,
    id_column(),
    sa.Column(
        "tenant", sa.String(63), sa.ForeignKey("privacy_budgets.tenant", name="fk_privacy_charges_tenant"), nullable=False
    ),
    sa.Column("asset", sa.String(255), nullable=False),
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("mechanism", sa.JSON(), nullable=False),
    sa.Column("epsilon", sa.Double(), nullable=False),
    sa.Column("delta", sa.Double(), nullable=False),
    sa.Column("accountant", sa.String(64), nullable=False),
    sa.Column("idempotency_hash", sa.String(64), nullable=False),
    sa.Column("idempotency", sa.JSON(), nullable=False),
    sa.Column("accounting", sa.JSON(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("tenant", "idempotency_hash", name="uq_privacy_charges_tenant_key"),
)

budget_changes = sa.Table(
    "budget_changes",
    metadata,
    id_column(),
    sa.Column(
        "tenant", sa.String(63), sa.ForeignKey("privacy_budgets.tenant", name="fk_budget_changes_tenant"), nullable=False
    ),
    sa.Column("old_epsilon", sa.Double(), nullable=True),
    sa.Column("old_delta", sa.Double(), nullable=True),
    sa.Column("new_epsilon", sa.Double(), nullable=False),
    sa.Column("new_delta", sa.Double(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_budget_changes_tenant", "tenant"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _text(value: object, name: str, tenant: str | None) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT_LIMIT:
        raise PrivacyBudgetError(
            f"{name} must be a non-empty string of at most {_TEXT_LIMIT} characters, got {value!r}.",
            tenant=tenant,
            fix=f"pass the {name} of the run being charged.",
        )
    return value


@dataclass(frozen=True)
class IdempotencyKey:
    """What makes two charges the same charge: a retry or re-execution of one computation.

    Fields: the tenant, the asset, the data version of its input, a hash of its
    configuration and its random seed. `digest` is a stable SHA-256 of them.
    """

    tenant: str
    asset: str
    input_data_version: str
    config_hash: str
    seed: int | None

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant)
        for name in ("asset", "input_data_version", "config_hash"):
            _text(getattr(self, name), name, self.tenant)
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool) or abs(self.seed) > MAX_SAFE_INTEGER
        ):
            raise PrivacyBudgetError(
                f"seed must be an integer of at most 2^53 - 1 in size, or None, got {self.seed!r}.",
                tenant=self.tenant,
                fix="pass the integer seed the private computation uses (one a JSON number holds exactly).",
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (stored with the charge)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IdempotencyKey":
        """Rebuild a key from `to_dict` output."""
        return cls(**{name: data[name] for name in ("tenant", "asset", "input_data_version", "config_hash", "seed")})

    def digest(self, scheme: str = KEY_SCHEME) -> str:
        """Hex SHA-256 of the key's fields and `scheme` (hashed as ``"v"``) in that scheme's canonical JSON."""
        document = {"v": scheme, **self.to_dict()}
        if scheme == KEY_SCHEME:
            return hashlib.sha256(canonical_json(document)).hexdigest()
        if scheme == LEGACY_KEY_SCHEME:
            return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        raise PrivacyBudgetError(f"unknown idempotency key scheme {scheme!r}.", tenant=self.tenant,
                                 fix=f"use one of {list(KEY_SCHEMES)}.")


@dataclass(frozen=True)
class Budget:
    """A tenant's total privacy budget."""

    tenant: str
    epsilon: float
    delta: float
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Charge:
    """One recorded charge. `charged` is False when an earlier identical charge was returned."""

    id: int
    tenant: str
    asset: str
    run_id: str
    mechanism: MechanismSpec
    epsilon: float
    delta: float
    accountant: str
    idempotency_hash: str
    idempotency: IdempotencyKey
    created_at: datetime
    charged: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for asset metadata."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "asset": self.asset,
            "run_id": self.run_id,
            "mechanism": self.mechanism.to_dict(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "idempotency_hash": self.idempotency_hash,
            "idempotency": self.idempotency.to_dict(),
            "created_at": self.created_at.isoformat(),
            "charged": self.charged,
        }


@dataclass(frozen=True)
class BudgetChange:
    """One logged change of a tenant's budget (`old_*` are None when it was created)."""

    id: int
    tenant: str
    old_epsilon: float | None
    old_delta: float | None
    new_epsilon: float
    new_delta: float
    reason: str
    actor: str
    created_at: datetime


@dataclass(frozen=True)
class BudgetStatus:
    """A tenant's budget, what its charges compose to, and the charges themselves."""

    budget: Budget
    spent: Composition
    charges: tuple[Charge, ...]

    @property
    def tenant(self) -> str:
        return self.budget.tenant

    @property
    def remaining_epsilon(self) -> float:
        return max(self.budget.epsilon - self.spent.epsilon, 0.0)

    @property
    def remaining_delta(self) -> float:
        return max(self.budget.delta - self.spent.delta, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (asset metadata, `credittwin budget --json`)."""
        return {
            "tenant": self.tenant,
            "total": {"epsilon": self.budget.epsilon, "delta": self.budget.delta},
            "spent": self.spent.to_dict(),
            "remaining": {"epsilon": self.remaining_epsilon, "delta": self.remaining_delta},
            "charges": [charge.to_dict() for charge in self.charges],
        }


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL the ledger connects with.

    A bare ``postgresql://`` (or ``postgres://``) URL is given the psycopg2
    driver, because SQLAlchemy 2.1 would otherwise pick psycopg 3, which is not
    a dependency. Only SQLite files and PostgreSQL are supported
    (`resources.sqlstore.normalise_url`).

    Raises:
        PrivacyBudgetError: not a database URL, in-memory SQLite, or another backend.
    """
    ledger = PrivacyLedger
    return sqlstore.normalise_url(url, store=ledger.store_name, error=ledger.error_class, kept=ledger.kept)


def default_ledger_url(data_dir: Path | str) -> str:
    """The embedded default: a SQLite file under the data dir."""
    return f"sqlite:///{(Path(data_dir).resolve() / LEDGER_FILE).as_posix()}"


def _over(value: float, limit: float) -> bool:
    return value > limit * (1 + _BUDGET_RELATIVE_SLACK)


class PrivacyLedger(SqlStore):
    """The privacy budget ledger of every tenant, in one SQL database.

    The engine, `close` and the context manager, the translation of database
    failures into `LedgerUnavailableError` and `migrate` come from
    `resources.sqlstore.SqlStore`.

    Args:
        url: SQLAlchemy URL, ``sqlite:///<data>/credittwin.sqlite`` or
            ``postgresql://...`` (given the psycopg2 driver).
        lock_timeout_s: how long a charge waits for another run's lock on the
            same tenant before giving up with `LedgerUnavailableError`.
        before_commit: fault-injection hook for tests, called with the open
            connection inside `charge`'s transaction after the charge row is
            written and before it commits.

    Raises:
        PrivacyBudgetError: a bad `lock_timeout_s`, or a URL that is not SQLite on a file or PostgreSQL.
    """

    store_name = "privacy ledger"
    kept = "every charge"
    error_class = PrivacyBudgetError
    unavailable_class = LedgerUnavailableError
    rolled_back = ", so nothing was charged or changed and no private computation may run"
    retry_fix = "check that the database is reachable, then retry: the same idempotency key is charged at most once."
    migrations_dir = MIGRATIONS_DIR
    # serialises concurrent migrations ("CTLEDGER" in ASCII)
    migration_lock_key = 0x43544C4544474552
    application_name = "credittwin-ledger"
    pool_size = 10
    max_overflow = 40

    def _budget_row(self, connection: sa.Connection, tenant: str, *, lock: bool) -> sa.Row | None:
        query = sa.select(privacy_budgets).where(privacy_budgets.c.tenant == tenant)
        if lock:
            # FOR UPDATE on PostgreSQL; SQLite renders nothing and relies on BEGIN IMMEDIATE
            query = query.with_for_update()
        return connection.execute(query).one_or_none()

    @staticmethod
    def _budget(row: sa.Row) -> Budget:
        return Budget(
            tenant=row.tenant,
            epsilon=float(row.epsilon_total),
            delta=float(row.delta_total),
            created_at=_aware(row.created_at),
            updated_at=_aware(row.updated_at),
        )

    @staticmethod
    def _charge(row: sa.Row, *, charged: bool) -> Charge:
        return Charge(
            id=int(row.id),
            tenant=row.tenant,
            asset=row.asset,
            run_id=row.run_id,
            mechanism=MechanismSpec.from_dict(row.mechanism),
            epsilon=float(row.epsilon),
            delta=float(row.delta),
            accountant=row.accountant,
            idempotency_hash=row.idempotency_hash,
            idempotency=IdempotencyKey.from_dict(row.idempotency),
            created_at=_aware(row.created_at),
            charged=charged,
        )

    @staticmethod
    def _spent(rows: Sequence[sa.Row]) -> RunningComposition:
        """What `rows` (charges with their mechanism and stored RDP curve) compose to."""
        return RunningComposition.of(
            [MechanismSpec.from_dict(row.mechanism) for row in rows],
            [RdpCurve.from_dict(row.accounting) if row.accounting else None for row in rows],
        )

    def _running(self, connection: sa.Connection, tenant: str, budget_row: sa.Row) -> RunningComposition:
        """The tenant's running composition: the stored one when it covers every charge, else rebuilt."""
        count = connection.execute(
            sa.select(sa.func.count()).select_from(privacy_charges).where(privacy_charges.c.tenant == tenant)
        ).scalar_one()
        if budget_row.spent_accounting:
            stored = RunningComposition.from_dict(budget_row.spent_accounting)
            if stored.count == count and stored.orders == RunningComposition.empty().orders:
                return stored
        # absent, stale or computed under other RDP orders: the charges are the source of truth
        return self._spent(self._charge_rows(connection, tenant, full=False))

    def _charge_rows(self, connection: sa.Connection, tenant: str, *, full: bool = True) -> Sequence[sa.Row]:
        columns = (
            [privacy_charges] if full else [privacy_charges.c.mechanism, privacy_charges.c.accounting]
        )
        return connection.execute(
            sa.select(*columns).where(privacy_charges.c.tenant == tenant).order_by(privacy_charges.c.id)
        ).all()

    def _log_change(
        self,
        connection: sa.Connection,
        tenant: str,
        old: Budget | None,
        epsilon: float,
        delta: float,
        reason: str,
        actor: str,
        now: datetime,
    ) -> None:
        connection.execute(
            sa.insert(budget_changes).values(
                tenant=tenant,
                old_epsilon=None if old is None else old.epsilon,
                old_delta=None if old is None else old.delta,
                new_epsilon=epsilon,
                new_delta=delta,
                reason=reason,
                actor=actor,
                created_at=now,
            )
        )

    def ensure_budget(
        self,
        tenant: str,
        epsilon: float,
        delta: float,
        *,
        n_records: int | None = None,
        actor: str = "credittwin",
    ) -> Budget:
        """Create the tenant's budget if it has none; an existing budget is returned unchanged.

        The creation is logged in ``budget_changes``. A different figure for an
        existing tenant (tenant.yaml edited) is logged as a warning: changing a
        budget is `raise_budget`'s job, with a reason and an actor.
        """
        from sqlalchemy import exc

        tenant = validate_tenant_id(tenant)
        epsilon, delta = validate_budget(epsilon, delta, n_records, tenant=tenant)
        actor = _text(actor, "actor", tenant)

        def create() -> Budget:
            with self._engine.begin() as connection:
                row = self._budget_row(connection, tenant, lock=True)
                if row is not None:
                    return self._budget(row)
                now = _now()
                connection.execute(
                    sa.insert(privacy_budgets).values(
                        tenant=tenant, epsilon_total=epsilon, delta_total=delta, created_at=now, updated_at=now
                    )
                )
                self._log_change(connection, tenant, None, epsilon, delta, "initial budget", actor, now)
                logger.info("privacy budget of tenant %s created: epsilon=%g delta=%g by %s", tenant, epsilon, delta, actor)
                return Budget(tenant, epsilon, delta, now, now)

        try:
            budget = self._run(tenant, "creating the budget", create)
        except exc.IntegrityError:
            # another process created it between our read and our insert
            budget = self.budget(tenant)
        if (budget.epsilon, budget.delta) != (epsilon, delta):
            logger.warning(
                "tenant %s asks for epsilon=%g delta=%g but its ledger budget is epsilon=%g delta=%g; "
                "use `credittwin budget %s --raise-epsilon/--raise-delta --reason ...` to change it",
                tenant, epsilon, delta, budget.epsilon, budget.delta, tenant,
            )
        return budget

    def budget(self, tenant: str) -> Budget:
        """The tenant's budget; `PrivacyBudgetError` when it has none."""
        tenant = validate_tenant_id(tenant)

        def read() -> Budget:
            with self._engine.connect() as connection:
                row = self._budget_row(connection, tenant, lock=False)
            if row is None:
                raise self._no_budget(tenant)
            return self._budget(row)

        return self._run(tenant, "reading the budget", read)

    @staticmethod
    def _no_budget(tenant: str) -> PrivacyBudgetError:
        return PrivacyBudgetError(
            "has no privacy budget in the ledger.",
            tenant=tenant,
            fix="materialise the tenant's raw_loan_tape (which creates it from tenant.yaml or the platform default) "
            "or run `credittwin budget <tenant> --raise-epsilon ... --raise-delta ... --reason ...`.",
        )

    def raise_budget(
        self,
        tenant: str,
        epsilon: float,
        delta: float,
        *,
        reason: str,
        actor: str,
        n_records: int | None = None,
    ) -> Budget:
        """Set the tenant's total budget explicitly, logging who did it and why.

        Creates the budget when the tenant has none. A new total below what is
        already spent is refused: spent privacy cannot be given back.
        """
        tenant = validate_tenant_id(tenant)
        epsilon, delta = validate_budget(epsilon, delta, n_records, tenant=tenant)
        if not isinstance(reason, str) or not reason.strip():
            raise PrivacyBudgetError(
                "a budget change needs a reason.", tenant=tenant, fix="say why, e.g. --reason 'DPO approved ticket 42'."
            )
        actor = _text(actor, "actor", tenant)

        def change() -> Budget:
            with self._engine.begin() as connection:
                row = self._budget_row(connection, tenant, lock=True)
                now = _now()
                if row is None:
                    connection.execute(
                        sa.insert(privacy_budgets).values(
                            tenant=tenant, epsilon_total=epsilon, delta_total=delta, created_at=now, updated_at=now
                        )
                    )
                    self._log_change(connection, tenant, None, epsilon, delta, reason, actor, now)
                    return Budget(tenant, epsilon, delta, now, now)
                old = self._budget(row)
                spent = self._running(connection, tenant, row).composition()
                if _over(spent.epsilon, epsilon) or _over(spent.delta, delta):
                    raise PrivacyBudgetError(
                        f"cannot set the budget to epsilon={epsilon:g} delta={delta:g}: "
                        f"epsilon={spent.epsilon:.6g} delta={spent.delta:.3g} is already spent ({spent.accountant}).",
                        tenant=tenant,
                        fix="choose a total at least the spent figures; spent privacy cannot be given back.",
                    )
                connection.execute(
                    sa.update(privacy_budgets)
                    .where(privacy_budgets.c.tenant == tenant)
                    .values(epsilon_total=epsilon, delta_total=delta, updated_at=now)
                )
                self._log_change(connection, tenant, old, epsilon, delta, reason, actor, now)
                return Budget(tenant, epsilon, delta, old.created_at, now)

        budget = self._run(tenant, "changing the budget", change)
        logger.warning(
            "privacy budget of tenant %s set to epsilon=%g delta=%g by %s: %s", tenant, epsilon, delta, actor, reason
        )
        return budget

    def charge(
        self,
        *,
        tenant: str,
        asset: str,
        run_id: str,
        mechanism: MechanismSpec,
        idempotency: IdempotencyKey,
    ) -> Charge:
        """Charge a mechanism to the tenant's budget, before the private computation runs.

        In one transaction holding the tenant's budget-row lock: an earlier
        charge with the same idempotency key is returned (``charged=False``);
        otherwise the tenant's charges and this one are composed, and the charge
        is refused if that exceeds the budget, else recorded (``charged=True``).

        Raises:
            BudgetExceededError: the charge would exceed the budget; nothing was recorded.
            InvalidMechanismError: the mechanism is malformed or claims less than it costs.
            LedgerUnavailableError: the database failed; nothing was recorded.
            PrivacyBudgetError: no budget, or a key that belongs to another tenant or asset.
        """
        from sqlalchemy import exc

        tenant = validate_tenant_id(tenant)
        asset = _text(asset, "asset", tenant)
        run_id = _text(run_id, "run_id", tenant)
        if not isinstance(mechanism, MechanismSpec) or not isinstance(idempotency, IdempotencyKey):
            raise PrivacyBudgetError(
                "charge needs a MechanismSpec and an IdempotencyKey.",
                tenant=tenant,
                fix="build them with models.privacy.accounting.MechanismSpec and resources.ledger.IdempotencyKey.",
            )
        if (idempotency.tenant, idempotency.asset) != (tenant, asset):
            raise PrivacyBudgetError(
                f"the idempotency key names tenant '{idempotency.tenant}' and asset '{idempotency.asset}' "
                f"but the charge is for asset '{asset}'.",
                tenant=tenant,
                fix="build the key from the same tenant and asset as the charge.",
            )
        key = idempotency.digest()
        # a retry of a charge made before v2 finds it under its legacy key
        keys = [idempotency.digest(scheme) for scheme in KEY_SCHEMES]

        def existing(connection: sa.Connection) -> sa.Row | None:
            return connection.execute(
                sa.select(privacy_charges)
                .where(privacy_charges.c.tenant == tenant, privacy_charges.c.idempotency_hash.in_(keys))
                .order_by(privacy_charges.c.id)
                .limit(1)
            ).one_or_none()

        def read_existing() -> sa.Row | None:
            with self._engine.connect() as connection:
                return existing(connection)

        # charges are append-only, so one found without the lock is final: a retry returns at once
        earlier = self._run(tenant, f"charging asset '{asset}'", read_existing)
        if earlier is not None:
            return self._charge(earlier, charged=False)
        # the accountant's work happens before the lock is taken, so other runs wait only for SQL
        curve = None if mechanism.is_pure else rdp_curve(mechanism)
        standalone = account(mechanism, accountant=ACCOUNTANT, tenant=tenant, curve=curve)

        def attempt() -> Charge:
            with self._engine.begin() as connection:
                row = self._budget_row(connection, tenant, lock=True)
                if row is None:
                    raise self._no_budget(tenant)
                budget = self._budget(row)
                earlier = existing(connection)
                if earlier is not None:
                    return self._charge(earlier, charged=False)
                running = self._running(connection, tenant, row)
                spent = running.composition()
                running = running.add(mechanism, curve)
                after = running.composition()
                if _over(after.epsilon, budget.epsilon) or _over(after.delta, budget.delta):
                    raise BudgetExceededError(
                        tenant=tenant,
                        asset=asset,
                        accountant=after.accountant,
                        total_epsilon=budget.epsilon,
                        total_delta=budget.delta,
                        spent_epsilon=spent.epsilon,
                        spent_delta=spent.delta,
                        requested_epsilon=standalone.epsilon,
                        requested_delta=standalone.delta,
                        would_reach_epsilon=after.epsilon,
                        would_reach_delta=after.delta,
                    )
                now = _now()
                charge_id = connection.execute(
                    sa.insert(privacy_charges)
                    .values(
                        tenant=tenant,
                        asset=asset,
                        run_id=run_id,
                        mechanism=mechanism.to_dict(),
                        epsilon=standalone.epsilon,
                        delta=standalone.delta,
                        accountant=standalone.accountant,
                        idempotency_hash=key,
                        idempotency=idempotency.to_dict(),
                        accounting=None if curve is None else curve.to_dict(),
                        created_at=now,
                    )
                    .returning(privacy_charges.c.id)
                ).scalar_one()
                connection.execute(
                    sa.update(privacy_budgets)
                    .where(privacy_budgets.c.tenant == tenant)
                    .values(spent_accounting=running.to_dict())
                )
                if self._before_commit is not None:
                    self._before_commit(connection)
            logger.info(
                "privacy charge %s: tenant %s asset %s run %s epsilon=%g delta=%g (%s); spent now epsilon=%g of %g",
                charge_id, tenant, asset, run_id, standalone.epsilon, standalone.delta, standalone.accountant,
                after.epsilon, budget.epsilon,
            )
            return Charge(
                id=int(charge_id),
                tenant=tenant,
                asset=asset,
                run_id=run_id,
                mechanism=mechanism,
                epsilon=standalone.epsilon,
                delta=standalone.delta,
                accountant=standalone.accountant,
                idempotency_hash=key,
                idempotency=idempotency,
                created_at=now,
                charged=True,
            )

        try:
            return self._run(tenant, f"charging asset '{asset}'", attempt)
        except exc.IntegrityError as error:
            # the unique (tenant, idempotency_hash) constraint caught a duplicate the lock did not
            earlier = self._run(tenant, f"charging asset '{asset}'", read_existing)
            if earlier is None:
                raise error
            return self._charge(earlier, charged=False)

    def status(self, tenant: str) -> BudgetStatus:
        """The tenant's total, spent (composed) and remaining budget, with its charges."""
        tenant = validate_tenant_id(tenant)

        def read() -> BudgetStatus:
            with self._engine.begin() as connection:
                row = self._budget_row(connection, tenant, lock=False)
                if row is None:
                    raise self._no_budget(tenant)
                rows = self._charge_rows(connection, tenant)
            return BudgetStatus(
                budget=self._budget(row),
                spent=self._spent(rows).composition(),
                charges=tuple(self._charge(charge, charged=True) for charge in rows),
            )

        return self._run(tenant, "reading the budget", read)

    def history(self, tenant: str) -> list[BudgetChange]:
        """Every logged change of the tenant's budget, oldest first."""
        tenant = validate_tenant_id(tenant)

        def read() -> list[BudgetChange]:
            with self._engine.connect() as connection:
                rows = connection.execute(
                    sa.select(budget_changes).where(budget_changes.c.tenant == tenant).order_by(budget_changes.c.id)
                ).all()
            return [
                BudgetChange(
                    id=int(row.id),
                    tenant=row.tenant,
                    old_epsilon=row.old_epsilon,
                    old_delta=row.old_delta,
                    new_epsilon=float(row.new_epsilon),
                    new_delta=float(row.new_delta),
                    reason=row.reason,
                    actor=row.actor,
                    created_at=_aware(row.created_at),
                )
                for row in rows
            ]

        return self._run(tenant, "reading the budget history", read)


def _mechanism_text(mechanism: MechanismSpec) -> str:
    if mechanism.kind == "subsampled_gaussian":
        return f"dpsgd z={mechanism.effective_noise_multiplier:.4g} q={mechanism.sampling_rate:.3g} T={mechanism.steps}"
    if mechanism.kind == "gaussian":
        return f"gaussian z={mechanism.effective_noise_multiplier:.4g} x{mechanism.steps}"
    if mechanism.kind == "laplace" and mechanism.scale is not None:
        return f"laplace b={mechanism.scale:.4g} x{mechanism.steps}"
    return mechanism.kind


def format_budget(status: BudgetStatus) -> str:
    """A readable table of a tenant's budget and charges (`credittwin budget <tenant>`)."""
    lines = [
        f"Privacy budget of tenant '{status.tenant}' (composed by {status.spent.accountant}; neighbours: {NEIGHBOURS})",
        f"  {'':<10} {'epsilon':>12} {'delta':>12}",
        f"  {'total':<10} {status.budget.epsilon:>12.6g} {status.budget.delta:>12.3g}",
        f"  {'spent':<10} {status.spent.epsilon:>12.6g} {status.spent.delta:>12.3g}",
        f"  {'remaining':<10} {status.remaining_epsilon:>12.6g} {status.remaining_delta:>12.3g}",
        "",
    ]
    lines.insert(-1, f"  the delta budget pays for {RELEASES_PER_DELTA_BUDGET} releases at 1/{RELEASES_PER_DELTA_BUDGET} "
                     "of it each (models.privacy.accounting.release_delta); the epsilon budget over the release epsilon "
                     "bounds the rest")
    if not status.charges:
        lines.append("No charges.")
        return "\n".join(lines)
    header = (
        f"  {'id':>5}  {'time (UTC)':<19}  {'asset':<24}  {'run id':<12}  {'mechanism':<32}  "
        f"{'epsilon':>10}  {'delta':>9}  accountant"
    )
    lines += [f"Charges ({len(status.charges)}):", header]
    for charge in status.charges:
        when = charge.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"  {charge.id:>5}  {when:<19}  {charge.asset[:24]:<24}  {charge.run_id[:12]:<12}  "
            f"{_mechanism_text(charge.mechanism)[:32]:<32}  {charge.epsilon:>10.4g}  {charge.delta:>9.3g}  "
            f"{charge.accountant}"
        )
    return "\n".join(lines)


class PrivacyLedgerResource(dg.ConfigurableResource):
    """The privacy budget ledger as a Dagster resource; `ledger()` gives the `PrivacyLedger`."""

    url: str = Field(
        description=(
            "SQLAlchemy URL of the ledger database: sqlite:///<data dir>/credittwin.sqlite (embedded default) "
            "or postgresql://user@host:5432/db (production; the psycopg2 driver is used)."
        )
    )

    def ledger(self) -> PrivacyLedger:
        """A `PrivacyLedger` on this URL, its tables migrated to the newest revision.

        Use it as a context manager (``with resource.ledger() as ledger:``) so
        its connections are closed when the step ends.
        """
        ledger = PrivacyLedger(self.url)
        ledger.migrate()
        return ledger
