"""The landing-zone sensor: registers tenants and requests runs for new or changed uploads."""


import json
import time

import dagster as dg

from models.errors import CreditTwinError, InvalidTenantError
from models.tape import find_upload, fingerprint
from models.tenant import load_tenant_config, validate_tenant_id
from pipelines.jobs import TRIGGER_TAG, TENANT_TAG, UPLOAD_TAG, tenant_pipeline
from pipelines.partitions import tenants
from resources.dagster_resources import CreditTwinSettings
from resources.landing import REJECTED_SUFFIX, write_rejection

INVALID_FOLDER_NOTE = "tenant-id"


def _stat_key(paths) -> str:
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)


def _youngest_age(paths) -> float:
    return min(time.time() - p.stat().st_mtime for p in paths)


def scan_landing(context: dg.SensorEvaluationContext, settings: CreditTwinSettings) -> dg.SensorResult | dg.SkipReason:
    """One pass over the landing zone; every tenant is handled on its own so one bad upload blocks nobody."""
    landing = settings.landing_dir
    settle_seconds = settings.sensor_settle_seconds
    if not landing.is_dir():
        return dg.SkipReason(f"landing zone {landing} does not exist yet")
    cursor: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(tenants.name))
    run_requests: list[dg.RunRequest] = []
    new_tenants: list[str] = []
    for entry in sorted(landing.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith(REJECTED_SUFFIX):
            continue
        if entry.is_symlink() or not entry.is_dir():
            context.log.warning(f"landing zone: ignoring {entry.name!r}: only tenant folders belong here")
            continue
        try:
            tenant = validate_tenant_id(entry.name)
        except InvalidTenantError as error:
            note = entry / (INVALID_FOLDER_NOTE + REJECTED_SUFFIX)
            if not note.exists():
                context.log.warning(f"landing zone: {error}")
                write_rejection(entry, INVALID_FOLDER_NOTE, str(error))
            continue
        try:
            upload = find_upload(entry, tenant)
            stat_key = _stat_key(upload.files)
            previous = cursor.get(tenant, {})
            if previous.get("stat") == stat_key:
                continue
            if _youngest_age(upload.files) < settle_seconds:
                context.log.info(f"tenant '{tenant}': upload still changing; waiting {settle_seconds:.0f}s for it to settle")
                continue
            upload_sha = fingerprint(upload)
            if previous.get("sha") == upload_sha:
                cursor[tenant] = {"stat": stat_key, "sha": upload_sha}
                continue
            if upload.config is not None:
                load_tenant_config(upload.config, tenant=tenant)
            if upload.loans.stat().st_size == 0:
                raise CreditTwinError("file is empty.", tenant=tenant, file=upload.loans.name, fix="upload a loans file with a header and rows.")
        except CreditTwinError as error:
            error.with_context(tenant=tenant)
            context.log.warning(f"landing zone: rejected upload: {error}")
            write_rejection(entry, error.file or "upload", str(error))
            try:
                cursor[tenant] = {"stat": _stat_key(find_upload(entry, tenant).files), "sha": ""}
            except (CreditTwinError, OSError):
                cursor.pop(tenant, None)
            continue
        except OSError as error:
            # A file vanished or was replaced between listing and reading: try again next tick.
            context.log.info(f"tenant '{tenant}': upload changed while scanning ({error.__class__.__name__}); retrying next tick")
            continue
        if tenant not in known:
            new_tenants.append(tenant)
        run_requests.append(
            dg.RunRequest(
                run_key=f"{tenant}:{upload_sha}",
                partition_key=tenant,
                tags={TENANT_TAG: tenant, UPLOAD_TAG: upload_sha, TRIGGER_TAG: "landing"},
            )
        )
        cursor[tenant] = {"stat": stat_key, "sha": upload_sha}
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
