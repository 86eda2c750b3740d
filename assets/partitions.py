"""The tenant partitions: one dynamic partition per validated tenant id."""

import dagster as dg

tenants = dg.DynamicPartitionsDefinition(name="tenants")
