"""Under DP, no exact statistic of the real loans appears in any file of `credittwin export`'s bundle (issue 14, item 3)."""

import json
import re

import dagster as dg
import numpy as np
import polars as pl

from pipelines.release import export_release
from resources.settings import Settings
from models.results import TapeSplit
from resources.storage import VersionedStore
from tests.conftest import DP_DOMAINS, failure_text, materialize_tenant, relax_audit, write_dp_landing

ASSETS = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio",
          "validation_report", "privacy_audit", "privacy_certificate"]


def _spellings(value) -> set[str]:
    """The ways a figure would be written: repr, rounded to 4 and 6 digits, integer."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return {str(int(value))}
    value = float(value)
    out = {repr(value), repr(round(value, 4)), repr(round(value, 6)), f"{value:.4f}", f"{value:.6f}"}
    return out


def _distinctive(text: str) -> bool:
    # short spellings (0.1, 30, 12) occur by chance and as public constants; only tell-tale ones are searched
    return len(text.replace("-", "").replace(".", "")) >= 5


def _real_figures(raw, into: dict | None = None) -> dict[str, set[str]]:
    """Each exact statistic of the real loans, as the set of its tell-tale spellings; `into` receives the figures."""
    figures: dict[str, object] = {}
    tape = TapeSplit.from_parts(raw)
    train, holdout = tape.train, tape.holdout
    for name, frame in (("train", train), ("holdout", holdout)):
        figures[f"{name}_rows"] = frame.height
        figures[f"{name}_default_rate"] = float(frame.get_column("default_flag").cast(pl.Float64).mean())
    for grade, group in train.group_by("grade"):
        figures[f"grade_{grade[0]}_count"] = group.height
        figures[f"grade_{grade[0]}_default_rate"] = float(group.get_column("default_flag").cast(pl.Float64).mean())
    for column, dtype in train.schema.items():
        if dtype.is_numeric() and column != "default_flag":
            values = train.get_column(column).drop_nulls().cast(pl.Float64).to_numpy()
            for q in (5, 95):
                figures[f"{column}_p{q}"] = float(np.quantile(values, q / 100))
    perf = raw.table("performance")
    for (state,), group in perf.group_by("status"):
        figures[f"state_{state}_rows"] = group.height
        figures[f"state_{state}_median_dpd"] = float(group.get_column("days_past_due").cast(pl.Float64).median())
    if into is not None:
        into.update(figures)
    return {name: {s for s in _spellings(v) if _distinctive(s)} for name, v in figures.items()}


def _rounding_coincidence(spelling: str, value, certificate_json: str) -> bool:
    """Whether a 4-digit `spelling` found in the certificate's PDF is only its JSON twin's own figure, rounded.

    The PDF prints the certificate's figures at 4 digits; an audit figure (a risk interval computed from 100
    attacks, say) can round to the same 4 digits as a real rate by chance. It is that, not a leak, when the
    JSON holds a figure that rounds to `spelling` and no figure of the JSON equals the real one to 6 digits
    (the JSON itself is searched at full precision like every other file).
    """
    if not re.fullmatch(r"-?\d+\.\d{4}", spelling) or isinstance(value, (int, np.integer)):
        return False
    numbers = [float(x) for x in re.findall(r"(?<![\d.])-?\d+\.\d+(?![\d.])", certificate_json)]
    rounds_to = any(f"{x:.4f}" == spelling for x in numbers)
    equals = any(f"{x:.6f}" == f"{float(value):.6f}" for x in numbers)
    return rounds_to and not equals


def _bundle_text(bundle) -> dict[str, str]:
    texts = {}
    for path in bundle.iterdir():
        if path.suffix == ".parquet":
            # A synthetic cell can equal a real figure by chance (thousands of sampled amounts); what would carry a
            # statistic is a column of few values (a median written into every row) or a summary of the table.
            frame = pl.read_parquet(path)
            few = {c: frame.get_column(c).unique().to_list() for c in frame.columns if frame.get_column(c).n_unique() <= 50}
            texts[path.name] = json.dumps(few, default=str) + json.dumps(frame.describe().to_dicts(), default=str)
        elif path.suffix == ".csv":
            continue  # the same table as the .parquet beside it
        elif path.suffix == ".pdf":
            from models.reports.pdf import pdf_text

            texts[path.name] = pdf_text(path.read_bytes())
        else:
            texts[path.name] = path.read_text(encoding="utf-8", errors="replace")
    return texts


def test_dp_bundle_carries_no_exact_real_statistic(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpbank"
    # The demo book has 19 modelled columns (171 concordance pairs): at a few thousand loans and a small epsilon the
    # noise swamps the marginals and correlations and the blocking fidelity check rightly stops the release, so this test gives the twin a book and a budget at
    # which it passes, and declares the date range (an undeclared date column is left out under DP).
    domains = {**DP_DOMAINS, "origination_date": {"low": "2019-01-01", "high": "2020-12-31", "bins": 24}}
    privacy = {"k": 5, "epsilon": 20.0, "dpsgd_epsilon": 2.0, "epsilon_budget": 24.0, "domains": domains}
    write_dp_landing(folder, privacy, rows=3000)
    relax_audit(folder)
    run_config = {"ops": {"lstm_cascade": {"config": {"epochs": 1, "hidden_size": 8}}}}
    with dg.instance_for_test() as instance:
        result = materialize_tenant(settings, instance, "dpbank", ASSETS, run_config=run_config)
    assert result.success, failure_text(result)
    # the UI's comparison with the real loans is marked internal under DP, on the asset and on its check
    portfolio = next(e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                     if e.asset_key.to_user_string() == "synthetic_portfolio")
    fidelity = next(e for e in result.get_asset_check_evaluations() if e.check_name == "synthetic_fidelity")
    assert portfolio["scope"].value.startswith("internal") and fidelity.metadata["scope"].value.startswith("internal")
    # whether the flag follows the history is not measured on the real loans under DP, and nothing declares it here
    given = portfolio["histories_given_default_flag"].value
    assert not given["applied"] and "under DP" in given["reason"] and "agreement" not in given, given
    bundle = tmp_path / "bundle"
    export_release(settings, "dpbank", bundle)
    names = {p.name for p in bundle.iterdir()}
    assert "validation_report.json" not in names  # internal under DP
    report = VersionedStore(settings.data_dir, ["validation_report"], "dpbank").read()
    assert report.document("validation_report")["scope"]["internal"] is True
    raw = VersionedStore(settings.data_dir, ["raw_loan_tape"], "dpbank").read()
    values: dict = {}
    figures = _real_figures(raw, values)
    certificate_json = (bundle / "certificate.json").read_text()
    found = []
    for name, text in _bundle_text(bundle).items():
        # whole numbers as written, so 0.0368 is not "found" inside 1230.03681
        numbers = set(re.findall(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.])", text))
        for figure, spellings in figures.items():
            found += [f"{figure}={s} in {name}" for s in spellings if s in numbers
                      and not (name == "certificate.pdf" and _rounding_coincidence(s, values[figure], certificate_json))]
    assert not found, found
    # the search can fail: the internal validation report, kept out of the bundle, does hold real figures
    internal = re.findall(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.])", json.dumps(report.document("validation_report")))
    assert any(s in set(internal) for spellings in figures.values() for s in spellings)
    certificate = json.loads((bundle / "certificate.json").read_text())
    assert "not covered by epsilon" in json.dumps(certificate) or "not covered by epsilon" in _bundle_text(bundle)["certificate.pdf"]


def test_under_dp_a_declared_flag_is_followed_by_the_histories(tmp_path):
    # setup: a DP tenant whose tenant.yaml declares that its flag is the history's default event
    import yaml

    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0)
    folder = tmp_path / "data" / "landing" / "dpflag"
    domains = {**DP_DOMAINS, "origination_date": {"low": "2019-01-01", "high": "2020-12-31", "bins": 24}}
    # a generous epsilon: what is tested is the histories, not the twin's fidelity at a tight budget
    write_dp_landing(folder, {"k": 5, "epsilon": 80.0, "dpsgd_epsilon": 2.0, "epsilon_budget": 90.0, "domains": domains},
                     rows=3000)
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config["target"]["from_history"] = True
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    run_config = {"ops": {"lstm_cascade": {"config": {"epochs": 1, "hidden_size": 8}}}}
    # run
    with dg.instance_for_test() as instance:
        result = materialize_tenant(settings, instance, "dpflag", ASSETS[:4], run_config=run_config)
    # assert: the declaration is followed without measuring anything on the real loans, and the histories agree
    assert result.success, failure_text(result)
    portfolio = next(e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                     if e.asset_key.to_user_string() == "synthetic_portfolio")
    given = portfolio["histories_given_default_flag"].value
    assert given["applied"] and "declares" in given["reason"] and "agreement" not in given, given
    stored = VersionedStore(settings.data_dir, ["synthetic_portfolio"], "dpflag").read()
    loans, performance = stored.table("loans"), stored.table("performance")
    from models.tape.vocabulary import target_indicator

    flagged = loans.select("loan_id", target_indicator(loans.get_column("default_flag"), [1]).alias("flag"))
    reached = performance.group_by("loan_id").agg((pl.col("status") == "default").any().alias("reached"))
    joined = flagged.join(reached, on="loan_id", how="left")
    disagree = int((joined.get_column("flag") != joined.get_column("reached").fill_null(False)).sum())
    assert disagree == given["draws"]["unmatched"] <= 0.02 * loans.height, given


def test_a_pdf_figure_that_only_rounds_like_a_real_rate_is_not_a_leak():
    # setup: the certificate's singling-out risk interval ends at 0.1166557594688103 (10 and 7 successes of 100
    # attacks), printed 0.1167 in the PDF, while the real book's grade E default rate was 7/60 = 0.116667
    json_text = json.dumps({"singling_out": {"ci": [0.0, 0.1166557594688103]}})
    # run / assert: the PDF's figure is the JSON's own, not the real one
    assert _rounding_coincidence("0.1167", 7 / 60, json_text)
    # a JSON that holds the real rate itself explains nothing, nor does a PDF figure the JSON lacks, nor a count
    assert not _rounding_coincidence("0.1167", 7 / 60, json.dumps({"rate": 7 / 60}))
    assert not _rounding_coincidence("0.1167", 7 / 60, json.dumps({"rate": 0.25}))
    assert not _rounding_coincidence("1167", 1167, json.dumps({"n": 1167.2}))
