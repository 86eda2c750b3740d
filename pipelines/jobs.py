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
