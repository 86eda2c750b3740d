"""The SQL plumbing shared by the privacy ledger and the lineage trail.

`resources.ledger.PrivacyLedger` and `resources.lineage.LineageTrail` are two
stores in one database (SQLite under the data dir by default, PostgreSQL in
production) with the same needs, which live here once:

- `normalise_url`: accept only a SQLite file or PostgreSQL, and give a bare
  ``postgresql://`` URL the psycopg2 driver (SQLAlchemy 2.1 would pick psycopg 3,
  which is not a dependency).
- `create_engine`: on SQLite every transaction starts with ``BEGIN IMMEDIATE``
  (the SQLite form of a store's per-tenant lock: writers serialise on the file)
  in WAL mode with foreign keys on; on PostgreSQL a pooled psycopg2 engine whose
  ``lock_timeout`` bounds how long a transaction waits for another's lock.
- `SqlStore`: the base class of both stores: the engine's life (``close``, the
  context manager), `SqlStore._run`, which turns a database failure into the
  store's transient "unavailable" error, and `SqlStore.migrate`, Alembic's
  ``upgrade head`` in one transaction under an advisory lock.

What differs between the stores (their error classes, messages, migrations
directory, migration lock key and pool size) are class attributes of each
subclass. Each store's Alembic ``env.py`` names its own version table, so the
two migrate independently in one database.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import sqlalchemy as sa

from models.errors import CreditTwinError

logger = logging.getLogger(__name__)

_URL_FIX = "use sqlite:///<data dir>/credittwin.sqlite or postgresql://user@host:5432/db."


def id_type() -> sa.types.TypeEngine:
    """The surrogate key type: BIGINT, but INTEGER on SQLite (only INTEGER PRIMARY KEY autoincrements there)."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def id_column() -> sa.Column:
    """An autoincrementing ``id`` primary key column of `id_type`."""
    return sa.Column("id", id_type(), primary_key=True, autoincrement=True)


def normalise_url(url: str, *, store: str, error: type[CreditTwinError], kept: str) -> str:
    """The SQLAlchemy URL a store connects with.

    Args:
        url: a SQLAlchemy URL; ``postgresql://`` (or ``postgres://``) is given
            the psycopg2 driver.
        store: the store's name in messages, e.g. ``"privacy ledger"``.
        error: the error class to raise.
        kept: what the store keeps, for the in-memory refusal, e.g. ``"every charge"``.

    Returns:
        The URL rendered with its password.

    Raises:
        error: not a database URL, an in-memory SQLite database (which would
            forget everything when the process ends), or a backend other than
            SQLite and PostgreSQL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as problem:
        raise error(f"the {store} URL is not a database URL ({problem}).", fix=_URL_FIX) from problem
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:") or (parsed.database or "").startswith("file::memory:"):
            raise error(
                f"an in-memory SQLite {store} would forget {kept} when the process ends.",
                fix="use a file, e.g. sqlite:///<data dir>/credittwin.sqlite.",
            )
    elif parsed.get_backend_name() != "postgresql":
        raise error(f"the {store} supports SQLite and PostgreSQL, not {parsed.get_backend_name()!r}.", fix=_URL_FIX)
    return parsed.render_as_string(hide_password=False)


def _enable_wal(cursor: Any, url: str, store: str) -> None:
    """Switch a SQLite file to write-ahead logging, so readers do not wait for a writer.

    WAL is a property of the file, so one connection's switch serves all; the
    switch needs a moment with no other connection in a transaction, and when a
    concurrent connection holds the file SQLite refuses it at once. The stores
    are as correct without WAL (BEGIN IMMEDIATE still serialises writers), so a
    refused switch is left to the next connection.
    """
    import sqlite3

    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as error:
        logger.debug("%s %s stays in its journal mode for now: %s", store, url, error)


def create_engine(
    url: str,
    lock_timeout_s: float,
    *,
    store: str,
    application_name: str,
    pool_size: int,
    max_overflow: int,
) -> sa.Engine:
    """An engine on a normalised URL (`normalise_url`).

    Args:
        url: a SQLite file or PostgreSQL URL; a SQLite file's folder is created.
        lock_timeout_s: how long a transaction waits for another's lock (SQLite's
            busy timeout, PostgreSQL's ``lock_timeout``).
        store: the store's name in log messages.
        application_name: PostgreSQL's ``application_name`` of the connections.
        pool_size, max_overflow: the PostgreSQL connection pool's size.

    Returns:
        On SQLite an engine whose transactions begin with ``BEGIN IMMEDIATE``,
        with foreign keys on and WAL when it can be had; on PostgreSQL a pooled
        psycopg2 engine that pings connections before use.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": lock_timeout_s})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            # hand transaction control to SQLAlchemy so that BEGIN IMMEDIATE below is the one issued
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys=ON")
                if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    _enable_wal(cursor, url, store)
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection) -> None:
            # take the write lock up front: the SQLite form of a store's per-tenant lock
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={
            "connect_timeout": 5,
            "options": f"-c lock_timeout={int(lock_timeout_s * 1000)}",
            "application_name": application_name,
        },
    )


def advisory_xact_lock(connection: sa.Connection, key: int, *, shared: bool = False) -> None:
    """Take a PostgreSQL advisory lock on a signed 64-bit `key` until the transaction ends.

    Args:
        connection: a connection inside a transaction on PostgreSQL.
        key: the lock key.
        shared: a shared lock (readers) instead of an exclusive one.
    """
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    connection.execute(sa.text(f"SELECT {function}(:key)"), {"key": key})


class SqlStore:
    """Base class of a store in the CreditTwin database (the privacy ledger, the lineage trail).

    A subclass sets the class attributes below; the methods here are the same
    for every store.

    Args:
        url: SQLAlchemy URL, ``sqlite:///<data>/credittwin.sqlite`` or
            ``postgresql://...`` (given the psycopg2 driver).
        lock_timeout_s: how long a write waits for another run's lock on the
            same tenant before giving up with the store's unavailable error.
        before_commit: fault-injection hook for tests, called with the open
            connection inside a write's transaction just before it commits.

    Raises:
        error_class: a bad `lock_timeout_s` or a URL that is not SQLite on a file or PostgreSQL.
    """

    store_name: ClassVar[str]
    """The store's name in messages, e.g. ``"privacy ledger"``."""
    kept: ClassVar[str]
    """What the store keeps, e.g. ``"every charge"`` (an in-memory database would forget it)."""
    error_class: ClassVar[type[CreditTwinError]]
    """The error raised for a bad argument."""
    unavailable_class: ClassVar[type[CreditTwinError]]
    """The transient error raised when the database fails."""
    rolled_back: ClassVar[str] = ""
    """What the rollback of a failed transaction means for the caller, appended to "the transaction was rolled back"."""
    retry_fix: ClassVar[str]
    """The ``fix`` of the unavailable error."""
    migrations_dir: ClassVar[Path]
    """The Alembic script location of the store's migrations."""
    migration_lock_key: ClassVar[int]
    """The ``pg_advisory_xact_lock`` key serialising concurrent migrations."""
    application_name: ClassVar[str]
    pool_size: ClassVar[int] = 5
    max_overflow: ClassVar[int] = 20

    def __init__(
        self,
        url: str,
        *,
        lock_timeout_s: float = 30.0,
        before_commit: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        if not (isinstance(lock_timeout_s, (int, float)) and math.isfinite(lock_timeout_s) and lock_timeout_s > 0):
            raise self.error_class(
                f"lock_timeout_s must be a finite number of seconds > 0, got {lock_timeout_s!r}.",
                fix="pass e.g. lock_timeout_s=30.",
            )
        self.url = normalise_url(url, store=self.store_name, error=self.error_class, kept=self.kept)
        self._before_commit = before_commit
        self._engine = create_engine(
            self.url,
            lock_timeout_s,
            store=self.store_name,
            application_name=self.application_name,
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
        )

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close the store's pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _unavailable(self, error: Exception, tenant: str | None, doing: str) -> CreditTwinError:
        where = self._engine.url.render_as_string(hide_password=True)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return self.unavailable_class(
            f"the {self.store_name} at {where} failed while {doing}; the transaction was rolled back{self.rolled_back} "
            f"({type(error).__name__}: {first}).",
            tenant=tenant,
            fix=self.retry_fix,
        )

    def _run(self, tenant: str | None, doing: str, work: Callable[[], Any]) -> Any:
        """Call `work`; a lost or failed connection becomes `unavailable_class`, an IntegrityError passes through."""
        from sqlalchemy import exc

        try:
            return work()
        except exc.IntegrityError:
            raise
        except (exc.OperationalError, exc.InterfaceError) as error:
            raise self._unavailable(error, tenant, doing) from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise self._unavailable(error, tenant, doing) from error
            raise

    def migrate(self) -> None:
        """Bring the store's tables to the newest revision (``alembic upgrade head``).

        Idempotent, and safe when several processes call it at once: the
        upgrade runs in one transaction under a lock (an advisory lock on
        PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so the second caller finds
        the schema already at head. The store's ``env.py`` takes the connection
        from ``config.attributes["connection"]``.

        Raises:
            unavailable_class: the database failed.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.migrations_dir))
        config.set_main_option("path_separator", "os")

        def upgrade() -> None:
            with self._engine.begin() as connection:
                if self.dialect == "postgresql":
                    advisory_xact_lock(connection, self.migration_lock_key)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")

        self._run(None, "migrating its tables", upgrade)


@contextmanager
def scratch_database(server_url: str, prefix: str = "credittwin_scratch",
                     driver: str = "postgresql+psycopg2") -> Iterator[str]:
    """A new, empty PostgreSQL database on `server_url`, dropped (its sessions ended) on exit; yields its URL.

    For the tests and benchmarks that need an isolated Dagster instance, ledger or
    MLflow store. The URL names the psycopg2 driver by default: SQLAlchemy 2.1
    defaults to psycopg 3, whose server-side parameters dagster-postgres' SQL does
    not accept. `driver` ``"postgresql"`` leaves SQLAlchemy's default.
    """
    import uuid

    import psycopg2
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    def admin(statement: str, *args: str) -> None:
        # a connection only for the statement: none is held while the database is in use (a test or benchmark
        # that opens the server's last connections must find them free)
        connection = psycopg2.connect(server_url, connect_timeout=10)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, args or None)
        finally:
            connection.close()

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(drivername=driver, database=name).render_as_string(hide_password=False)
    finally:
        admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
              name)
        admin(f'DROP DATABASE IF EXISTS "{name}"')
