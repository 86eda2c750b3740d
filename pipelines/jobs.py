"""Jobs: the whole per-tenant graph."""

import dagster as dg

TENANT_TAG = "credittwin/tenant"
UPLOAD_TAG = "credittwin/upload_sha256"

tenant_pipeline = dg.define_asset_job(
    name="tenant_pipeline",
    selection=dg.AssetSelection.all(),
    description="Materialize every asset of one tenant, from the raw tape to the last report.",
)
