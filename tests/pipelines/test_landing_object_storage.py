"""The landing zone on object storage (a real S3-compatible server): the sensor, the ingest and the drift sensor.

A lender uploads with any S3 client into ``<data url>/landing/<tenant>/``; the
landing sensor notices it from a listing, registers the tenant and asks for one
run keyed by the upload's fingerprint, the same fingerprint `raw_loan_tape`
records when it reads the staged copy. Bad uploads get rejection notes as
objects beside them and block nobody. The drift sensor reads stored tapes from
the same object store.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from models.tape.loan_tape import find_upload, fingerprint
from pipelines.ops_sensors import drift_sensor
from pipelines.sensors import ingested_upload, landing_sensor
from resources.dagster_resources import CreditTwinSettings
from resources.settings import Settings
from tests.conftest import failure_text, materialize_tenant, write_small_tape


@pytest.fixture
def s3_settings(tmp_path: Path, s3_bucket) -> Settings:
    url, options = s3_bucket
    return Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0, data_url=url, storage_options=options)


def _resource(settings: Settings, settle: float = 0.0) -> CreditTwinSettings:
    return CreditTwinSettings(data_dir=str(settings.data_dir), data_url=settings.data_url,
                              storage_options=json.dumps(settings.storage_options), sensor_settle_seconds=settle)


def _tick(settings: Settings, instance, cursor=None, settle: float = 0.0):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": _resource(settings, settle)})
    return landing_sensor(context)


def _upload(settings: Settings, tenant: str, folder: Path) -> None:
    """What a lender's S3 client does: put each file of `folder` under the tenant's prefix."""
    zone = settings.landing_zone()
    for path in sorted(folder.iterdir()):
        zone.root.upload(path, zone.root.key(tenant, path.name))


def test_an_upload_to_s3_registers_the_tenant_and_runs_once_with_the_ingested_fingerprint(s3_settings, tmp_path):
    # setup: a lender puts a tape into the S3 landing zone; nothing is on the local disk
    folder = write_small_tape(tmp_path / "lender" / "acme")
    _upload(s3_settings, "acme", folder)
    expected = fingerprint(find_upload(folder, "acme"))
    with dg.instance_for_test() as instance:
        # run: the sensor lists the bucket
        first = _tick(s3_settings, instance)
        # assert: one run for acme, keyed by the fingerprint of the uploaded bytes, and the tenant registered
        assert [(r.partition_key, r.tags["credittwin/upload_sha256"]) for r in first.run_requests] == [("acme", expected)]
        assert [req.partition_keys for req in first.dynamic_partitions_requests] == [["acme"]]
        assert not (s3_settings.data_dir / "landing").exists()
        instance.add_dynamic_partitions("tenants", ["acme"])
        # an unchanged listing reads nothing and asks nothing
        assert _tick(s3_settings, instance, first.cursor).run_requests == []

        # run: the ingest reads the same upload from S3 (a staged copy) and records the same fingerprint
        result = materialize_tenant(s3_settings, instance, "acme", ["raw_loan_tape"])
        assert result.success, failure_text(result)
        assert ingested_upload(instance, "acme") == expected
        # the same bytes uploaded again (a new ETag-less time, same content): no second run
        _upload(s3_settings, "acme", folder)
        assert _tick(s3_settings, instance).run_requests == []

        # a changed upload: one new run, for the new bytes
        loans = pl.read_csv(folder / "loans.csv")
        loans.head(100).write_csv(folder / "loans.csv")
        _upload(s3_settings, "acme", folder)
        changed = _tick(s3_settings, instance, first.cursor)
        assert [r.tags["credittwin/upload_sha256"] for r in changed.run_requests] == [fingerprint(find_upload(folder, "acme"))]


def test_an_upload_still_arriving_waits_for_the_settle_time(s3_settings, tmp_path):
    # setup: a fresh upload, and a settle time longer than its age
    _upload(s3_settings, "acme", write_small_tape(tmp_path / "lender" / "acme"))
    with dg.instance_for_test() as instance:
        # run and assert: the object store's last-modified time is honoured
        assert _tick(s3_settings, instance, settle=3600).run_requests == []
        assert len(_tick(s3_settings, instance, settle=0).run_requests) == 1


def test_bad_uploads_on_s3_get_rejection_notes_and_block_nobody(s3_settings, tmp_path):
    # setup: a good tenant, a tenant with two loans files, a folder that is not a tenant id, a stray file
    zone = s3_settings.landing_zone()
    _upload(s3_settings, "acme", write_small_tape(tmp_path / "lender" / "acme"))
    bank = write_small_tape(tmp_path / "lender" / "bank")
    pl.read_csv(bank / "loans.csv").write_parquet(bank / "loans.parquet")
    _upload(s3_settings, "bank", bank)
    _upload(s3_settings, "Not_A_Tenant", write_small_tape(tmp_path / "lender" / "odd"))
    zone.root.put(zone.root.key("stray.csv"), b"a,b\n1,2\n")
    with dg.instance_for_test() as instance:
        # run
        result = _tick(s3_settings, instance)
        again = _tick(s3_settings, instance, result.cursor)
    # assert: acme runs; bank and the bad folder get a note naming the problem and the fix, once
    assert [r.partition_key for r in result.run_requests] == ["acme"]
    note = zone.root.get(zone.root.key("bank", "loans.csv.rejected.txt")).decode()
    assert "tenant 'bank'" in note and "loans.parquet" in note and "keep only one" in note
    bad = zone.root.get(zone.root.key("Not_A_Tenant", "tenant-id.rejected.txt")).decode()
    assert "Not_A_Tenant" in bad
    assert again.run_requests == []
    # the ingest of bank fails with the same reason and leaves nothing stored; a fixed upload clears the notes
    with dg.instance_for_test() as instance:
        failed = materialize_tenant(s3_settings, instance, "bank", ["raw_loan_tape"])
        assert not failed.success and "keep only one" in failure_text(failed)
        zone.root.remove(zone.root.key("bank", "loans.parquet"))
        fixed = materialize_tenant(s3_settings, instance, "bank", ["raw_loan_tape"])
        assert fixed.success, failure_text(fixed)
    assert [n for n in zone.root.names(zone.root.key("bank")) if n.endswith(".rejected.txt")] == []


def test_an_unreachable_landing_store_is_a_skip_not_a_crash(tmp_path):
    # setup: a landing zone on an S3 endpoint nobody listens on
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0, data_url="s3://nowhere/data",
                        storage_options={"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s",
                                         "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}})
    with dg.instance_for_test() as instance:
        # run
        result = _tick(settings, instance)
    # assert
    assert isinstance(result, dg.SkipReason) and "could not be listed" in result.skip_message


def test_the_drift_sensor_reads_stored_tapes_from_s3(s3_settings, tmp_path):
    # setup: a tenant ingested and fitted from S3, then a shifted population uploaded and ingested
    folder = write_small_tape(tmp_path / "lender" / "acme", rows=400, performance=False)
    _upload(s3_settings, "acme", folder)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["acme"])
        fitted = materialize_tenant(s3_settings, instance, "acme", ["raw_loan_tape", "fitted_copula"])
        assert fitted.success, failure_text(fitted)
        loans = pl.read_csv(folder / "loans.csv")
        loans.with_columns(pl.col("annual_income") * 3).write_csv(folder / "loans.csv")
        _upload(s3_settings, "acme", folder)
        assert materialize_tenant(s3_settings, instance, "acme", ["raw_loan_tape"]).success
        # run
        context = dg.build_sensor_context(instance=instance, resources={"settings": _resource(s3_settings)})
        result = drift_sensor(context)
    # assert: the drift was measured from the two stored versions on S3, and a regeneration requested
    assert [r.partition_key for r in result.run_requests] == ["acme"]
    assert result.run_requests[0].tags["credittwin/drift_max_psi_column"] == "annual_income"
    assert not (s3_settings.data_dir / "assets").exists()


def test_a_real_tape_uploaded_to_s3_is_certified_in_its_own_vocabulary(s3_settings, tmp_path):
    # setup: a public credit tape (AER CreditCard: yes/no flags, small counts) put into the S3 landing zone by the
    # lender's client; every output goes to S3 too
    import pandas as pd

    from pipelines.release import export_release
    from resources.storage import read_current
    from tests.corpus import CORPUS, vocabulary_mismatches

    tape = next(t for t in CORPUS if t.tenant == "aer-creditcard")
    folder = tape.write(tmp_path / "lender" / tape.tenant)
    _upload(s3_settings, tape.tenant, folder)
    with dg.instance_for_test() as instance:
        # run: the whole graph, then the export a recipient gets
        result = materialize_tenant(s3_settings, instance, tape.tenant)
        assert result.success, failure_text(result)
    manifest = export_release(s3_settings, tape.tenant, tmp_path / "bundle")
    # assert: certified, nothing kept on local disk but caches and stores, and the release in the file's spelling
    assert {"loans.csv", "certificate.json"} <= {entry["name"] for entry in manifest["files"]}
    assert not (s3_settings.data_dir / "landing").exists() and not (s3_settings.data_dir / "assets").exists()
    certificate = json.loads((tmp_path / "bundle" / "certificate.json").read_text())
    original = pd.read_csv(folder / "loans.csv")
    released = pd.read_csv(tmp_path / "bundle" / "loans.csv")
    generalised = set(certificate["anonymity"]["quasi_identifiers"])
    schema = read_current(s3_settings.storage_root(), "raw_loan_tape", tape.tenant).schema
    identifiers = {c.name for c in schema.columns if c.type.value == "identifier"}
    assert vocabulary_mismatches(original, released, generalised=generalised, identifiers=identifiers) == []


def test_files_on_s3_under_another_spelling_get_a_note_with_the_rename(s3_settings, tmp_path):
    # setup: one lender's client upper-cases the loans file, another's sends the history as Performance.csv
    zone = s3_settings.landing_zone()
    upper = write_small_tape(tmp_path / "lender" / "upper")
    (upper / "loans.csv").rename(upper / "LOANS.CSV")
    _upload(s3_settings, "upper", upper)
    history = write_small_tape(tmp_path / "lender" / "history")
    (history / "performance.csv").rename(history / "Performance.csv")
    _upload(s3_settings, "history", history)
    with dg.instance_for_test() as instance:
        # run
        result = _tick(s3_settings, instance)
    # assert: neither runs (the history is not skipped without a word); each note names the file and the rename
    assert result.run_requests == []
    notes = {t: " ".join(zone.root.get(zone.root.key(t, n)).decode() for n in zone.root.names(zone.root.key(t))
                         if n.endswith(".rejected.txt")) for t in ("upper", "history")}
    assert "rename 'LOANS.CSV' to 'loans.csv'" in notes["upper"]
    assert "rename 'Performance.csv' to 'performance.csv'" in notes["history"]
