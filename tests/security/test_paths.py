"""Links in the landing zone: a tenant folder or a tenant.yaml that points elsewhere is refused, unread.

A link named after one tenant but pointing at another's folder would build the
first tenant from the second's data; a linked tenant.yaml would be read from
outside the landing zone and its keys echoed in rejection notes. Each attack is
driven through a real entry point: `credittwin materialize`, the landing sensor
and the `raw_loan_tape` asset.
"""

from __future__ import annotations

import dagster as dg
import pytest

from models.errors import UnsafePathError

from pipelines.sensors import landing_sensor
from resources.dagster_resources import CreditTwinSettings
from resources.settings import Settings
from resources.storage import safe_join
from tests.conftest import failure_text, materialize_tenant, run_cli, write_small_tape
from tests.security.attacks import OUTSIDE_SECRET_WORDS, OUTSIDE_SECRET_YAML


def _tick(settings: Settings, instance) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        resources={"settings": CreditTwinSettings(data_dir=str(settings.data_dir), sensor_settle_seconds=0)},
    )
    return landing_sensor(context)


def _linked_tenant_folder(settings: Settings):
    landing = settings.landing_dir
    good = write_small_tape(landing / "good")
    (landing / "evil-in").symlink_to(good, target_is_directory=True)
    return good


def _linked_tenant_yaml(settings: Settings, tmp_path):
    folder = write_small_tape(settings.landing_dir / "acme")
    secret = tmp_path / "outside" / "secrets.yaml"
    secret.parent.mkdir()
    secret.write_text(OUTSIDE_SECRET_YAML)
    (folder / "tenant.yaml").unlink()
    (folder / "tenant.yaml").symlink_to(secret)
    return folder


def _leaks(text: str) -> list[str]:
    return [word for word in OUTSIDE_SECRET_WORDS if word in text]


def test_cli_refuses_a_tenant_folder_that_links_to_another_tenant(tmp_path):
    # setup: data root tmp_path/data, as run_cli uses it
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    good = _linked_tenant_folder(settings)
    # run
    result = run_cli(tmp_path, "materialize", "evil-in")
    # assert: refused before any run, naming the tenant and the link; nothing built or written into good's folder
    assert result.returncode == 2, result.stdout + result.stderr
    assert "tenant 'evil-in'" in result.stderr and "symbolic link" in result.stderr and "Fix:" in result.stderr
    assert not (settings.data_dir / "assets").exists()
    assert not list(good.glob("*.rejected.txt"))


def test_demo_refuses_to_write_through_a_tenant_folder_that_links_to_another_tenant(tmp_path):
    # setup
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    good = _linked_tenant_folder(settings)
    before = {path.name: path.read_bytes() for path in good.iterdir()}
    # run
    result = run_cli(tmp_path, "demo", "--tenant", "evil-in", "--loans", "200", "--months", "6")
    # assert: the other tenant's upload is untouched, and the link is named
    assert result.returncode == 2, result.stdout + result.stderr
    assert "symbolic link 'evil-in'" in result.stderr and "Fix:" in result.stderr
    assert {path.name: path.read_bytes() for path in good.iterdir()} == before


def test_safe_join_refuses_a_link_that_stays_inside_the_data_root(tmp_path):
    # setup
    root = tmp_path / "data"
    (root / "landing" / "good").mkdir(parents=True)
    (root / "landing" / "evil-in").symlink_to(root / "landing" / "good", target_is_directory=True)
    # run / assert
    assert safe_join(root, "landing", "good", "loans.csv") == root.resolve() / "landing" / "good" / "loans.csv"
    with pytest.raises(UnsafePathError, match="goes through the symbolic link 'landing/evil-in'"):
        safe_join(root, "landing", "evil-in", "loans.csv")
    with pytest.raises(UnsafePathError, match="goes through the symbolic link 'evil-in'"):
        safe_join(root / "landing", "evil-in")


def test_asset_and_sensor_refuse_a_tenant_folder_that_links_to_another_tenant(settings):
    # setup
    good = _linked_tenant_folder(settings)
    with dg.instance_for_test() as instance:
        # run
        ticked = _tick(settings, instance)
        result = materialize_tenant(settings, instance, "evil-in", ["raw_loan_tape"])
        # assert: the sensor runs only the real folder; the asset (run from the UI or a backfill) refuses the link
        assert [request.partition_key for request in ticked.run_requests] == ["good"]
        assert not result.success
        message = failure_text(result)
        assert "tenant 'evil-in'" in message and "symbolic link" in message and "Fix:" in message
        assert result.get_asset_materialization_events() == []
    # no note written through the link into the other tenant's folder
    assert not list(good.glob("*.rejected.txt"))


def test_sensor_refuses_a_linked_tenant_yaml_without_echoing_its_content(settings, tmp_path):
    # setup
    folder = _linked_tenant_yaml(settings, tmp_path)
    with dg.instance_for_test() as instance:
        # run
        result = _tick(settings, instance)
    # assert: no run, and a note that names the link but not a word of the outside file
    assert result.run_requests == []
    note = (folder / "tenant.yaml.rejected.txt").read_text()
    assert "tenant 'acme'" in note and "file 'tenant.yaml'" in note and "symbolic link" in note
    assert _leaks(note) == []


def test_asset_refuses_a_linked_tenant_yaml_without_echoing_its_content(settings, tmp_path):
    # setup
    folder = _linked_tenant_yaml(settings, tmp_path)
    with dg.instance_for_test() as instance:
        # run
        result = materialize_tenant(settings, instance, "acme", ["raw_loan_tape"])
        # assert: the step fails on the link; neither its message, its metadata nor the note quote the outside file
        assert not result.success
        failure = result.get_step_failure_events()[0].event_specific_data
        assert "file 'tenant.yaml'" in failure.error.message and "symbolic link" in failure.error.message
        metadata = " ".join(str(value.value) for value in (failure.user_failure_data.metadata or {}).values())
        assert _leaks(failure.error.message + metadata) == []
    assert _leaks((folder / "tenant.yaml.rejected.txt").read_text()) == []


def test_cli_refuses_a_linked_tenant_yaml_without_echoing_its_content(tmp_path):
    # setup
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    _linked_tenant_yaml(settings, tmp_path)
    # run
    result = run_cli(tmp_path, "materialize", "acme")
    # assert
    assert result.returncode == 2, result.stdout + result.stderr
    assert "file 'tenant.yaml'" in result.stderr and "symbolic link" in result.stderr
    assert _leaks(result.stdout + result.stderr) == []
