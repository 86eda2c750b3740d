"""The lineage audit trail as the IO manager writes it, and `credittwin audit` reading it back.

A tenant is materialized through the real graph (up to its privacy
certificate) against a file-backed Dagster instance in DAGSTER_HOME, the
instance `credittwin audit` reads its anchors from.
"""

import json
import sqlite3

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from models.tape.demo import generate_portfolio, write_landing
from pipelines.cli import ensure_dagster_home, main
from pipelines.definitions import build_definitions
from resources.ledger import normalise_url
from resources.lineage import LineageTrail, LineageUnavailableError, record_digest
from resources.settings import Settings, code_version
from resources.storage import VersionedStore
from tests.conftest import materialize_tenant, write_small_tape

AUDIT = {"n_attacks": 200, "anonymeter_sample_size": 400}
RUN_CONFIG = {"lstm_cascade": {"config": {"epochs": 3, "hidden_size": 16}}}
UPTO = ["raw_loan_tape", "loan_features", "fitted_copula", "lstm_cascade", "synthetic_portfolio",
        "anonymized_portfolio", "privacy_audit", "privacy_certificate"]
TENANT = "bank"


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    data = tmp_path_factory.mktemp("audit") / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    folder = data / "landing" / TENANT
    write_landing(generate_portfolio(700, months=6, seed=5), folder, fmt="parquet")
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    (folder / "tenant.yaml").write_text(yaml.safe_dump({**config, "audit": AUDIT}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDITTWIN_DATA_DIR", str(data))
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.delenv("CREDITTWIN_LEDGER_URL", raising=False)
        home = ensure_dagster_home(settings)  # the instance `credittwin audit` opens
        with dg.DagsterInstance.from_config(str(home)) as instance:
            result = materialize_tenant(settings, instance, TENANT, UPTO, run_config={"ops": RUN_CONFIG})
            assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
            yield settings, instance, result


@pytest.fixture
def cli_env(materialized, monkeypatch):
    settings, _, _ = materialized
    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CREDITTWIN_LEDGER_URL", raising=False)
    return settings


def _history(settings, tenant=TENANT):
    with LineageTrail(settings.lineage) as trail:
        return trail.history(tenant)


def _certificate_id(settings):
    return VersionedStore(settings.data_dir, ["privacy_certificate"], TENANT).read().document("summary")["certificate_id"]


def test_each_materialization_is_one_record_with_the_stored_manifests_hashes(materialized):
    settings, instance, result = materialized
    records = _history(settings)
    by_asset = {record.asset: record for record in records}
    assert sorted(r.asset for r in records) == sorted(UPTO)  # one record per asset, nothing twice
    assert [r.seq for r in records] == list(range(1, len(UPTO) + 1))
    manifests = {}
    for asset in UPTO:
        manifest = VersionedStore(settings.data_dir, [asset], TENANT).read().manifest
        manifests[asset] = manifest["content_sha256"]
        record = by_asset[asset]
        assert record.run_id == result.run_id and record.partition_key == TENANT
        assert record.output_hash == record.data_version == manifest["content_sha256"]
        assert record.output_files == {name: info["sha256"] for name, info in manifest["files"].items()}
        assert record.code_version.endswith("+" + code_version())
    raw = VersionedStore(settings.data_dir, ["raw_loan_tape"], TENANT).read()
    assert by_asset["raw_loan_tape"].input_hashes == {"upload": raw.document("ingest")["upload_sha256"]}
    # inputs are the content hashes actually loaded; versions are Dagster's data versions of those outputs
    synthetic = by_asset["synthetic_portfolio"]
    assert synthetic.input_hashes == {a: manifests[a] for a in ("raw_loan_tape", "fitted_copula", "lstm_cascade")}
    assert synthetic.input_versions["raw_loan_tape"] == raw.document("ingest")["upload_sha256"][:32]
    certificate = by_asset["privacy_certificate"]
    assert {"release/loans.csv", "release/loans.parquet", "certificate.json", "certificate.pdf"} <= set(
        certificate.output_files
    )
    assert all(r.privacy_charged is None for r in records)  # a non-DP tenant charges nothing
    # each materialization's metadata anchors its record outside the lineage database
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        record = by_asset[materialization.asset_key.to_user_string()]
        assert materialization.metadata["lineage_seq"].value == record.seq
        assert materialization.metadata["lineage_record_hash"].value == record.record_hash


def test_audit_prints_the_lineage_from_upload_to_certificate_and_exits_0(cli_env, capsys):
    settings = cli_env
    upload = VersionedStore(settings.data_dir, ["raw_loan_tape"], TENANT).read().document("ingest")["upload_sha256"]
    assert main(["audit", TENANT]) == 0
    out = capsys.readouterr().out
    assert f"Chain of tenant '{TENANT}' verifies: {len(UPTO)} record(s), {len(UPTO)} anchor(s)" in out
    assert _certificate_id(settings) in out and f"Upload: sha256 {upload}" in out
    # the certificate's lineage: every asset it derives from, not loan_features (a side branch)
    table = out.split("inputs", 1)[1]
    assert "privacy_certificate" in table and "raw_loan_tape" in table and "loan_features" not in table
    assert main(["audit", TENANT, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] and document["chain"]["ok"] and document["anchors_checked"] == len(UPTO)
    assert document["uploads"] == [upload]


def test_audit_file_names_the_upload_runs_models_and_certificate_of_an_exported_file(
    cli_env, materialized, tmp_path, capsys
):
    settings, _, result = cli_env, *materialized[1:]
    bundle = tmp_path / "bundle"
    assert main(["export", TENANT, str(bundle)]) == 0
    capsys.readouterr()
    upload = VersionedStore(settings.data_dir, ["raw_loan_tape"], TENANT).read().document("ingest")["upload_sha256"]

    assert main(["audit", TENANT, "--file", str(bundle / "loans.csv")]) == 0
    out = capsys.readouterr().out
    assert "written as release/loans.csv by privacy_certificate" in out
    assert f"from upload sha256 {upload}" in out
    assert f"run {result.run_id}" in out
    assert f"certificate {_certificate_id(settings)}" in out
    assert "model fitted_copula" in out and "model lstm_cascade" in out

    assert main(["audit", TENANT, "--file", str(bundle / "certificate.json"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)["file"]
    assert answer["uploads"] == [upload] and answer["runs"] == [result.run_id]
    assert [c["certificate_id"] for c in answer["certificates"]] == [_certificate_id(settings)]
    assert {m["asset"] for m in answer["models"]} == {"fitted_copula", "lstm_cascade"}

    # a file no run wrote: answered, and the command exits 1
    (tmp_path / "other.csv").write_text("loan_id\nforged\n")
    assert main(["audit", TENANT, "--file", str(tmp_path / "other.csv")]) == 1
    assert "no lineage record" in capsys.readouterr().out


def test_an_unknown_tenant_is_a_clear_error(cli_env, capsys):
    assert main(["audit", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "tenant 'nobody'" in err and "no lineage records" in err
    assert main(["audit", "../etc"]) == 2


def _copy_of_the_trail(settings, tmp_path, monkeypatch) -> str:
    """A copy of the lineage database the CLI is pointed at, so tampering leaves the fixture's intact."""
    copy = tmp_path / "copy.sqlite"
    source = sqlite3.connect(settings.data_dir / "credittwin.sqlite")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    url = f"sqlite:///{copy}"
    monkeypatch.setenv("CREDITTWIN_LEDGER_URL", url)
    return url


def _tamper(url, *statements):
    """Run SQL as the database owner who first drops the append-only triggers (as tests/resources/test_lineage does)."""
    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.begin() as connection:
            for table, action in (("lineage_records", "update"), ("lineage_records", "delete"),
                                  ("lineage_heads", "update"), ("lineage_heads", "delete")):
                connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
            for sql, params in statements:
                connection.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def test_an_edited_row_makes_audit_exit_1_naming_the_record(cli_env, tmp_path, monkeypatch, capsys):
    settings = cli_env
    url = _copy_of_the_trail(settings, tmp_path, monkeypatch)
    target = next(r for r in _history(settings) if r.asset == "fitted_copula")
    _tamper(url, ("UPDATE lineage_records SET code_version = :v WHERE id = :id", {"v": "forged", "id": target.id}))

    assert main(["audit", TENANT]) == 1
    captured = capsys.readouterr()
    assert f"BROKEN at record seq {target.seq} (id {target.id})" in captured.out
    assert "edited" in captured.out
    assert f"seq {target.seq} (id {target.id})" in captured.err


def test_a_chain_rewritten_consistently_in_sql_is_caught_by_dagsters_anchors(cli_env, tmp_path, monkeypatch, capsys):
    settings = cli_env
    url = _copy_of_the_trail(settings, tmp_path, monkeypatch)
    records = _history(settings)
    # forge: change the copula's record and re-hash it and every later record, and the head
    forged, statements, prev = [], [], None
    for record in records:
        fields = record.to_dict()
        if record.asset == "fitted_copula":
            fields["code_version"] = "forged"
        if prev is not None:
            fields["prev_hash"] = prev
        fields["record_hash"] = record_digest(fields)
        prev = fields["record_hash"]
        statements.append(("UPDATE lineage_records SET code_version = :v, prev_hash = :p, record_hash = :h WHERE id = :id",
                           {"v": fields["code_version"], "p": fields["prev_hash"], "h": prev, "id": record.id}))
        forged.append(fields)
    statements.append(("UPDATE lineage_heads SET last_hash = :h WHERE tenant = :t", {"h": prev, "t": TENANT}))
    _tamper(url, *statements)
    with LineageTrail(url) as trail:
        assert trail.verify(TENANT).ok  # consistent on its own

    assert main(["audit", TENANT]) == 1
    out = capsys.readouterr().out
    first = next(f for f in forged if f["code_version"] == "forged")
    assert f"BROKEN at record seq {first['seq']}" in out and "rewritten" in out


def test_a_failed_lineage_write_fails_the_step_after_storing_and_the_retry_records_once(settings, monkeypatch):
    # setup: the first append of each asset fails, once after committing (a lost acknowledgement), once before
    write_small_tape(settings.landing_dir / "acme")
    real_append = LineageTrail.append
    failed: list[str] = []

    def flaky_append(self, entry):
        if entry.asset not in failed:
            failed.append(entry.asset)
            if entry.asset == "raw_loan_tape":
                real_append(self, entry)
            raise LineageUnavailableError("the database went away (injected)", tenant=entry.tenant)
        return real_append(self, entry)

    monkeypatch.setattr(LineageTrail, "append", flaky_append)
    retrying = dg.define_asset_job(
        "retrying", selection=["raw_loan_tape", "loan_features"], op_retry_policy=dg.RetryPolicy(max_retries=1)
    )
    job = dg.Definitions.merge(build_definitions(settings), dg.Definitions(jobs=[retrying])).resolve_job_def("retrying")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["acme"])

        # run
        result = job.execute_in_process(partition_key="acme", instance=instance, raise_on_error=False)

    # assert: each step failed once on the lineage write, was retried, and is recorded exactly once
    assert result.success
    retried = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY}
    assert retried == {"raw_loan_tape", "loan_features"}
    records = _history(settings, "acme")
    assert [r.asset for r in records] == ["raw_loan_tape", "loan_features"]
    for record in records:
        current = VersionedStore(settings.data_dir, [record.asset], "acme").read().manifest["content_sha256"]
        assert record.output_hash == current and record.run_id == result.run_id
    with LineageTrail(settings.lineage) as trail:
        assert trail.verify("acme").ok

