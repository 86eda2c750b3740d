"""Every twin engine implements one protocol: fit, sample(n, seed, conditions), save, load (issue 15)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from models.tape.demo import demo_tenant_config, generate_portfolio
from models.tape.schema import infer_schema
from models.tape.tenant import TenantConfig
from models.twin.copula import GaussianCopulaTwin
from models.twin.engine import load_engine, make_engine
from models.twin.protocol import Conditions, TwinEngine


@pytest.fixture(scope="module")
def book():
    loans = generate_portfolio(1500, months=6, seed=11).loans
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    return loans, schema


def _fitted(name: str, loans: pl.DataFrame, schema):
    if name == "plain":
        return GaussianCopulaTwin().fit(loans, schema)
    if name == "dp":
        from models.twin.dp import fit_dp_twin, plan_for_table

        config = TenantConfig.model_validate({**demo_tenant_config(), "privacy": {"epsilon": 4.0}})
        return fit_dp_twin(loans, plan_for_table(loans, config, tenant="bank"), tenant="bank")
    return make_engine(name).fit(loans, schema)


@pytest.mark.parametrize("name", ["credittwin", "copulas", "plain", "dp"])
def test_every_engine_fits_samples_saves_and_loads_through_the_protocol(book, tmp_path: Path, name: str):
    # setup
    loans, schema = book
    conditions: Conditions = {"target_rate": 0.25}
    # run
    engine = _fitted(name, loans, schema)
    engine.save(tmp_path / "engine")
    loaded = load_engine(tmp_path / "engine")
    # assert: the protocol holds, the loader gives back the same kind, and a loaded engine samples the same rows
    assert isinstance(engine, TwinEngine) and type(loaded) is type(engine)
    first, again = engine.sample(200, seed=3, conditions=conditions), loaded.sample(200, seed=3, conditions=conditions)
    assert first.height == 200 and int((first.get_column("default_flag").cast(pl.Int64) == 1).sum()) == 50
    assert first.equals(again)
