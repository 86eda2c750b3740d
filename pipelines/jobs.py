"""Jobs: the whole per-tenant graph."""

import dagster as dg

from pipelines.partitions import tenants

TENANT_TAG = "credittwin/tenant"
UPLOAD_TAG = "credittwin/upload_sha256"

tenant_pipeline = dg.define_asset_job(
    name="tenant_pipeline",
    selection=dg.AssetSelection.all(),
    partitions_def=tenants,
    description="Materialize every asset of one tenant, from the raw tape to the last report.",
)
