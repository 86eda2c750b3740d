"""Issue 14 defect 2: every fresh draw of noise on real data is paid for; a re-run re-releases the paid bytes."""

import dagster as dg
import yaml

from resources.ledger import PrivacyLedger
from resources.settings import Settings
from resources.storage import VersionedStore
from tests.conftest import DP_DOMAINS, failure_text, materialize_tenant, write_dp_landing

TENANT = "dpbank"


def _model_digest(store: VersionedStore, folder: str) -> str:
    """One digest of the stored model's files (their paths and SHA-256s), from the current version's manifest."""
    files = store.read().manifest["files"]
    return "|".join(f"{rel}={files[rel]['sha256']}" for rel in sorted(files) if rel.startswith(folder + "/"))


def _set_split(folder, split: float) -> None:
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config["privacy"]["dp_split"] = split
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))


def test_alternating_configs_never_release_more_models_than_charges(tmp_path):
    # setup: a DP tenant whose budget pays for two different fits
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / TENANT
    write_dp_landing(folder, {"k": 5, "epsilon": 1.0, "epsilon_budget": 2.5, "domains": DP_DOMAINS}, rows=600)
    store = VersionedStore(settings.data_dir, ["fitted_copula"], TENANT)
    digests = []
    # run: dp_split 0.5, 0.6, 0.5, 0.6, 0.5, each through the real ingest and fit
    with dg.instance_for_test() as instance:
        for split in (0.5, 0.6, 0.5, 0.6, 0.5):
            _set_split(folder, split)
            result = materialize_tenant(settings, instance, TENANT, ["raw_loan_tape", "fitted_copula"])
            assert result.success, failure_text(result)
            digests.append(_model_digest(store, "model"))
    with PrivacyLedger(settings.ledger) as ledger:
        charges = ledger.status(TENANT).charges
    # assert: no more distinct models than paid charges, and a config seen before gets its paid bytes back
    assert len(charges) == 2
    assert len(set(digests)) <= len(charges)
    assert digests[2] == digests[0] and digests[4] == digests[0] and digests[3] == digests[1]
    assert digests[0] != digests[1]
    paid = list((settings.data_dir / "privacy" / "paid" / TENANT / "fitted_copula").iterdir())
    assert sorted(p.name for p in paid) == sorted(c.idempotency_hash for c in charges)
