"""The landing-zone sensor: registers tenants and requests runs for new or changed uploads."""


import json

import dagster as dg

from models.errors import CreditTwinError, InvalidTenantError
from models.tape.loan_tape import fingerprint
from models.tape.tenant import load_tenant_config, validate_tenant_id
from pipelines.jobs import PARTITION_TAG, SCOPE_TAG, TRIGGER_TAG, TENANT_TAG, UPLOAD_TAG, WHOLE_GRAPH, tenant_pipeline
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings

INVALID_FOLDER_NOTE = "tenant-id"
RAW_TAPE = dg.AssetKey("raw_loan_tape")
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def ingested_upload(instance: dg.DagsterInstance, tenant: str) -> str | None:
    """The fingerprint of the upload that the tenant's latest `raw_loan_tape` materialization read, by any path."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_TAPE, asset_partitions=[tenant]), limit=1
    ).records
    recorded = records[0].asset_materialization.metadata.get("input_sha256") if records else None
    return str(recorded.value) if recorded is not None else None


def _run_in_progress(instance: dg.DagsterInstance, tenant: str) -> bool:
    """True while a run of the tenant executes: it may be ingesting this very upload (a `credittwin` run has no
    upload tag), so deciding waits for it instead of queueing a duplicate behind it."""
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={PARTITION_TAG: tenant}, statuses=IN_PROGRESS), limit=1))


def scan_landing(context: dg.SensorEvaluationContext, settings: CreditTwinSettings) -> dg.SensorResult | dg.SkipReason:
    """One pass over the landing zone (local or object storage); every tenant is handled on its own so one bad
    upload blocks nobody. A listing decides whether an upload changed; only a changed, settled one is read."""
    zone = settings.landing()
    settle_seconds = settings.sensor_settle_seconds
    try:
        if not zone.exists():
            return dg.SkipReason(f"landing zone {zone.url} does not exist yet")
        entries = zone.entries()
    except Exception as error:  # noqa: BLE001 - storage unreachable (botocore's errors are no OSError): a sensor
        # never crashes on it, the next tick retries
        context.log.warning(f"landing zone {zone.url} could not be listed ({type(error).__name__}: {error}); retrying next tick")
        return dg.SkipReason(f"landing zone {zone.url} could not be listed: {type(error).__name__}")
    cursor: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(tenants.name))
    run_requests: list[dg.RunRequest] = []
    new_tenants: list[str] = []
    for entry in entries:
        if not entry.is_folder:
            # No rejection note: inside a link it would land in the folder the link points to.
            context.log.warning(f"landing zone: ignoring {entry.name!r}: only tenant folders (not links) belong here")
            continue
        try:
            tenant = validate_tenant_id(entry.name)
        except InvalidTenantError as error:
            try:
                if not zone.has_rejection(entry.name, INVALID_FOLDER_NOTE):
                    context.log.warning(f"landing zone: {error}")
                    zone.write_rejection(entry.name, INVALID_FOLDER_NOTE, str(error))
            except (CreditTwinError, OSError) as note_error:
                context.log.warning(f"landing zone: {error} (no rejection note written: {note_error})")
            continue
        try:
            stamp = zone.stamp(tenant)
            previous = cursor.get(tenant, {})
            if previous.get("stat") == stamp.key:
                continue
            if stamp.youngest_age_s < settle_seconds:
                context.log.info(f"tenant '{tenant}': upload still changing; waiting {settle_seconds:.0f}s for it to settle")
                continue
            upload = zone.upload(tenant)
            upload_sha = fingerprint(upload)
            if previous.get("sha") == upload_sha:
                cursor[tenant] = {"stat": stamp.key, "sha": upload_sha}
                continue
            if tenant in known:
                # `credittwin materialize`, the UI or a backfill may have processed the upload already
                if _run_in_progress(context.instance, tenant):
                    context.log.info(f"tenant '{tenant}': a run is in progress; the upload is looked at after it")
                    continue
                if ingested_upload(context.instance, tenant) == upload_sha:
                    context.log.info(f"tenant '{tenant}': upload {upload_sha[:12]} is already materialized; no run")
                    cursor[tenant] = {"stat": stamp.key, "sha": upload_sha}
                    continue
            if upload.config is not None:
                load_tenant_config(upload.config, tenant=tenant)
            if upload.loans.stat().st_size == 0:
                raise CreditTwinError("file is empty.", tenant=tenant, file=upload.loans.name, fix="upload a loans file with a header and rows.")
        except CreditTwinError as error:
            error.with_context(tenant=tenant)
            context.log.warning(f"landing zone: rejected upload: {error}")
            try:
                zone.write_rejection(tenant, error.file or "upload", str(error))
                cursor[tenant] = {"stat": zone.stamp(tenant).key, "sha": ""}
            except Exception:  # noqa: BLE001 - no note written (store failing): the next tick tries again
                cursor.pop(tenant, None)
            continue
        except Exception as error:  # noqa: BLE001 - one tenant's storage failure never stops the others
            # A file vanished or was replaced between listing and reading, or the store failed: try again next tick.
            context.log.info(f"tenant '{tenant}': upload changed or unreadable while scanning ({error.__class__.__name__}); retrying next tick")
            continue
        if tenant not in known:
            new_tenants.append(tenant)
        run_requests.append(
            dg.RunRequest(
                run_key=f"{tenant}:{upload_sha}",
                partition_key=tenant,
                tags={TENANT_TAG: tenant, UPLOAD_TAG: upload_sha, TRIGGER_TAG: "landing", SCOPE_TAG: WHOLE_GRAPH},
            )
        )
        cursor[tenant] = {"stat": stamp.key, "sha": upload_sha}
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[tenants.build_add_request(new_tenants)] if new_tenants else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )


@dg.sensor(
    job=tenant_pipeline,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each valid tenant folder in the landing zone and runs its graph when its files change.",
)
def landing_sensor(context: dg.SensorEvaluationContext, settings: CreditTwinSettings):
    return scan_landing(context, settings)
