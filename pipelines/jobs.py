"""Jobs: the whole per-tenant graph, and the run tags and policies the operations code shares.
"""

import dagster as dg

TENANT_TAG = "credittwin/tenant"
UPLOAD_TAG = "credittwin/upload_sha256"
# Why a run happened: "landing", "automation", "drift", "regeneration", "stress-refresh", "backfill", "cli".
TRIGGER_TAG = "credittwin/trigger"
# Set on runs of the whole tenant graph (landing, drift, `credittwin materialize`): such a run regenerates everything
# below what it changes, so declarative automation must not request it again (pipelines/automation.py). Dagster
# records no asset selection for a run of the whole job, so its own "executed with the root" test misses these runs.
SCOPE_TAG = "credittwin/scope"
WHOLE_GRAPH = "graph"
# Dagster's own tag for the partition of a run: the tenant.
PARTITION_TAG = "dagster/partition"

tenant_pipeline = dg.define_asset_job(
    name="tenant_pipeline",
    selection=dg.AssetSelection.all(),
    description="Materialize every asset of one tenant, from the raw tape to the last report.",
)


def celery_config_source(settings) -> dict:
    """The Celery settings the executor and every `credittwin worker` must share, from `settings`.

    Steps without a queue tag go to the `default` queue (dagster-celery's own default is "dagster"), and with
    CREDITTWIN_CELERY_KEY_PREFIX every Redis key carries the prefix (kombu's ``global_keyprefix``).
    """
    from dagster_celery.defaults import broker_transport_options

    from assets.policies import DEFAULT_QUEUE

    config: dict = {"task_default_queue": DEFAULT_QUEUE}
    if settings.celery_key_prefix:
        # the option replaces dagster-celery's whole dict, so its retry settings are carried over
        config["broker_transport_options"] = {**broker_transport_options, "global_keyprefix": settings.celery_key_prefix}
    return config


def build_executor(settings) -> dg.ExecutorDefinition | None:
    """The executor of every job (tenant_pipeline and the asset jobs of the UI, sensors and backfills).

    None keeps Dagster's default (multiprocess for launched runs). `execute_in_process`, which the `credittwin`
    command and the tests use, runs in its own process whatever is configured here.
    """
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor != "celery":
        return None
    try:
        from dagster_celery import celery_executor  # only a Celery deployment needs Celery (the `scale` extra)
    except ImportError as error:
        from models.errors import CreditTwinError

        raise CreditTwinError(f"CREDITTWIN_EXECUTOR=celery needs dagster-celery, which is not installed ({error}).",
                              fix="pip install -e '.[scale]', or unset CREDITTWIN_EXECUTOR.") from error
    return celery_executor.configured(
        {"broker": settings.broker_url, "backend": settings.celery_backend, "config_source": celery_config_source(settings)},
        name="celery",
    )
