"""The lineage audit trail (hash chain) against SQLite files and the real PostgreSQL server."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.errors import InvalidTenantError
from resources.ledger import PrivacyLedger, normalise_url
from resources.lineage import (
    GENESIS_HASH,
    HASH_SCHEME,
    LEGACY_HASH_SCHEME,
    LINEAGE_MIGRATIONS_DIR,
    LineageEntry,
    LineageError,
    LineageTrail,
    LineageTrailResource,
    LineageUnavailableError,
    default_lineage_url,
    format_lineage,
    metadata,
    record_digest,
)

TENANT = "acme"


@pytest.fixture(params=["sqlite", "postgresql"])
def trail_url(request, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return default_lineage_url(tmp_path / "data")
    return request.getfixturevalue("pg_database")


@pytest.fixture
def trail(trail_url: str):
    """A migrated trail with no records yet."""
    with LineageTrail(trail_url) as opened:
        opened.migrate()
        yield opened


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _entry(
    asset: str, run_id: str, output: str, *, tenant: str = TENANT, inputs: dict | None = None, **extra
) -> LineageEntry:
    return LineageEntry(
        tenant=tenant,
        asset=asset,
        run_id=run_id,
        output_hash=_sha(output),
        partition_key=tenant,
        data_version=_sha(output)[:32],
        input_versions={name: _sha(value)[:32] for name, value in (inputs or {}).items()},
        input_hashes={name: _sha(value) for name, value in (inputs or {}).items()},
        output_files={f"{asset}.json": _sha(f"file of {output}")},
        code_version="v1",
        **extra,
    )


def _append_four(trail: LineageTrail, tenant: str = TENANT) -> list:
    return [trail.append(_entry(f"asset_{i}", f"run-{i}", f"{tenant}-out-{i}", tenant=tenant)) for i in range(1, 5)]


def _tamper(url: str, *statements: tuple[str, dict]) -> None:
    """Run SQL as someone with owner rights who first switches the append-only triggers off."""
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                for table in ("lineage_records", "lineage_files", "lineage_heads"):
                    connection.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            else:
                for table, action in (
                    ("lineage_records", "update"), ("lineage_records", "delete"), ("lineage_files", "delete"),
                    ("lineage_heads", "delete"),
                ):
                    connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
            for sql, params in statements:
                connection.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def _delete_record(url: str, seq: int) -> None:
    _tamper(
        url,
        (
            "DELETE FROM lineage_files WHERE record_id = "
            "(SELECT id FROM lineage_records WHERE tenant = :tenant AND seq = :seq)",
            {"tenant": TENANT, "seq": seq},
        ),
        ("DELETE FROM lineage_records WHERE tenant = :tenant AND seq = :seq", {"tenant": TENANT, "seq": seq}),
    )


def test_migrate_is_idempotent_matches_the_tables_and_lives_beside_the_ledger(trail_url: str):
    # setup
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with PrivacyLedger(trail_url) as ledger:
        ledger.migrate()
    trail = LineageTrail(trail_url)

    # run
    trail.migrate()
    trail.migrate()
    with PrivacyLedger(trail_url) as ledger:
        ledger.migrate()
        ledger.ensure_budget(TENANT, 1.0, 1e-6)

    # assert
    engine = sa.create_engine(trail.url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": "lineage_alembic_version",
                    "include_name": lambda name, kind, _parent: kind != "table" or name.startswith("lineage_"),
                },
            )
            differences = compare_metadata(context, metadata)
            lineage_version = connection.exec_driver_sql("SELECT version_num FROM lineage_alembic_version").scalar_one()
            ledger_version = connection.execute(sa.text("SELECT version_num FROM ledger_alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert [d for d in differences if "alembic_version" not in str(d)] == []
    assert (lineage_version, ledger_version) == ("lineage_0002", "0001")
    assert trail.append(_entry("raw_loan_tape", "run-1", "upload")).seq == 1
    trail.close()


def test_two_concurrent_migrations_both_succeed(trail_url: str):
    # setup
    trails = [LineageTrail(trail_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def migrate(one: LineageTrail) -> None:
        barrier.wait()
        try:
            one.migrate()
        except BaseException as error:  # collected and asserted below, in the test's thread
            errors.append(error)

    # run
    threads = [threading.Thread(target=migrate, args=(one,)) for one in trails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # assert
    assert errors == []
    trails[0].append(_entry("raw_loan_tape", "run-1", "upload"))
    assert len(trails[1].history(TENANT)) == 1
    for one in trails:
        one.close()


def test_append_chains_records_with_contiguous_seq_and_stored_hashes(trail: LineageTrail):
    # run
    records = _append_four(trail)
    other = trail.append(_entry("asset_1", "run-1", "other-out", tenant="globex"))

    # assert
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert all(r.appended for r in records)
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.record_hash for r in records[:-1]]
    stored = trail.history(TENANT)
    assert [r.record_hash for r in stored] == [r.record_hash for r in records]
    assert all(record_digest(r.to_dict()) == r.record_hash for r in stored)
    assert stored[0].output_files == {"asset_1.json": _sha("file of acme-out-1")}
    assert (other.seq, other.prev_hash) == (1, GENESIS_HASH)
    assert trail.verify(TENANT).ok and trail.verify("globex").ok
    assert trail.verify(TENANT).head_seq == 4
    assert trail.tenants() == ["acme", "globex"]
    assert trail.latest(TENANT).seq == 4 and trail.latest(TENANT, "asset_2").seq == 2
    assert trail.verify("nobody").ok and trail.verify("nobody").records == 0


def test_the_same_asset_run_and_output_appended_twice_returns_the_first(trail: LineageTrail):
    # setup
    charged = {"epsilon": 0.5, "delta": 1e-7, "charge_id": 3}
    first = trail.append(_entry("fitted_copula", "run-1", "copula", privacy_charged=charged))

    # run
    again = trail.append(_entry("fitted_copula", "run-1", "copula", privacy_charged=charged))
    rerun = trail.append(_entry("fitted_copula", "run-2", "copula", privacy_charged=charged))

    # assert
    assert again.appended is False
    assert (again.id, again.seq, again.record_hash) == (first.id, first.seq, first.record_hash)
    assert again.privacy_charged == charged
    assert rerun.appended is True and rerun.seq == 2
    assert len(trail.history(TENANT)) == 2


def test_concurrent_appends_from_threads_keep_one_valid_chain(trail_url: str):
    # setup
    with LineageTrail(trail_url) as setup:
        setup.migrate()
    workers, per_worker = 6, 5
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        with LineageTrail(trail_url) as mine:
            barrier.wait()
            try:
                for i in range(per_worker):
                    mine.append(_entry("synthetic_portfolio", f"run-{worker}-{i}", f"out-{worker}-{i}"))
                    # every worker also retries one record, as a re-executed step would
                    mine.append(_entry("synthetic_portfolio", f"run-{worker}-0", f"out-{worker}-0"))
            except BaseException as error:  # collected and asserted below, in the test's thread
                errors.append(error)

    # run
    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # assert
    assert errors == []
    with LineageTrail(trail_url) as check:
        report = check.verify(TENANT)
        records = check.history(TENANT)
    assert report.ok, report.reason
    assert [r.seq for r in records] == list(range(1, workers * per_worker + 1))
    assert len({r.run_id for r in records}) == workers * per_worker


def test_an_edited_field_names_the_edited_record(trail: LineageTrail, trail_url: str):
    # setup
    records = _append_four(trail)

    # run
    _tamper(
        trail_url, ("UPDATE lineage_records SET run_id = 'run-forged' WHERE tenant = :t AND seq = 2", {"t": TENANT})
    )
    report = trail.verify(TENANT)

    # assert
    assert report.ok is False
    assert (report.first_broken, report.first_broken_id) == (2, records[1].id)
    assert "edited" in report.reason and "seq 2" in report.reason


def test_an_edited_json_field_is_detected(trail: LineageTrail, trail_url: str):
    # setup
    _append_four(trail)

    # run
    _tamper(
        trail_url,
        (
            "UPDATE lineage_records SET input_versions = :v WHERE tenant = :t AND seq = 3",
            {"v": '{"raw": "x"}', "t": TENANT},
        ),
    )

    # assert
    assert trail.verify(TENANT).first_broken == 3


def test_a_deleted_middle_record_names_the_record_after_the_gap(trail: LineageTrail, trail_url: str):
    # setup
    records = _append_four(trail)

    # run
    _delete_record(trail_url, 2)
    report = trail.verify(TENANT)

    # assert
    assert report.ok is False
    assert (report.first_broken, report.first_broken_id) == (3, records[2].id)
    assert "seq 2" in report.reason and "deleted" in report.reason


def test_a_deleted_newest_record_is_detected_through_the_head_even_after_more_appends(
    trail: LineageTrail, trail_url: str
):
    # setup
    _append_four(trail)

    # run
    _delete_record(trail_url, 4)
    report = trail.verify(TENANT)
    later = trail.append(_entry("asset_5", "run-5", "out-5"))
    after = trail.verify(TENANT)

    # assert
    assert report.ok is False
    assert (report.first_broken, report.first_broken_id) == (4, None)
    assert "newest" in report.reason and "deleted" in report.reason
    assert later.seq == 5
    assert after.ok is False and after.first_broken == 5


def test_a_reordered_record_is_detected(trail: LineageTrail, trail_url: str):
    # setup
    _append_four(trail)

    # run: swap seq 2 and 3
    _tamper(
        trail_url,
        ("UPDATE lineage_records SET seq = -2 WHERE tenant = :t AND seq = 2", {"t": TENANT}),
        ("UPDATE lineage_records SET seq = 2 WHERE tenant = :t AND seq = 3", {"t": TENANT}),
        ("UPDATE lineage_records SET seq = 3 WHERE tenant = :t AND seq = -2", {"t": TENANT}),
    )
    report = trail.verify(TENANT)

    # assert
    assert report.ok is False and report.first_broken == 2


def test_swapped_ids_are_detected_as_reordered(trail: LineageTrail, trail_url: str):
    # setup: records without files, so their ids can move
    for i in range(1, 4):
        trail.append(LineageEntry(tenant=TENANT, asset="a", run_id=f"r{i}", output_hash=_sha(str(i))))

    # run
    _tamper(
        trail_url,
        ("UPDATE lineage_records SET id = 1000 WHERE tenant = :t AND seq = 2", {"t": TENANT}),
        ("UPDATE lineage_records SET id = 2 WHERE tenant = :t AND seq = 3", {"t": TENANT}),
        ("UPDATE lineage_records SET id = 3 WHERE tenant = :t AND seq = 2", {"t": TENANT}),
    )
    report = trail.verify(TENANT)

    # assert
    assert report.ok is False
    assert report.first_broken == 3 and "reordered" in report.reason


def test_a_deleted_head_is_detected_and_further_appends_refused(trail: LineageTrail, trail_url: str):
    # setup
    _append_four(trail)

    # run
    _tamper(trail_url, ("DELETE FROM lineage_heads WHERE tenant = :t", {"t": TENANT}))
    report = trail.verify(TENANT)

    # assert
    assert report.ok is False and "head" in report.reason
    with pytest.raises(LineageError, match="no chain head.*credittwin audit acme"):
        trail.append(_entry("asset_5", "run-5", "out-5"))
    assert len(trail.history(TENANT)) == 4


def test_a_rewritten_chain_passes_alone_but_not_against_anchors(trail: LineageTrail, trail_url: str):
    # setup
    records = _append_four(trail)
    anchors = {4: records[3].record_hash}

    # run: an attacker edits seq 2 and recomputes every later hash and the head
    forged = [r.to_dict() for r in trail.history(TENANT)]
    forged[1]["run_id"] = "run-forged"
    statements = []
    for i in range(1, 4):
        forged[i]["prev_hash"] = forged[i - 1]["record_hash"]
        forged[i]["record_hash"] = record_digest(forged[i])
        statements.append(
            (
                "UPDATE lineage_records SET run_id = :run, prev_hash = :prev, record_hash = :hash WHERE id = :id",
                {"run": forged[i]["run_id"], "prev": forged[i]["prev_hash"], "hash": forged[i]["record_hash"],
                 "id": forged[i]["id"]},
            )
        )
    statements.append(
        ("UPDATE lineage_heads SET last_hash = :h WHERE tenant = :t", {"h": forged[3]["record_hash"], "t": TENANT})
    )
    _tamper(trail_url, *statements)

    # assert
    assert trail.verify(TENANT).ok is True
    anchored = trail.verify(TENANT, anchors=anchors)
    assert anchored.ok is False and anchored.first_broken == 4 and "anchor" in anchored.reason


def test_records_are_append_only(trail: LineageTrail, trail_url: str):
    # setup
    _append_four(trail)
    engine = sa.create_engine(normalise_url(trail_url))

    # run / assert
    try:
        for sql in (
            "UPDATE lineage_records SET run_id = 'x'",
            "DELETE FROM lineage_records",
            "DELETE FROM lineage_files",
            "DELETE FROM lineage_heads",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with engine.begin() as connection:
                    connection.exec_driver_sql(sql)
    finally:
        engine.dispose()
    assert trail.verify(TENANT).ok


def test_a_failed_append_leaves_nothing_and_the_retry_chains_correctly(trail_url: str):
    # setup
    def fail(_connection: sa.Connection) -> None:
        raise RuntimeError("the step died before commit")

    with LineageTrail(trail_url) as setup:
        setup.migrate()
        setup.append(_entry("raw_loan_tape", "run-1", "upload"))
    doomed = LineageTrail(trail_url, before_commit=fail)

    # run
    with pytest.raises(RuntimeError, match="died"):
        doomed.append(_entry("fitted_copula", "run-2", "copula"))
    doomed.close()

    # assert
    with LineageTrail(trail_url) as healthy:
        assert len(healthy.history(TENANT)) == 1
        assert healthy.append(_entry("fitted_copula", "run-2", "copula")).seq == 2
        assert healthy.verify(TENANT).ok


def _pipeline(trail: LineageTrail, upload: str) -> dict[str, object]:
    raw = trail.append(_entry("raw_loan_tape", f"run-{upload}", upload))
    copula = trail.append(
        _entry("fitted_copula", f"run-{upload}", f"copula-{upload}", inputs={"raw_loan_tape": upload})
    )
    synthetic = trail.append(
        _entry("synthetic_portfolio", f"run-{upload}", f"synth-{upload}", inputs={"fitted_copula": f"copula-{upload}"})
    )
    released = trail.append(
        LineageEntry(
            tenant=TENANT,
            asset="anonymized_portfolio",
            run_id=f"run-{upload}",
            output_hash=_sha(f"anon-{upload}"),
            data_version=_sha(f"anon-{upload}")[:32],
            input_versions={"synthetic_portfolio": _sha(f"synth-{upload}")[:32]},
            output_files={"data.parquet": _sha(f"released-{upload}"), "report/summary.json": _sha(f"summary-{upload}")},
        )
    )
    certificate = trail.append(
        _entry(
            "privacy_certificate", f"run-{upload}", f"cert-{upload}",
            inputs={"anonymized_portfolio": f"anon-{upload}"},
            privacy_charged={"epsilon": 0.0},
        )
    )
    return {"raw": raw, "copula": copula, "synthetic": synthetic, "released": released, "certificate": certificate}


def test_trace_walks_from_a_release_to_its_upload_and_downstream_to_its_certificate(trail: LineageTrail):
    # setup: two uploads, each through the whole graph
    first = _pipeline(trail, "upload-1")
    second = _pipeline(trail, "upload-2")

    # run
    upstream = trail.trace(TENANT, second["released"].output_hash)
    upstream_of_first = trail.trace(TENANT, first["released"].data_version)
    downstream = trail.downstream(TENANT, first["released"].output_hash)
    from_upload = trail.downstream(TENANT, first["raw"].output_hash)

    # assert
    graph = ["raw_loan_tape", "fitted_copula", "synthetic_portfolio", "anonymized_portfolio", "privacy_certificate"]
    assert [r.asset for r in upstream] == graph[:4]
    assert [r.seq for r in upstream] == [second[step].seq for step in ("raw", "copula", "synthetic", "released")]
    assert [r.seq for r in upstream_of_first][0] == first["raw"].seq
    assert [r.seq for r in downstream] == [first["certificate"].seq]
    assert [r.asset for r in from_upload] == graph[1:]
    assert trail.trace(TENANT, _sha("never written")) == []


def test_find_file_by_hash_by_path_and_by_name(trail: LineageTrail, tmp_path: Path):
    # setup
    first = _pipeline(trail, "upload-1")
    second = _pipeline(trail, "upload-2")
    trail.append(
        LineageEntry(tenant="globex", asset="anonymized_portfolio", run_id="g-1", output_hash=_sha("g"),
                     output_files={"data.parquet": _sha("globex file")})
    )
    released = tmp_path / "released.parquet"
    released.write_bytes(b"the released bytes")
    trail.append(
        LineageEntry(tenant=TENANT, asset="anonymized_portfolio", run_id="run-3", output_hash=_sha("anon-3"),
                     output_files={"exports/released.parquet": hashlib.sha256(b"the released bytes").hexdigest()})
    )

    # run
    by_hash = trail.find_file(_sha("released-upload-2"))
    by_output = trail.find_file(first["released"].output_hash)
    by_path = trail.find_file(released)
    by_path_text = trail.find_file(str(released))
    by_name = trail.find_file("data.parquet")
    by_name_in_tenant = trail.find_file("data.parquet", tenant=TENANT)
    by_nested_name = trail.find_file("report/summary.json")

    # assert
    assert [r.seq for r in by_hash] == [second["released"].seq]
    assert [r.seq for r in by_output] == [first["released"].seq]
    assert [r.run_id for r in by_path] == ["run-3"] and [r.run_id for r in by_path_text] == ["run-3"]
    assert [(r.tenant, r.run_id) for r in by_name] == [
        ("acme", "run-upload-1"), ("acme", "run-upload-2"), ("globex", "g-1")
    ]
    assert [r.tenant for r in by_name_in_tenant] == ["acme", "acme"]
    assert len(by_nested_name) == 2
    assert trail.find_file(_sha("unknown")) == [] and trail.find_file("nothing.csv") == []
    with pytest.raises(LineageError, match="is not a file"):
        trail.find_file(tmp_path / "missing.parquet")


def test_untrusted_text_is_validated_and_stored_as_data(trail: LineageTrail):
    # setup
    hostile = "x'); DROP TABLE lineage_records; --"

    # run
    stored = trail.append(LineageEntry(tenant=TENANT, asset=hostile, run_id=hostile, output_hash=_sha("h"),
                                       output_files={hostile: _sha("f")}))

    # assert
    assert trail.history(TENANT)[0].asset == hostile == stored.asset
    assert [r.id for r in trail.find_file(hostile)] == [stored.id]
    with pytest.raises(InvalidTenantError):
        LineageEntry(tenant="../acme", asset="a", run_id="r", output_hash="h")
    with pytest.raises(InvalidTenantError):
        trail.history("ACME; --")
    with pytest.raises(LineageError, match="asset must be a non-empty string of at most 255"):
        LineageEntry(tenant=TENANT, asset="a" * 256, run_id="r", output_hash="h")
    with pytest.raises(LineageError, match="64 lower-case hex"):
        LineageEntry(tenant=TENANT, asset="a", run_id="r", output_hash="h", output_files={"f": "not-a-sha"})
    with pytest.raises(LineageError, match="privacy_charged cannot be stored as JSON"):
        LineageEntry(tenant=TENANT, asset="a", run_id="r", output_hash="h", privacy_charged={"epsilon": float("nan")})
    with pytest.raises(LineageError, match="needs a LineageEntry"):
        trail.append({"tenant": TENANT})


def test_unreachable_database_raises_lineage_unavailable():
    # setup
    dead = LineageTrail("postgresql://postgres@127.0.0.1:1/credittwin")

    # run / assert
    with pytest.raises(LineageUnavailableError, match="rolled back.*Fix: check that the database is reachable"):
        dead.append(_entry("raw_loan_tape", "run-1", "upload"))
    dead.close()
    with pytest.raises(LineageError, match="in-memory SQLite"):
        LineageTrail("sqlite://")


def test_format_lineage_shows_records_and_the_verdict(trail: LineageTrail, trail_url: str):
    # setup
    _pipeline(trail, "upload-1")
    good = format_lineage(trail.history(TENANT), trail.verify(TENANT))
    _delete_record(trail_url, 2)

    # run
    bad = format_lineage(trail.history(TENANT), trail.verify(TENANT))

    # assert
    assert "chain OK, 5 record(s)" in good
    for expected in ("raw_loan_tape", "(upload)", "privacy_certificate", "[privacy charged]"):
        assert expected in good
    assert "CHAIN BROKEN at seq 3" in bad
    assert format_lineage([]) == "No lineage records."


def test_dagster_resource_gives_a_migrated_trail(tmp_path: Path):
    # setup
    resource = LineageTrailResource(url=default_lineage_url(tmp_path))

    # run
    with resource.trail() as opened:
        record = opened.append(_entry("raw_loan_tape", "run-1", "upload"))
        report = opened.verify(TENANT)

    # assert
    assert record.seq == 1 and report.ok and report.head_hash == record.record_hash


# --------------------------------------------------------------------------- chains written before RFC 8785


def _legacy_digest(value) -> str:
    """How lineage_0001-era CreditTwin hashed: Python's json.dumps, sorted keys, ASCII escapes (spelled out here)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_legacy_chain(url: str, count: int) -> list[dict]:
    """A database as the previous version left it: the schema at lineage_0001 and a chain hashed the v1 way.

    The values are chosen where the two encodings differ (floats such as 1.0 and 1e-07, non-ASCII text), so a
    record verifies only under the scheme it was written with.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(LINEAGE_MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(normalise_url(url))
    rows, prev = [], GENESIS_HASH
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "lineage_0001")
            for seq in range(1, count + 1):
                asset, run_id, output = f"asset_{seq}", f"run-{seq}", _sha(f"legacy-{seq}")
                fields = {
                    "tenant": TENANT, "seq": seq, "asset": asset, "partition_key": TENANT, "run_id": run_id,
                    "data_version": output, "input_versions": {}, "input_hashes": {}, "output_hash": output,
                    "output_files": {}, "code_version": "1+git:caf\u00e9",
                    "privacy_charged": {"epsilon": 1.0, "delta": 1e-07, "ledger_charge_id": seq},
                    "recorded_at": f"2025-01-0{seq}T00:00:00.000000+00:00", "prev_hash": prev,
                    "idempotency_key": _legacy_digest([LEGACY_HASH_SCHEME, TENANT, asset, run_id, output]),
                }
                fields["record_hash"] = _legacy_digest({"v": LEGACY_HASH_SCHEME, **fields})
                columns = ", ".join(fields)
                connection.execute(
                    sa.text(f"INSERT INTO lineage_records ({columns}) VALUES ({', '.join(':' + c for c in fields)})")
                    .bindparams(*(sa.bindparam(c, type_=sa.JSON()) for c in
                                  ("input_versions", "input_hashes", "output_files", "privacy_charged"))),
                    fields,
                )
                rows.append(fields)
                prev = fields["record_hash"]
            connection.execute(
                sa.text("INSERT INTO lineage_heads (tenant, last_seq, last_hash, updated_at) VALUES (:t, :s, :h, :u)"),
                {"t": TENANT, "s": count, "h": prev, "u": rows[-1]["recorded_at"]},
            )
    finally:
        engine.dispose()
    return rows


def test_a_chain_written_before_rfc_8785_still_verifies_and_grows_under_it(trail_url: str):
    # setup
    legacy = _write_legacy_chain(trail_url, 3)

    # run: the upgrade, then a retry of the last old append and a new one
    with LineageTrail(trail_url) as trail:
        trail.migrate()
        before = trail.verify(TENANT)
        old = trail.history(TENANT)
        retry = trail.append(
            LineageEntry(tenant=TENANT, asset="asset_3", run_id="run-3", output_hash=legacy[2]["output_hash"])
        )
        new = trail.append(_entry("asset_4", "run-4", "after the upgrade", privacy_charged={"epsilon": 1.0}))
        after = trail.verify(TENANT, anchors={3: legacy[2]["record_hash"], 4: new.record_hash})

    # assert: old records keep their hashes under v1 and would not verify as v2; the chain goes on under v2
    assert before.ok and before.records == 3, before.reason
    assert [r.record_hash for r in old] == [r["record_hash"] for r in legacy]
    assert {r.hash_scheme for r in old} == {LEGACY_HASH_SCHEME}
    assert all(record_digest({**r.to_dict(), "hash_scheme": HASH_SCHEME}) != r.record_hash for r in old)
    assert (retry.appended, retry.seq) == (False, 3)
    assert (new.seq, new.hash_scheme, new.prev_hash) == (4, HASH_SCHEME, legacy[2]["record_hash"])
    assert after.ok and after.records == 4, after.reason


@pytest.mark.parametrize(
    ("seq", "statement", "reason"),
    [
        (2, "UPDATE lineage_records SET code_version = 'forged' WHERE seq = :seq", "edited"),
        (4, "UPDATE lineage_records SET code_version = 'forged' WHERE seq = :seq", "edited"),
        # a v2 record relabelled v1 (or back) no longer matches: the scheme is hashed into the record
        (4, f"UPDATE lineage_records SET hash_scheme = '{LEGACY_HASH_SCHEME}' WHERE seq = :seq", "edited"),
        (2, f"UPDATE lineage_records SET hash_scheme = '{HASH_SCHEME}' WHERE seq = :seq", "edited"),
        (3, "UPDATE lineage_records SET hash_scheme = 'credittwin-lineage/v9' WHERE seq = :seq", "unknown hash scheme"),
    ],
)
def test_tampering_is_detected_under_either_hash_scheme(trail_url: str, seq: int, statement: str, reason: str):
    # setup: seq 1 to 3 hashed the v1 way, seq 4 and 5 under RFC 8785
    _write_legacy_chain(trail_url, 3)
    with LineageTrail(trail_url) as trail:
        trail.migrate()
        for i in (4, 5):
            trail.append(_entry(f"asset_{i}", f"run-{i}", f"new-{i}"))
        assert trail.verify(TENANT).ok

        # run
        _tamper(trail_url, (statement, {"seq": seq}))
        report = trail.verify(TENANT)

    # assert
    assert not report.ok
    assert report.first_broken == seq and reason in report.reason
