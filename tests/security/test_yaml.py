"""Hostile tenant.yaml files: a billion laughs, an oversized file, an endless alias, a flood of unknown keys.

Each is refused while or before it is parsed, fast and in a bounded message, by
`load_tenant_config` and through the landing sensor and the `raw_loan_tape` asset
that call it. A bomb used to pass validation (`privacy.domains` takes any mapping)
and blow up when the run dumped the expanded document: 251 s and 5.6 GB.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from models.errors import TenantConfigError
from models.tape.tenant import MAX_CONFIG_BYTES, load_tenant_config
from pipelines.sensors import landing_sensor
from resources.dagster_resources import CreditTwinSettings
from tests.conftest import materialize_tenant, write_small_tape
from tests.security.attacks import billion_laughs

# A note or message quoting at most a few keys stays well under this; an unbounded one grows with the file.
MESSAGE_BOUND = 2_000


def _tick(settings, instance) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        resources={"settings": CreditTwinSettings(data_dir=str(settings.data_dir), sensor_settle_seconds=0)},
    )
    return landing_sensor(context)


def _upload_with_config(settings, text: str):
    folder = write_small_tape(settings.landing_dir / "acme")
    (folder / "tenant.yaml").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (billion_laughs(9, under="privacy.domains.region"), "expands to more than 100,000 values through YAML aliases"),
        (billion_laughs(9), "expands to more than 100,000 values through YAML aliases"),
        ("privacy:\n  domains:\n    region: &loop {categories: [a, *loop]}\n", "alias .* inside the node it refers to"),
        ("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1), "larger than 64 KiB"),
    ],
    ids=["bomb-in-a-valid-key", "bomb-at-top-level", "endless-alias", "oversized"],
)
def test_load_tenant_config_refuses_unbounded_documents_fast(tmp_path, text, match):
    # setup
    path = tmp_path / "tenant.yaml"
    path.write_text(text)
    started = time.perf_counter()
    # run
    with pytest.raises(TenantConfigError, match=match) as info:
        load_tenant_config(path, tenant="acme")
    # assert: fast, naming tenant and file, and quoting nothing of the document
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "tenant 'acme'" in message and "file 'tenant.yaml'" in message and "Fix:" in message
    assert "lol" not in message and len(message) < MESSAGE_BOUND


def test_sensor_rejects_a_billion_laughs_with_a_short_note(settings):
    # setup: the bomb sits where any mapping is valid, so only a bound on its expansion can stop it
    folder = _upload_with_config(settings, billion_laughs(9, under="privacy.domains.region"))
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        # run
        result = _tick(settings, instance)
        # assert
        assert time.perf_counter() - started < 10
    assert result.run_requests == []
    note = (folder / "tenant.yaml.rejected.txt").read_text()
    assert "YAML aliases" in note and "tenant 'acme'" in note and len(note) < MESSAGE_BOUND


def test_sensor_rejects_an_oversized_tenant_yaml(settings):
    # setup: a valid contract padded past the bound
    folder = _upload_with_config(settings, "id_columns: [loan_id]\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with dg.instance_for_test() as instance:
        # run
        result = _tick(settings, instance)
    # assert
    assert result.run_requests == []
    assert "larger than 64 KiB" in (folder / "tenant.yaml.rejected.txt").read_text()


def test_sensor_note_on_a_flood_of_unknown_keys_is_bounded(settings):
    # setup: 4,000 unknown keys, under the size bound
    text = "".join(f"unknown_{i:04d}: 1\n" for i in range(4_000))
    folder = _upload_with_config(settings, text)
    with dg.instance_for_test() as instance:
        # run
        result = _tick(settings, instance)
    # assert: the first keys are named, the rest counted
    assert result.run_requests == []
    note = (folder / "tenant.yaml.rejected.txt").read_text()
    assert "unknown key 'unknown_0000'" in note and "and 3990 more problem(s)" in note
    assert len(note) < MESSAGE_BOUND


def test_asset_fails_fast_on_a_billion_laughs(settings):
    # setup: seven levels (4.8 million strings), so the code before the bound expands it without exhausting memory
    _upload_with_config(settings, billion_laughs(7, under="privacy.domains.region"))
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        # run
        result = materialize_tenant(settings, instance, "acme", ["raw_loan_tape"])
        # assert
        assert time.perf_counter() - started < 60
        assert not result.success
        message = result.get_step_failure_events()[0].event_specific_data.error.message
        assert "YAML aliases" in message and "tenant 'acme'" in message and len(message) < MESSAGE_BOUND
        assert result.get_asset_materialization_events() == []
