"""Operations sensors: drift-driven regeneration and run-failure alerts.

`drift_sensor` — for each registered tenant, compares the newest stored raw
tape (the current ``raw_loan_tape`` output) with the raw tape its current twin
was fitted on, and requests a run of the tenant's graph when the drift passes
the tenant's threshold (``drift:`` in tenant.yaml, `models.risk.drift.DriftConfig`;
defaults when absent). Why these two tapes:

* the twin's input is found from the event log without reading any data: it
  is the tenant's last ``raw_loan_tape`` materialization before its latest
  ``fitted_copula`` one (the IO manager hands a step the CURRENT stored
  version, and a tenant runs one run at a time); that materialization's data
  version is the upload's SHA-256 and its ``path`` metadata names the stored
  version folder (``assets/raw_loan_tape/<tenant>/v*/``, the last three are
  kept), which holds the upload already typed and validated;
* the newest side is the stored tape, not the landing folder: it has passed
  the blocking checks, is Parquet (no CSV parsing in the sensor process), and
  cannot race the landing sensor over a half-written upload.

When the two tapes are the same upload the twin is current and nothing is
read. A tenant with a queued or running run is skipped until it finishes
(that run is probably the regeneration). Each (fitted upload, newest upload)
pair is measured once: the cursor remembers it, so the same drift is never
requested twice. The run carries the figures as short tags
(`DriftReport.to_tags`: max PSI and its column, columns over the threshold,
default-rate shift in percentage points) and the full report is written to
``<data_dir>/ops/drift/<tenant>/<fitted>_<newest>.json``, named in the
``credittwin/drift_report`` tag. One bad tenant is logged and skipped; it never
stops the others.

When the fitted tape has been pruned from storage (three newer uploads were
ingested without a refit) the drift cannot be measured; the sensor logs it
once and leaves the refit to the automation condition or the weekly schedule.

`dead_run_sensor` — fails the runs whose `credittwin` process on this host was
killed and frees their pool slots (`pipelines.recovery.fail_dead_runs`): the
daemon's run monitoring cannot see an in-process run, which has no launcher.

`run_failure_alerts` — a run-failure sensor: for every failed run it writes
``{tenant, run_id, job, step, error, time, trigger}`` as one JSON line to
``<data_dir>/ops/failures/<tenant>.jsonl`` (runs without a tenant go to
``_platform.jsonl``; appended under an exclusive lock in one write, so
concurrent writers never interleave) and posts it to
`resources.alerts.FailureSink` (the log, plus the webhook in
``CREDITTWIN_ALERT_WEBHOOK_URL`` when set). It watches every run of the
instance, the `credittwin` command's in-process runs included.

All default to RUNNING: an unattended platform must not depend on someone
toggling them on in the UI.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from models.errors import CreditTwinError
from models.files import atomic_write_text, dumps
from models.tape.tenant import validate_tenant_id
from pipelines.jobs import PARTITION_TAG, SCOPE_TAG, TENANT_TAG, TRIGGER_TAG, WHOLE_GRAPH, tenant_pipeline
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings
from resources.storage import open_store, safe_join

RAW_TAPE = dg.AssetKey("raw_loan_tape")
TWIN = dg.AssetKey("fitted_copula")
DATA_VERSION_TAG = "dagster/data_version"  # where Dagster records a materialization's data version
DRIFT_REPORT_TAG = "credittwin/drift_report"
DRIFT_REFERENCE_TAG = "credittwin/drift_fitted_version"
DRIFT_CURRENT_TAG = "credittwin/drift_newest_version"
PLATFORM_LOG = "_platform"  # not a valid tenant id, so it never collides with one
MAX_ERROR_CHARS = 2000
_BUSY = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


# ---------------------------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class TapeVersion:
    """One materialization of a tenant's raw tape: its data version and stored version name (None once pruned)."""

    data_version: str
    version: str | None
    storage_id: int


def _tape_version(record, stored: set[str]) -> TapeVersion:
    """`record` as a `TapeVersion`; its stored version is the last segment of its ``path`` metadata, used only when
    it names a complete version of this tenant's raw-tape store (`stored`), whatever else the metadata says."""
    materialization = record.asset_materialization
    data_version = (materialization.tags or {}).get(DATA_VERSION_TAG) or f"event-{record.storage_id}"
    path = materialization.metadata.get("path")
    name = str(path.value).rstrip("/").rsplit("/", 1)[-1] if path is not None else None
    return TapeVersion(data_version=data_version, version=name if name in stored else None, storage_id=record.storage_id)


def twin_tapes(instance: dg.DagsterInstance, store, tenant: str) -> tuple[TapeVersion, TapeVersion] | None:
    """(the raw tape the tenant's current twin was fitted on, the newest raw tape), or None without both.

    `store` is the tenant's raw-tape store (`resources.storage.open_store`), on local disk or object storage.
    The twin's tape is the tenant's last ``raw_loan_tape`` materialization before
    its latest ``fitted_copula`` one: the IO manager hands a step the CURRENT
    stored version, which is the last materialized one, and a tenant runs one
    run at a time. (Dagster's own provenance does not pin it down for a
    partition: it records a hash of the partition's data version and an event
    pointer that is asset-wide, not per partition.)
    """
    twin = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=TWIN, asset_partitions=[tenant]), limit=1
    ).records
    if not twin:
        return None
    newest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_TAPE, asset_partitions=[tenant]), limit=1
    ).records
    fitted = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_TAPE, asset_partitions=[tenant], before_storage_id=twin[0].storage_id),
        limit=1,
    ).records
    if not newest or not fitted:
        return None
    stored = set(store.versions())
    return _tape_version(fitted[0], stored), _tape_version(newest[0], stored)


def _read_tape(store, version: str):
    """(loans, schema, tenant config) of one stored raw-tape version."""
    from models.results import TapeSplit, as_result

    # the loans and the two documents only: the history, often the largest table, is not read
    tape: TapeSplit = as_result(RAW_TAPE.to_user_string(), store.read(version, parts=("loans", "schema", "tenant_config")))
    return tape.loans, tape.schema, tape.tenant_config


def drift_config_of(tenant_config):
    """The tenant's `DriftConfig` (``drift:`` in tenant.yaml), or the defaults."""
    from models.risk.drift import DriftConfig

    config = getattr(tenant_config, "drift", None)
    return config if isinstance(config, DriftConfig) else DriftConfig()


def _busy(instance: dg.DagsterInstance, tenant: str) -> bool:
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={PARTITION_TAG: tenant}, statuses=_BUSY), limit=1
    )
    return bool(records)


def measure_tenant_drift(tenant: str, store, reference: str, current: str):
    """The `DriftReport` between two stored raw-tape versions of `store`, with the newest upload's thresholds."""
    from models.risk.drift import measure_drift

    ref_loans, ref_schema, _ = _read_tape(store, reference)
    cur_loans, _, cur_config = _read_tape(store, current)
    return measure_drift(
        ref_loans,
        cur_loans,
        config=drift_config_of(cur_config),
        target=ref_schema.target,
        target_positive=ref_schema.target_positive or (1,),
        schema=ref_schema,
        tenant=tenant,
    )


def scan_drift(context: dg.SensorEvaluationContext, settings: CreditTwinSettings) -> dg.SensorResult:
    """One pass over the registered tenants; see the module docstring."""
    cursor: dict[str, dict[str, Any]] = json.loads(context.cursor) if context.cursor else {}
    data_dir = settings.root
    run_requests: list[dg.RunRequest] = []
    for tenant in sorted(context.instance.get_dynamic_partitions(tenants.name)):
        try:
            tenant = validate_tenant_id(tenant)
            store = open_store(settings.storage(), [RAW_TAPE.to_user_string()], tenant)
            tapes = twin_tapes(context.instance, store, tenant)
            if tapes is None:
                continue  # no twin yet: the first fit is the landing sensor's business
            fitted, newest = tapes
            if newest.data_version == fitted.data_version:
                continue  # the twin was fitted on the newest tape
            pair = f"{fitted.data_version}:{newest.data_version}"
            if cursor.get(tenant, {}).get("pair") == pair:
                continue  # this drift was measured (and, if it passed, requested) already
            if _busy(context.instance, tenant):
                context.log.info(f"tenant '{tenant}': a run is queued or in progress; drift is measured after it")
                continue
            if fitted.version is None or newest.version is None:
                context.log.warning(
                    f"tenant '{tenant}': the stored tape the twin was fitted on ({fitted.data_version}) or the newest "
                    "one is no longer in storage; drift cannot be measured (the automation condition or the weekly "
                    "schedule refits the twin)"
                )
                cursor[tenant] = {"pair": pair, "decision": "tape-not-stored"}
                continue
            report = measure_tenant_drift(tenant, store, fitted.version, newest.version)
        except Exception as error:  # one tenant's broken files or config never stop the others
            context.log.warning(f"drift: tenant '{tenant}' skipped: {type(error).__name__}: {error}")
            continue
        exceeded = report.exceeds()
        cursor[tenant] = {"pair": pair, "decision": "regenerate" if exceeded else "within-threshold",
                          "max_psi": round(report.max_psi, 4)}
        if not exceeded:
            context.log.info(f"tenant '{tenant}': drift within threshold (max PSI {report.max_psi:.3f})")
            continue
        report_path = safe_join(data_dir, "ops", "drift", tenant, f"{fitted.data_version}_{newest.data_version}.json")
        try:
            atomic_write_text(report_path, dumps({"tenant": tenant, "fitted_version": fitted.data_version,
                                                  "newest_version": newest.data_version, **report.to_dict()}))
        except OSError as error:
            context.log.warning(f"tenant '{tenant}': drift report not written: {error}")
        context.log.info(f"tenant '{tenant}': drift passes the threshold: {'; '.join(report.reasons())}")
        run_requests.append(
            dg.RunRequest(
                run_key=f"drift:{tenant}:{pair}",
                partition_key=tenant,
                tags={
                    TENANT_TAG: tenant,
                    TRIGGER_TAG: "drift",
                    SCOPE_TAG: WHOLE_GRAPH,
                    DRIFT_REFERENCE_TAG: fitted.data_version,
                    DRIFT_CURRENT_TAG: newest.data_version,
                    DRIFT_REPORT_TAG: str(report_path.relative_to(data_dir)),
                    **report.to_tags(),
                },
            )
        )
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(cursor, sort_keys=True))


@dg.sensor(
    job=tenant_pipeline,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Regenerates a tenant's twin when its newest tape drifted from the one the twin was fitted on "
    "(PSI per column, default-rate shift; thresholds from tenant.yaml `drift:`); the run's tags carry the figures.",
)
def drift_sensor(context: dg.SensorEvaluationContext, settings: CreditTwinSettings):
    return scan_drift(context, settings)


# ----------------------------------------------------------------------------------------- dead runs


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose `credittwin` process on this host was killed, and frees their pool "
    "slots, so one crashed run never blocks its tenant or the training pool (pipelines/recovery.py).",
)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    from pipelines.recovery import fail_dead_runs

    dead = fail_dead_runs(context.instance, free_ended=False)
    for run in dead:
        context.log.warning(f"run {run.run_id} of tenant {run.tenant!r}: its process (pid {run.pid}) is gone; "
                            "marked failed and its pool slots freed")
    return dg.SkipReason(f"{len(dead)} dead run(s) failed" if dead else "no dead runs")


# ------------------------------------------------------------------------------------- run failures


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to `path` in a single write under an exclusive lock, then fsync.

    O_APPEND places each write at the end and the lock keeps writers from other
    processes (several sensor ticks, a CLI) from interleaving, so a reader sees
    whole lines only.
    """
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def failure_log_path(data_dir: Path, tenant: str | None) -> Path:
    """``<data_dir>/ops/failures/<tenant>.jsonl``; `_platform.jsonl` for a run without a valid tenant."""
    name = tenant if tenant is not None else PLATFORM_LOG
    return safe_join(data_dir, "ops", "failures", f"{name}.jsonl")


def _root_error(error) -> str:
    """The innermost message of a Dagster error chain (the CreditTwin error a user can act on)."""
    if error is None:
        return ""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return (error.message or "").strip()


def run_tenant(run: dg.DagsterRun) -> str | None:
    """The validated tenant of a run (its partition, else the CreditTwin tenant tag), or None."""
    raw = run.tags.get(PARTITION_TAG) or run.tags.get(TENANT_TAG)
    try:
        return validate_tenant_id(raw) if raw is not None else None
    except CreditTwinError:
        return None


def failure_record(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    """What failed: tenant, run id, job, failed step(s), the error, when, and why the run was started."""
    run = context.dagster_run
    tenant = run_tenant(run)
    steps = context.get_step_failure_events()
    errors = [_root_error(event.event_specific_data.error) for event in steps if event.event_specific_data]
    error = "; ".join(e for e in errors if e) or (context.failure_event.message or "run failed")
    stats = context.instance.get_run_stats(run.run_id)
    ended = stats.end_time if stats is not None and stats.end_time else None
    when = datetime.fromtimestamp(ended, UTC) if ended else datetime.now(UTC)
    record = {
        "tenant": tenant,
        "run_id": run.run_id,
        "job": run.job_name,
        "step": ",".join(sorted({event.step_key for event in steps if event.step_key})) or None,
        "error": error[:MAX_ERROR_CHARS],
        "time": when.isoformat(timespec="seconds"),
        "trigger": run.tags.get(TRIGGER_TAG) or run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name"),
    }
    return record


def record_failure(context: dg.RunFailureSensorContext, settings: CreditTwinSettings) -> dict[str, Any]:
    """Post a failed run to the sink and append it to its tenant's failure log; return the record."""
    from resources.alerts import FailureSink

    record = failure_record(context)
    try:
        sink = FailureSink(settings.alert_webhook_url)
    except CreditTwinError as error:
        context.log.error(f"failure webhook misconfigured ({error}); logging only")
        sink = FailureSink(None)
    record["webhook_delivered"] = sink.post(record)
    append_jsonl(failure_log_path(settings.root, record["tenant"]), record)
    return record


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=30,
    # runs made by the `credittwin` command execute in its process and carry no code-location origin, so a
    # sensor watching only its own location would miss them; the instance belongs to CreditTwin
    monitor_all_code_locations=True,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run in <data_dir>/ops/failures/<tenant>.jsonl and posts it to the log and, "
    "when CREDITTWIN_ALERT_WEBHOOK_URL is set, to that webhook.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, settings: CreditTwinSettings):
    record = record_failure(context, settings)
    context.log.info(
        f"run {record['run_id']} of tenant {record['tenant']!r} failed at {record['step']}: recorded "
        f"({'webhook delivered' if record['webhook_delivered'] else 'log only'})"
    )
