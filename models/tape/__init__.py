"""The tenant's upload: safe reading, the schema, the tenant contract, the tape's own words, features and the demo book.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "read_table": "ingest",
    "read_performance": "performance",
    "split_by_unit": "split",
    "IngestReport": "ingest",
    "ReadOptions": "ingest",
    "LoanTape": "loan_tape",
    "read_tape": "loan_tape",
    "find_upload": "loan_tape",
    "landing_folder": "loan_tape",
    "ColumnType": "schema",
    "TableSchema": "schema",
    "infer_schema": "schema",
    "SPLIT_COLUMN": "schema",
    "TENANT_FILE": "schema",
    "TenantConfig": "tenant",
    "load_tenant_config": "tenant",
    "parse_tenant_config": "tenant",
    "validate_tenant_id": "tenant",
    "target_indicator": "vocabulary",
    "render_release": "vocabulary",
    "build_features": "features",
    "generate_portfolio": "demo",
    "write_landing": "demo",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
