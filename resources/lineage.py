"""The lineage audit trail: one tamper-evident hash chain of materialization records per tenant.

Every materialization appends a `LineageRecord` (tenant, asset, partition, run
id, the data versions and hashes of its inputs, its output hash and files, the
code version, the privacy it charged, the time) to ``lineage_records``, in the
same SQL database as the privacy ledger (`resources.ledger`): SQLite under the
data dir by default, PostgreSQL in production.

Why a hash chain: a reviewer must be able to trust that the trail shown by
``credittwin audit <tenant>`` is the one that was written. Each record stores
``prev_hash``, the ``record_hash`` of the tenant's previous record, and its own
``record_hash``, the SHA-256 of a canonical JSON of every other field (see
`record_digest`). A head row per tenant (``lineage_heads``: last seq, last
hash) is updated in the same transaction, so `LineageTrail.verify` detects an
edited field (the record's hash no longer matches), a deleted or inserted
middle record (a seq gap and a ``prev_hash`` mismatch), a moved record, and a
deleted newest record (the head names a record that is gone). The tables are
append-only as well (triggers refuse UPDATE and DELETE). Someone who can drop
the triggers and rewrite every later record and the head can still forge a
consistent chain, as with any unkeyed chain; `verify` therefore also accepts
``anchors`` (seq -> record_hash) kept outside the database, e.g. the hash the
lead records in each Dagster materialization's metadata.

The canonical JSON is RFC 8785 (`models.files.canonical_json`), named in each
record's ``hash_scheme`` (``credittwin-lineage/v2``) and hashed into it.
Records written before v2 were hashed over Python's ``json.dumps`` with sorted
keys; the migration that added the column marks them ``credittwin-lineage/v1``
and `verify` checks each record under its own scheme, so old chains keep
verifying, and moving a record to the other scheme breaks its hash.

Appends serialise per tenant (a PostgreSQL advisory transaction lock on a key
derived from the tenant; ``BEGIN IMMEDIATE`` on SQLite), so concurrent runs of
one tenant keep a contiguous chain, and are idempotent: the same (tenant,
asset, run id, output hash) appended twice returns the first record.

Released files are traced through ``lineage_files`` (one row per output file:
relative name and SHA-256, indexed): `LineageTrail.find_file` finds the records
that wrote a file, `LineageTrail.trace` walks input versions upstream to the
upload and `LineageTrail.downstream` finds what consumed an output (e.g. the
certificate of a released portfolio).

The schema is created by the Alembic migrations in
``resources/migrations/lineage``, with their own version table
(``lineage_alembic_version``), so the trail and the ledger migrate
independently in one database. `LineageTrailResource` is the Dagster resource.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from models.errors import CreditTwinError
from models.files import canonical_json, json_default, sha256_file
from models.tape.tenant import validate_tenant_id
from resources.ledger import MIGRATIONS_DIR, default_ledger_url
from resources.sqlstore import SqlStore, advisory_xact_lock, id_column, id_type

logger = logging.getLogger(__name__)

LINEAGE_MIGRATIONS_DIR = MIGRATIONS_DIR / "lineage"
LINEAGE_VERSION_TABLE = "lineage_alembic_version"
GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a tenant's first record."""
HASH_SCHEME = "credittwin-lineage/v2"
"""How new records are hashed: RFC 8785 canonical JSON (`models.files.canonical_json`)."""
LEGACY_HASH_SCHEME = "credittwin-lineage/v1"
"""How records were hashed before v2: Python's ``json.dumps`` with sorted keys and ASCII escapes.
Records written so keep verifying under it; their ``hash_scheme`` column says so (migration lineage_0002)."""
HASH_SCHEMES = (HASH_SCHEME, LEGACY_HASH_SCHEME)

_TEXT_LIMIT = 255
_NAME_LIMIT = 1024
_MAP_LIMIT = 10_000
_JSON_LIMIT = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HASHED_FIELDS = (
    "tenant",
    "seq",
    "asset",
    "partition_key",
    "run_id",
    "data_version",
    "input_versions",
    "input_hashes",
    "output_hash",
    "output_files",
    "code_version",
    "privacy_charged",
    "recorded_at",
    "prev_hash",
    "idempotency_key",
)


class LineageError(CreditTwinError):
    """A lineage record that is malformed, or a lineage trail that cannot be used as asked."""


class LineageUnavailableError(LineageError):
    """The lineage database failed; the transaction was rolled back and nothing was appended."""

    transient = True  # a service that may come back: the step may be retried


metadata = sa.MetaData()

lineage_records = sa.Table(
    "lineage_records",
    metadata,
    id_column(),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("seq", sa.BigInteger(), nullable=False),
    sa.Column("asset", sa.String(255), nullable=False),
    sa.Column("partition_key", sa.String(255), nullable=True),
    sa.Column("run_id", sa.String(255), nullable=False),
    sa.Column("data_version", sa.String(255), nullable=True),
    sa.Column("input_versions", sa.JSON(), nullable=False),
    sa.Column("input_hashes", sa.JSON(), nullable=False),
    sa.Column("output_hash", sa.String(255), nullable=False),
    sa.Column("output_files", sa.JSON(), nullable=False),
    sa.Column("code_version", sa.String(255), nullable=True),
    sa.Column("privacy_charged", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("recorded_at", sa.String(40), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("record_hash", sa.String(64), nullable=False),
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    # what a row written without it (before lineage_0002) was hashed with
    sa.Column("hash_scheme", sa.String(40), nullable=False, server_default=LEGACY_HASH_SCHEME),
    sa.UniqueConstraint("tenant", "seq", name="uq_lineage_records_tenant_seq"),
    sa.UniqueConstraint("tenant", "idempotency_key", name="uq_lineage_records_tenant_key"),
    sa.Index("ix_lineage_records_output_hash", "output_hash"),
)

lineage_files = sa.Table(
    "lineage_files",
    metadata,
    id_column(),
    sa.Column(
        "record_id",
        id_type(),
        sa.ForeignKey("lineage_records.id", name="fk_lineage_files_record"),
        nullable=False,
    ),
    sa.Column("tenant", sa.String(63), nullable=False),
    sa.Column("name", sa.String(_NAME_LIMIT), nullable=False),
    sa.Column("basename", sa.String(_NAME_LIMIT), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Index("ix_lineage_files_sha256", "sha256"),
    sa.Index("ix_lineage_files_basename", "basename"),
)

lineage_heads = sa.Table(
    "lineage_heads",
    metadata,
    sa.Column("tenant", sa.String(63), primary_key=True),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)


def _text(value: object, name: str, tenant: str | None, *, optional: bool = False, limit: int = _TEXT_LIMIT) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "\x00" in value:
        raise LineageError(
            f"{name} must be a non-empty string of at most {limit} characters without NUL, got "
            f"{ascii(value)[:80]}.",
            tenant=tenant,
            fix=f"pass the {name} of the materialization being recorded.",
        )
    return value


def _text_map(value: object, name: str, tenant: str, *, key_limit: int = _TEXT_LIMIT) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > _MAP_LIMIT:
        raise LineageError(
            f"{name} must be a mapping of at most {_MAP_LIMIT} entries, got {type(value).__name__}.",
            tenant=tenant,
            fix=f"pass {name} as a dict of strings.",
        )
    return {
        _text(key, f"a key of {name}", tenant, limit=key_limit): _text(item, f"{name}[{key!r}]", tenant)
        for key, item in value.items()
    }


def _json_value(value: object, name: str, tenant: str) -> Any:
    """`value` as it reads back from a JSON column (so its hash is reproducible), or a LineageError."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False, default=json_default)
        canonical_json(value, name)
    except (TypeError, ValueError) as error:
        raise LineageError(
            f"{name} cannot be stored as JSON ({error}).",
            tenant=tenant,
            fix=f"pass {name} as a dict of strings, finite numbers, lists and dicts.",
        ) from None
    if len(text) > _JSON_LIMIT:
        raise LineageError(
            f"{name} is {len(text)} characters of JSON (at most {_JSON_LIMIT}).",
            tenant=tenant,
            fix=f"record a summary in {name}, not the full document.",
        )
    return json.loads(text)


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _encoded(scheme: str, value: Any) -> bytes:
    """`value` in the canonical JSON of hash scheme `scheme`, which is hashed into it (``"v"`` or the first item)."""
    if scheme == HASH_SCHEME:
        return canonical_json(value)
    if scheme == LEGACY_HASH_SCHEME:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    raise LineageError(
        f"unknown lineage hash scheme {ascii(scheme)[:80]}.",
        fix=f"use one of {list(HASH_SCHEMES)}; a record naming another was edited or written by a newer CreditTwin.",
    )


def record_digest(fields: Mapping[str, Any]) -> str:
    """The hex SHA-256 of a record: a versioned, canonical JSON of every field but ``id`` and ``record_hash``.

    ``id`` is the database's surrogate key; the record's place in the chain is
    its ``seq``, which is hashed, as is ``prev_hash`` (which makes it a chain).
    The record's ``hash_scheme`` picks the encoding and is hashed as ``"v"``,
    so a record cannot be moved to another scheme without breaking its hash.

    Args:
        fields: the record's fields (at least ``hash_scheme`` and those in ``_HASHED_FIELDS``).

    Returns:
        64 lower-case hex digits.

    Raises:
        LineageError: an unknown hash scheme.
        JsonValueError: a field that JSON cannot hold exactly.
    """
    scheme = fields["hash_scheme"]
    document = {"v": scheme, **{name: fields[name] for name in _HASHED_FIELDS}}
    return hashlib.sha256(_encoded(scheme, document)).hexdigest()


def _idempotency_key(scheme: str, tenant: str, asset: str, run_id: str, output_hash: str) -> str:
    return hashlib.sha256(_encoded(scheme, [scheme, tenant, asset, run_id, output_hash])).hexdigest()


def _tenant_lock_key(tenant: str) -> int:
    """A signed 64-bit advisory lock key for the tenant's chain."""
    digest = hashlib.sha256(f"credittwin-lineage\x00{tenant}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LineageEntry:
    """What a materialization reports to the trail; `LineageTrail.append` adds the chain fields.

    Attributes:
        tenant: the tenant (validated with `validate_tenant_id`).
        asset: the asset key as a string, e.g. ``"anonymized_portfolio"``.
        run_id: the Dagster run id.
        output_hash: the hash of the output (the manifest's ``content_sha256``).
        partition_key: the partition materialized (the tenant, in CreditTwin), or None.
        data_version: the Dagster data version of the output, or None.
        input_versions: upstream asset -> the data version it was read at. `trace`
            matches these against upstream records' ``data_version`` or ``output_hash``.
        input_hashes: upstream asset -> the content hash it was read at.
        output_files: relative file name -> SHA-256 of each file written, so a
            released file can be traced back.
        code_version: the asset's code version, or None.
        privacy_charged: the ledger charge(s) made (JSON), or None when none.
    """

    tenant: str
    asset: str
    run_id: str
    output_hash: str
    partition_key: str | None = None
    data_version: str | None = None
    input_versions: Mapping[str, str] = field(default_factory=dict)
    input_hashes: Mapping[str, str] = field(default_factory=dict)
    output_files: Mapping[str, str] = field(default_factory=dict)
    code_version: str | None = None
    privacy_charged: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        tenant = validate_tenant_id(self.tenant)
        for name in ("asset", "run_id", "output_hash"):
            _text(getattr(self, name), name, tenant)
        for name in ("partition_key", "data_version", "code_version"):
            _text(getattr(self, name), name, tenant, optional=True)
        object.__setattr__(self, "input_versions", _text_map(self.input_versions, "input_versions", tenant))
        object.__setattr__(self, "input_hashes", _text_map(self.input_hashes, "input_hashes", tenant))
        files = _text_map(self.output_files, "output_files", tenant, key_limit=_NAME_LIMIT)
        for name, digest in files.items():
            if not _SHA256.fullmatch(digest):
                raise LineageError(
                    f"output_files[{name!r}] must be a SHA-256 in 64 lower-case hex digits, got {ascii(digest)[:80]}.",
                    tenant=tenant,
                    fix="pass the file's hashlib.sha256(...).hexdigest() (the manifest's files[name]['sha256']).",
                )
        object.__setattr__(self, "output_files", files)
        if self.privacy_charged is not None:
            charged = _json_value(self.privacy_charged, "privacy_charged", tenant)
            if not isinstance(charged, (dict, list)):
                raise LineageError(
                    f"privacy_charged must be a dict or a list, got {type(self.privacy_charged).__name__}.",
                    tenant=tenant,
                    fix="pass the ledger charge's to_dict() (or a list of them), or None when nothing was charged.",
                )
            object.__setattr__(self, "privacy_charged", charged)

    def idempotency_key(self, scheme: str = HASH_SCHEME) -> str:
        """SHA-256 of (tenant, asset, run id, output hash) under `scheme`: what makes two appends the same record."""
        return _idempotency_key(scheme, self.tenant, self.asset, self.run_id, self.output_hash)


@dataclass(frozen=True)
class LineageRecord:
    """One stored record of a tenant's chain. `appended` is False when an earlier identical one was returned."""

    id: int
    tenant: str
    seq: int
    asset: str
    partition_key: str | None
    run_id: str
    data_version: str | None
    input_versions: dict[str, str]
    input_hashes: dict[str, str]
    output_hash: str
    output_files: dict[str, str]
    code_version: str | None
    privacy_charged: Any
    recorded_at: str
    prev_hash: str
    record_hash: str
    idempotency_key: str
    hash_scheme: str
    appended: bool = False

    @property
    def versions(self) -> set[str]:
        """The identifiers a consumer may have recorded this output by: its data version and output hash."""
        return {v for v in (self.data_version, self.output_hash) if v}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (asset metadata, ``credittwin audit --json``)."""
        return {name: getattr(self, name) for name in ("id", *_HASHED_FIELDS, "hash_scheme", "record_hash", "appended")}


@dataclass(frozen=True)
class ChainReport:
    """The result of verifying a tenant's chain.

    Attributes:
        tenant: the tenant verified.
        ok: True when every record, the links between them, the head and the
            anchors agree.
        records: how many records the tenant has.
        first_broken: the seq of the first record that is broken or missing, or
            None (also when only the head row itself is missing).
        first_broken_id: the database id of that record, or None when it is missing.
        reason: what is wrong, or None when ok.
        head_seq: the seq of the newest record read (0 when none).
        head_hash: its record_hash (`GENESIS_HASH` when none).
    """

    tenant: str
    ok: bool
    records: int
    first_broken: int | None
    first_broken_id: int | None
    reason: str | None
    head_seq: int
    head_hash: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return dict(self.__dict__)


class LineageTrail(SqlStore):
    """The lineage hash chains of every tenant, in one SQL database.

    The engine, `close` and the context manager, the translation of database
    failures into `LineageUnavailableError` and `migrate` come from
    `resources.sqlstore.SqlStore`.

    Args:
        url: SQLAlchemy URL, ``sqlite:///<data>/credittwin.sqlite`` (the
            ledger's file; see `resources.ledger.default_ledger_url`) or
            ``postgresql://...`` (given the psycopg2 driver).
        lock_timeout_s: how long an append waits for another run's lock on
            the same tenant before giving up with `LineageUnavailableError`.
        before_commit: fault-injection hook for tests, called with the open
            connection inside `append`'s transaction just before it commits.

    Raises:
        LineageError: a bad `lock_timeout_s`, or a URL that is not SQLite on a file or PostgreSQL.
    """

    store_name = "lineage trail"
    kept = "every record"
    error_class = LineageError
    unavailable_class = LineageUnavailableError
    retry_fix = "check that the database is reachable, then retry: the same record is appended at most once."
    migrations_dir = LINEAGE_MIGRATIONS_DIR
    # serialises concurrent migrations ("CTLINEAG" in ASCII)
    migration_lock_key = 0x43544C494E454147
    application_name = "credittwin-lineage"
    pool_size = 5
    max_overflow = 20

    def _lock(self, connection: sa.Connection, tenant: str, *, shared: bool = False) -> None:
        # SQLite: the BEGIN IMMEDIATE of every transaction (resources.sqlstore.create_engine) already serialises writers
        if self.dialect == "postgresql":
            advisory_xact_lock(connection, _tenant_lock_key(tenant), shared=shared)

    @staticmethod
    def _record(row: sa.Row, *, appended: bool = False) -> LineageRecord:
        return LineageRecord(
            id=int(row.id),
            tenant=row.tenant,
            seq=int(row.seq),
            asset=row.asset,
            partition_key=row.partition_key,
            run_id=row.run_id,
            data_version=row.data_version,
            input_versions=dict(row.input_versions or {}),
            input_hashes=dict(row.input_hashes or {}),
            output_hash=row.output_hash,
            output_files=dict(row.output_files or {}),
            code_version=row.code_version,
            privacy_charged=row.privacy_charged,
            recorded_at=row.recorded_at,
            prev_hash=row.prev_hash,
            record_hash=row.record_hash,
            idempotency_key=row.idempotency_key,
            hash_scheme=row.hash_scheme,
            appended=appended,
        )

    def append(self, entry: LineageEntry) -> LineageRecord:
        """Append a materialization's record to its tenant's chain; idempotent.

        In one transaction holding the tenant's lock: a record with the same
        (tenant, asset, run id, output hash) is returned as it is
        (``appended=False``); otherwise the record is chained onto the head
        (seq = head seq + 1, prev_hash = head hash), its files are indexed and
        the head moves to it (``appended=True``).

        Raises:
            LineageError: `entry` is not a `LineageEntry`, or the tenant has
                records but its head row is gone (the chain was tampered with;
                run ``credittwin audit``).
            LineageUnavailableError: the database failed; nothing was appended.
        """
        from sqlalchemy import exc

        if not isinstance(entry, LineageEntry):
            raise LineageError(
                f"append needs a LineageEntry, got {type(entry).__name__}.",
                fix="build it with resources.lineage.LineageEntry(tenant=..., asset=..., run_id=..., output_hash=...).",
            )
        tenant = entry.tenant
        key = entry.idempotency_key()
        # a retry of an append made before v2 finds the record under its legacy key
        keys = [entry.idempotency_key(scheme) for scheme in HASH_SCHEMES]
        doing = f"appending asset '{entry.asset}'"

        def existing(connection: sa.Connection) -> sa.Row | None:
            return connection.execute(
                sa.select(lineage_records)
                .where(lineage_records.c.tenant == tenant, lineage_records.c.idempotency_key.in_(keys))
                .order_by(lineage_records.c.seq)
                .limit(1)
            ).one_or_none()

        def read_existing() -> sa.Row | None:
            with self._engine.connect() as connection:
                return existing(connection)

        # records are append-only, so one found without the lock is final
        earlier = self._run(tenant, doing, read_existing)
        if earlier is not None:
            return self._record(earlier)

        def attempt() -> LineageRecord:
            with self._engine.begin() as connection:
                self._lock(connection, tenant)
                earlier = existing(connection)
                if earlier is not None:
                    return self._record(earlier)
                head = connection.execute(
                    sa.select(lineage_heads).where(lineage_heads.c.tenant == tenant)
                ).one_or_none()
                if head is None:
                    count = connection.execute(
                        sa.select(sa.func.count())
                        .select_from(lineage_records)
                        .where(lineage_records.c.tenant == tenant)
                    ).scalar_one()
                    if count:
                        raise LineageError(
                            f"has {count} lineage record(s) but no chain head: the head row was deleted, so the "
                            "newest records may have been removed; nothing was appended.",
                            tenant=tenant,
                            fix=f"run `credittwin audit {tenant}` and have the audit log restored from a backup.",
                        )
                    seq, prev_hash = 1, GENESIS_HASH
                else:
                    # chained onto the head, not onto the newest row: a deleted newest row stays detectable
                    seq, prev_hash = int(head.last_seq) + 1, head.last_hash
                fields: dict[str, Any] = {
                    "tenant": tenant,
                    "seq": seq,
                    "asset": entry.asset,
                    "partition_key": entry.partition_key,
                    "run_id": entry.run_id,
                    "data_version": entry.data_version,
                    "input_versions": dict(entry.input_versions),
                    "input_hashes": dict(entry.input_hashes),
                    "output_hash": entry.output_hash,
                    "output_files": dict(entry.output_files),
                    "code_version": entry.code_version,
                    "privacy_charged": entry.privacy_charged,
                    "recorded_at": _now_text(),
                    "prev_hash": prev_hash,
                    "idempotency_key": key,
                    "hash_scheme": HASH_SCHEME,
                }
                fields["record_hash"] = record_digest(fields)
                record_id = connection.execute(
                    sa.insert(lineage_records).values(**fields).returning(lineage_records.c.id)
                ).scalar_one()
                if entry.output_files:
                    connection.execute(
                        sa.insert(lineage_files),
                        [
                            {
                                "record_id": record_id,
                                "tenant": tenant,
                                "name": name,
                                "basename": PurePosixPath(name.replace("\\", "/")).name or name,
                                "sha256": digest,
                            }
                            for name, digest in entry.output_files.items()
                        ],
                    )
                head_values = {"last_seq": seq, "last_hash": fields["record_hash"], "updated_at": fields["recorded_at"]}
                if head is None:
                    connection.execute(sa.insert(lineage_heads).values(tenant=tenant, **head_values))
                else:
                    connection.execute(
                        sa.update(lineage_heads).where(lineage_heads.c.tenant == tenant).values(**head_values)
                    )
                if self._before_commit is not None:
                    self._before_commit(connection)
            logger.info(
                "lineage record %s of tenant %s: asset %s run %s output %s", seq, tenant, entry.asset, entry.run_id,
                entry.output_hash[:16],
            )
            return LineageRecord(id=int(record_id), **fields, appended=True)

        try:
            return self._run(tenant, doing, attempt)
        except exc.IntegrityError as error:
            # the unique (tenant, idempotency_key) constraint caught a duplicate the lock did not
            earlier = self._run(tenant, doing, read_existing)
            if earlier is None:
                raise LineageUnavailableError(
                    f"appending asset '{entry.asset}' violated a constraint of the lineage tables "
                    f"({str(error.orig).strip().splitlines()[0] if error.orig else error}); nothing was appended.",
                    tenant=tenant,
                    fix=f"run `credittwin audit {tenant}`: the chain may have been altered outside CreditTwin.",
                ) from error
            return self._record(earlier)

    def _rows(self, connection: sa.Connection, tenant: str) -> Sequence[sa.Row]:
        return connection.execute(
            sa.select(lineage_records)
            .where(lineage_records.c.tenant == tenant)
            .order_by(lineage_records.c.seq, lineage_records.c.id)
        ).all()

    def history(self, tenant: str) -> list[LineageRecord]:
        """Every record of the tenant's chain, oldest (seq 1) first.

        Raises:
            InvalidTenantError: an invalid tenant id.
            LineageUnavailableError: the database failed.
        """
        tenant = validate_tenant_id(tenant)

        def read() -> list[LineageRecord]:
            with self._engine.connect() as connection:
                return [self._record(row) for row in self._rows(connection, tenant)]

        return self._run(tenant, "reading the lineage", read)

    def tenants(self) -> list[str]:
        """Every tenant with a chain head, sorted."""

        def read() -> list[str]:
            with self._engine.connect() as connection:
                query = sa.select(lineage_heads.c.tenant).order_by(lineage_heads.c.tenant)
                return list(connection.execute(query).scalars())

        return self._run(None, "listing tenants", read)

    def latest(self, tenant: str, asset: str | None = None) -> LineageRecord | None:
        """The tenant's newest record (of `asset` when given), or None."""
        tenant = validate_tenant_id(tenant)
        if asset is not None:
            _text(asset, "asset", tenant)

        def read() -> LineageRecord | None:
            query = sa.select(lineage_records).where(lineage_records.c.tenant == tenant)
            if asset is not None:
                query = query.where(lineage_records.c.asset == asset)
            with self._engine.connect() as connection:
                row = connection.execute(query.order_by(lineage_records.c.seq.desc()).limit(1)).one_or_none()
            return None if row is None else self._record(row)

        return self._run(tenant, "reading the lineage", read)

    def verify(self, tenant: str, *, anchors: Mapping[int, str] | None = None) -> ChainReport:
        """Check the tenant's chain: each record's hash, the links, the seq order, the head and the anchors.

        Args:
            tenant: the tenant whose chain to verify.
            anchors: optional seq -> record_hash pairs kept outside the database
                (e.g. in Dagster materialization metadata); each must match.

        Returns:
            A `ChainReport`; ``ok`` False names the first broken (or missing)
            record's seq and id and says what is wrong.

        Raises:
            InvalidTenantError: an invalid tenant id.
            LineageUnavailableError: the database failed.
        """
        tenant = validate_tenant_id(tenant)
        anchors = dict(anchors or {})

        def read() -> tuple[Sequence[sa.Row], sa.Row | None]:
            with self._engine.begin() as connection:
                # a shared lock: no append of this tenant commits between reading the records and the head
                self._lock(connection, tenant, shared=True)
                rows = self._rows(connection, tenant)
                head = connection.execute(
                    sa.select(lineage_heads).where(lineage_heads.c.tenant == tenant)
                ).one_or_none()
            return rows, head

        rows, head = self._run(tenant, "verifying the lineage", read)
        return _verify_rows(tenant, rows, head, anchors)

    def find_file(self, query: str | Path, *, tenant: str | None = None) -> list[LineageRecord]:
        """The records that wrote a file, oldest first (across tenants unless `tenant` is given).

        Args:
            query: a `Path` to the file (its SHA-256 is computed), a SHA-256 in
                hex (a file's, or a record's output_hash), a path string to an
                existing file (hashed), or else a file name matched against the
                recorded relative names and their last component.
            tenant: restrict the search to one tenant.

        Raises:
            LineageError: a missing `Path`, or an unusable query.
            LineageUnavailableError: the database failed.
        """
        if tenant is not None:
            tenant = validate_tenant_id(tenant)
        digest: str | None = None
        name: str | None = None
        if isinstance(query, Path):
            if not query.is_file():
                raise LineageError(
                    f"{str(query)!r} is not a file.", tenant=tenant, fix="pass the released file's path."
                )
            digest = sha256_file(query)
        else:
            _text(query, "the file to find", tenant, limit=_NAME_LIMIT)
            if _SHA256.fullmatch(query.strip().lower()):
                digest = query.strip().lower()
            elif _is_file(query):
                digest = sha256_file(Path(query))
            else:
                name = query.strip()

        def read() -> list[LineageRecord]:
            if digest is not None:
                matching = sa.or_(
                    lineage_records.c.output_hash == digest,
                    lineage_records.c.id.in_(
                        sa.select(lineage_files.c.record_id).where(lineage_files.c.sha256 == digest)
                    ),
                )
            else:
                base = PurePosixPath(name.replace("\\", "/")).name or name
                matching = lineage_records.c.id.in_(
                    sa.select(lineage_files.c.record_id).where(
                        sa.or_(lineage_files.c.name == name, lineage_files.c.basename == base)
                    )
                )
            statement = sa.select(lineage_records).where(matching)
            if tenant is not None:
                statement = statement.where(lineage_records.c.tenant == tenant)
            statement = statement.order_by(lineage_records.c.tenant, lineage_records.c.seq)
            with self._engine.connect() as connection:
                return [self._record(row) for row in connection.execute(statement).all()]

        records = self._run(tenant, "finding a file in the lineage", read)
        if digest is not None:
            # the file index is a convenience; the hashed output_files of each record are authoritative
            records = [r for r in records if r.output_hash == digest or digest in r.output_files.values()]
        return records

    def trace(self, tenant: str, output_hash: str) -> list[LineageRecord]:
        """The record that produced `output_hash` and every upstream record it derives from, oldest first.

        Starting at the newest record whose output hash (or data version) is
        `output_hash`, each record's input versions (and input hashes) are
        matched against the upstream asset's records by data version or output
        hash, taking the newest such record written before the consumer, up to
        records with no inputs (the upload).

        Returns:
            The records, sorted by seq; empty when no record has that output.

        Raises:
            InvalidTenantError: an invalid tenant id.
            LineageUnavailableError: the database failed.
        """
        return self._walk(tenant, output_hash, downstream=False)

    def downstream(self, tenant: str, output_hash: str) -> list[LineageRecord]:
        """The records that consumed `output_hash`, directly or transitively (e.g. its certificate), oldest first.

        Raises:
            InvalidTenantError: an invalid tenant id.
            LineageUnavailableError: the database failed.
        """
        return self._walk(tenant, output_hash, downstream=True)

    def _walk(self, tenant: str, output_hash: str, *, downstream: bool) -> list[LineageRecord]:
        """The records reachable from the producer of `output_hash`: upstream with it, or downstream without it."""
        records = self.history(tenant)
        start = _producer(records, output_hash)
        if start is None:
            return []
        by_version = _index_by_version(records)
        edges = {record.seq: _upstream_of(record, by_version) for record in records}
        if downstream:
            consumers: dict[int, list[LineageRecord]] = {}
            for record in records:
                for upstream in edges[record.seq]:
                    consumers.setdefault(upstream.seq, []).append(record)
            edges = consumers
        found: dict[int, LineageRecord] = {} if downstream else {start.seq: start}
        queue = [start]
        while queue:
            for neighbour in edges.get(queue.pop().seq, []):
                if neighbour.seq not in found:
                    found[neighbour.seq] = neighbour
                    queue.append(neighbour)
        return [found[seq] for seq in sorted(found)]


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # e.g. a name too long for the file system: then it is only a name
        return False


def _producer(records: Sequence[LineageRecord], output_hash: str) -> LineageRecord | None:
    matches = [r for r in records if output_hash in r.versions]
    return matches[-1] if matches else None


def _index_by_version(records: Iterable[LineageRecord]) -> dict[tuple[str, str], list[LineageRecord]]:
    index: dict[tuple[str, str], list[LineageRecord]] = {}
    for record in records:  # oldest first, so each list is sorted by seq
        for version in record.versions:
            index.setdefault((record.asset, version), []).append(record)
    return index


def _upstream_of(
    record: LineageRecord, by_version: Mapping[tuple[str, str], list[LineageRecord]]
) -> list[LineageRecord]:
    """For each input of `record`: the newest upstream record written before it at that version."""
    found = []
    for asset in sorted(set(record.input_versions) | set(record.input_hashes)):
        candidates: list[LineageRecord] = []
        for version in (record.input_versions.get(asset), record.input_hashes.get(asset)):
            if version:
                candidates.extend(by_version.get((asset, version), []))
        earlier = [c for c in candidates if c.seq < record.seq]
        if earlier:
            found.append(max(earlier, key=lambda c: c.seq))
        elif candidates:
            # re-recorded after its consumer (a re-execution): the first record of that version
            found.append(min(candidates, key=lambda c: c.seq))
    return found


def _row_digest(row: sa.Row) -> str | None:
    try:
        return record_digest(LineageTrail._record(row).to_dict())
    except (TypeError, ValueError, AttributeError):  # a JSON column overwritten with something else
        return None


def _verify_rows(
    tenant: str, rows: Sequence[sa.Row], head: sa.Row | None, anchors: Mapping[int, str]
) -> ChainReport:
    """Walk `rows` (sorted by seq, id) and compare with the head and anchors; see `LineageTrail.verify`."""
    expected_seq, expected_prev, last_id = 1, GENESIS_HASH, None
    broken: tuple[int | None, int | None, str] | None = None
    for row in rows:
        where = f"record seq {row.seq} (id {row.id}, asset '{row.asset}', run {row.run_id})"
        if row.hash_scheme not in HASH_SCHEMES:
            broken = (
                int(row.seq),
                int(row.id),
                f"{where} names the unknown hash scheme {ascii(row.hash_scheme)[:60]}: it was edited, or written by "
                "a newer CreditTwin.",
            )
        elif _row_digest(row) != row.record_hash:
            broken = (
                int(row.seq),
                int(row.id),
                f"{where} was edited or moved: its content no longer matches its record_hash.",
            )
        elif row.seq > expected_seq:
            missing = f"seq {expected_seq}" if row.seq == expected_seq + 1 else f"seq {expected_seq} to {row.seq - 1}"
            broken = (int(row.seq), int(row.id), f"the record(s) before {where} ({missing}) are missing: deleted.")
        elif row.seq < expected_seq:
            broken = (int(row.seq), int(row.id), f"{where} repeats a seq already in the chain: inserted.")
        elif row.prev_hash != expected_prev:
            broken = (
                int(row.seq),
                int(row.id),
                f"{where} does not link to the record before it (prev_hash mismatch): that record was replaced or "
                "the records were reordered.",
            )
        elif last_id is not None and row.id < last_id:
            broken = (int(row.seq), int(row.id), f"{where} was stored before the record preceding it: reordered.")
        if broken is not None:
            break
        expected_seq, expected_prev, last_id = expected_seq + 1, row.record_hash, row.id
    last_seq = int(rows[-1].seq) if rows else 0
    last_hash = rows[-1].record_hash if rows else GENESIS_HASH
    if broken is None:
        if head is None and rows:
            broken = (
                None,
                None,
                "the chain head row is missing, so the deletion of the newest records cannot be ruled out.",
            )
        elif head is not None and int(head.last_seq) > last_seq:
            first_missing = last_seq + 1
            broken = (
                first_missing,
                None,
                f"record seq {first_missing} is missing: the chain head says the newest record is seq "
                f"{int(head.last_seq)}, so the newest record(s) were deleted.",
            )
        elif head is not None and int(head.last_seq) < last_seq:
            row = next(r for r in rows if int(r.seq) == int(head.last_seq) + 1)
            broken = (
                int(row.seq),
                int(row.id),
                f"record seq {row.seq} (id {row.id}) is beyond the chain head (seq {int(head.last_seq)}): inserted "
                "outside CreditTwin.",
            )
        elif head is not None and head.last_hash != last_hash:
            broken = (
                last_seq,
                int(rows[-1].id),
                f"record seq {last_seq} (id {rows[-1].id}) is not the record the chain head names: replaced.",
            )
    by_seq = {int(row.seq): row for row in rows}
    for seq in sorted(anchors):
        if broken is not None and broken[0] is not None and broken[0] <= seq:
            break
        row = by_seq.get(int(seq))
        if row is None or row.record_hash != anchors[seq]:
            what = "is missing" if row is None else "has another hash"
            broken = (
                int(seq),
                None if row is None else int(row.id),
                f"record seq {seq} {what} than the one recorded outside the database (anchor "
                f"{str(anchors[seq])[:16]}...): the chain was rewritten.",
            )
            break
    if broken is None:
        return ChainReport(tenant, True, len(rows), None, None, None, last_seq, last_hash)
    return ChainReport(tenant, False, len(rows), broken[0], broken[1], broken[2], last_seq, last_hash)


def default_lineage_url(data_dir: Path | str) -> str:
    """The embedded default: the ledger's SQLite file under the data dir (`default_ledger_url`)."""
    return default_ledger_url(data_dir)


def _short(text: str | None, width: int) -> str:
    text = "-" if text is None else text
    return text if len(text) <= width else text[: width - 1] + "~"


def format_lineage(records: Sequence[LineageRecord], report: ChainReport | None = None) -> str:
    """A readable listing of lineage records and the chain verdict (``credittwin audit <tenant>``).

    Names and ids come from uploads and runs: long ones are truncated and
    non-ASCII characters shown as '?', so the output is plain text for any terminal.
    """
    lines: list[str] = []
    if report is not None:
        if report.ok:
            lines.append(
                f"Lineage of tenant '{report.tenant}': chain OK, {report.records} record(s), "
                f"head seq {report.head_seq} {report.head_hash[:16]}"
            )
        else:
            where = "" if report.first_broken is None else f" at seq {report.first_broken}"
            lines.append(f"Lineage of tenant '{report.tenant}': CHAIN BROKEN{where}: {report.reason}")
    if not records:
        lines.append("No lineage records.")
        return "\n".join(lines)
    lines.append(
        f"  {'seq':>5}  {'time (UTC)':<19}  {'asset':<24}  {'run id':<10}  {'output':<16}  {'code':<10}  inputs"
    )
    for record in records:
        when = record.recorded_at[:19].replace("T", " ")
        inputs = ", ".join(f"{asset}@{version[:12]}" for asset, version in sorted(record.input_versions.items()))
        privacy = "  [privacy charged]" if record.privacy_charged else ""
        lines.append(
            f"  {record.seq:>5}  {when:<19}  {_short(record.asset, 24):<24}  {_short(record.run_id, 10):<10}  "
            f"{record.output_hash[:16]:<16}  {_short(record.code_version, 10):<10}  {inputs or '(upload)'}{privacy}"
        )
    return "\n".join(line.encode("ascii", "replace").decode("ascii") for line in lines)


class LineageTrailResource(dg.ConfigurableResource):
    """The lineage audit trail as a Dagster resource; `trail()` gives the `LineageTrail`."""

    url: str = Field(
        description=(
            "SQLAlchemy URL of the lineage database (the ledger's): sqlite:///<data dir>/credittwin.sqlite "
            "(embedded default) or postgresql://user@host:5432/db (production; the psycopg2 driver is used)."
        )
    )

    def trail(self) -> LineageTrail:
        """A `LineageTrail` on this URL, its tables migrated; use it as a context manager."""
        trail = LineageTrail(self.url)
        trail.migrate()
        return trail
