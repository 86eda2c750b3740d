"""Metadata built from upload-derived text stays text; tables are typed Dagster tables; checks are per tenant."""

import warnings

import dagster as dg

from assets.common import markdown_list, md_text, metadata_table, tenant_check
from assets.partitions import tenants


def test_upload_text_cannot_become_a_link_an_image_or_html_in_the_ui():
    hostile = "![x](http://evil.example/t.png) <img src=x onerror=alert(1)> [click](javascript:alert(1))"
    text = md_text(hostile)
    assert "![" not in text and "](" not in text and "<img" not in text
    assert text.replace("\\", "").replace("&lt;", "<").replace("&gt;", ">") == hostile


def test_lists_escape_every_item():
    assert markdown_list([]).value == "none"
    assert markdown_list(["*bold*"]).value == "- \\*bold\\*"


def test_tables_are_typed_dagster_tables_with_plain_text_cells():
    # setup: a text cell with Markdown in it, a mixed column, a non-finite number and a missing value
    rows = [
        {"segment": "a|b\n[x](http://e)", "loss": 0.123456789, "loans": 3, "passed": True, "value": 0.5},
        {"segment": None, "loss": float("nan"), "loans": 4, "passed": False, "value": "not measured"},
        {"segment": "all", "loss": 393351988.126, "loans": 5, "passed": True, "value": None},
    ]
    # run
    table = metadata_table(rows, ["segment", "loans", "loss", "passed", "value"], descriptions={"loss": "share"})
    # assert: the UI prints cells as text, so they are kept as written; numbers stay numbers, rounded for reading
    assert isinstance(table, dg.TableMetadataValue)
    types = {column.name: column.type for column in table.schema.columns}
    assert types == {"segment": "string", "loans": "int", "loss": "float", "passed": "bool", "value": "string"}
    assert [column.name for column in table.schema.columns] == ["segment", "loans", "loss", "passed", "value"]
    assert table.schema.columns[2].description == "share"
    first, second, third = (record.data for record in table.records)
    assert first == {"segment": "a|b\n[x](http://e)", "loans": 3, "loss": 0.123457, "passed": True, "value": "0.5"}
    assert second["loss"] is None and second["segment"] is None and second["value"] == "not measured"
    assert third["loss"] == 393351988.13  # amounts keep their cents
    assert metadata_table([]).records == []


def test_tenant_checks_are_partitioned_like_their_asset_without_a_warning():
    # run
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = tenant_check("rows_present", asset="a", description="d", blocking=True)
    # assert
    assert spec.partitions_def is tenants and spec.blocking and spec.asset_key == dg.AssetKey("a")
