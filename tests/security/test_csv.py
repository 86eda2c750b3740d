"""Formula cells in the CSV files CreditTwin writes for people (OWASP CSV injection).

A tape's category such as ``=cmd|' /C calc'!A0`` is kept inert at ingest, but it
flows into the synthetic book as a category; opened in a spreadsheet, the
released CSV would run it. Every such CSV goes through `formula_safe_csv`: text
cells (and column names) that a spreadsheet would evaluate get a leading single
quote, numbers stay numbers, and the Parquet beside it keeps the exact values.
"""

from __future__ import annotations

import csv
import io

import dagster as dg
import polars as pl

from models.tape.demo import generate_portfolio, write_landing
from models.tape.formulas import formula_safe_csv
from pipelines.cli import main
from resources.storage import VersionedStore
from tests.conftest import materialize_tenant
from tests.security.attacks import FORMULA_CELLS

# Small and fast: few epochs, few attacks; everything else is the production path.
RUN_CONFIG = {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}
UPTO = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio",
        "privacy_audit", "privacy_certificate"]
AUDIT = {"n_attacks": 200, "anonymeter_sample_size": 400}


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def test_formula_safe_csv_neutralises_text_cells_and_names_but_not_numbers():
    # setup: formulas as text, categorical and column name; numbers as numbers and as text
    frame = pl.DataFrame(
        {
            "note": [FORMULA_CELLS[0], "-2+3+cmd|' /C calc'!A0", "\t=1+1", "-5", "+1,5", "plain"],
            "grade": pl.Series([FORMULA_CELLS[1], "A", "B", "A", "B", None], dtype=pl.Categorical),
            "amount": [-5.0, 1.5, -0.25, 3.0, 4.0, 5.0],
            "=HYPERLINK(\"x\")": ["a", "b", "c", "d", "e", "f"],
        }
    )
    # run
    rows = _csv_rows(formula_safe_csv(frame))
    # assert
    assert [row["note"] for row in rows] == [
        "'" + FORMULA_CELLS[0], "'-2+3+cmd|' /C calc'!A0", "'\t=1+1", "-5", "+1,5", "plain"
    ]
    assert [row["grade"] for row in rows] == ["'" + FORMULA_CELLS[1], "A", "B", "A", "B", ""]
    assert [row["amount"] for row in rows] == ["-5.0", "1.5", "-0.25", "3.0", "4.0", "5.0"]
    assert "'=HYPERLINK(\"x\")" in rows[0]


def test_formula_categories_reach_the_release_csv_neutralised_and_the_parquet_exact(settings, tmp_path, monkeypatch):
    # setup: two of the demo book's products renamed to formulas, frequent enough to survive into the release
    folder = settings.landing_dir / "bank"
    book = generate_portfolio(700, months=6, seed=5)
    book.tenant_config["audit"] = AUDIT
    write_landing(book, folder, fmt="parquet")
    renamed = {"card": FORMULA_CELLS[0], "personal": FORMULA_CELLS[1]}
    pl.read_parquet(folder / "loans.parquet").with_columns(pl.col("product").replace(renamed)).write_parquet(
        folder / "loans.parquet"
    )
    with dg.instance_for_test() as instance:
        # run: the graph up to the certificate, then the bundle export and its verification
        result = materialize_tenant(settings, instance, "bank", UPTO, run_config={"ops": RUN_CONFIG})
        assert result.success, [e.event_specific_data.error.message for e in result.get_step_failure_events()]
    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(settings.data_dir))
    bundle = tmp_path / "bundle"
    exported = main(["export", "bank", str(bundle)])
    verified = main(["verify", str(bundle / "certificate.json"), "--data", str(bundle)])
    # assert: the certified CSV shows the formulas as text; the Parquet keeps them verbatim
    stored = VersionedStore(settings.data_dir, ["privacy_certificate"], "bank").current() / "release"
    released = {row["product"] for row in _csv_rows((stored / "loans.csv").read_bytes())}
    assert {"'" + cell for cell in FORMULA_CELLS} <= released
    assert not any(value.startswith(("=", "@", "+", "-")) for value in released)
    assert set(FORMULA_CELLS) <= set(pl.read_parquet(stored / "loans.parquet").get_column("product").to_list())
    # and the bundle is those certified bytes: export copies them and verify re-hashes them
    assert exported == 0 and verified == 0
    assert (bundle / "loans.csv").read_bytes() == (stored / "loans.csv").read_bytes()
