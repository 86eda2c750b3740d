"""Speed and memory of loan features and of the GX validation of a raw tape.

Builds a synthetic tape (1M loans) and its monthly history (24 months a loan,
24M rows) with NumPy, then times `models.tape.features.build_features` and
`resources.expectations.validate_loan_tape` on it, with peak memory, and
prints the figures against the targets: features on 1M x 24 in under 30 s,
GX validation of a 1M-row tape in a few seconds (target 10 s, GX import
excluded and shown apart).

    .venv/bin/python benchmarks/bench_features.py            # 1M loans, 24M history rows
    .venv/bin/python benchmarks/bench_features.py --quick    # 100k loans, 2.4M rows
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

from models.tape.features import build_features  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402

FEATURES_TARGET_S = 30.0
GX_TARGET_S = 10.0
MONTHS = 24


def make_tape(n_loans: int, seed: int = 7) -> pl.DataFrame:
    """A loan tape with LendingClub-style column names (aliases, not canonical names)."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(11.0, 0.5, n_loans)
    amount = rng.uniform(1_000, 40_000, n_loans).round(0)
    rate = rng.uniform(5.0, 28.0, n_loans).round(2)
    installment = amount * (rate / 1200) / (1 - (1 + rate / 1200) ** -36)
    emp_labels = pl.Series(["< 1 year", "1 year", "3 years", "6 years", "10+ years", "n/a"])
    verification = pl.Series(["Verified", "Source Verified", "Not Verified"])
    return pl.DataFrame(
        {
            "loan_id": np.arange(n_loans, dtype=np.int64),
            "annual_inc": income,
            "loan_amnt": amount,
            "int_rate": rate,
            "installment": installment,
            "property_value": amount * rng.uniform(1.1, 4.0, n_loans),
            "revol_bal": rng.gamma(2.0, 6_000, n_loans),
            "total_rev_hi_lim": rng.gamma(3.0, 9_000, n_loans),
            "emp_length": emp_labels.gather(rng.integers(0, len(emp_labels), n_loans)),
            "verification_status": verification.gather(rng.integers(0, len(verification), n_loans)),
            "grade": pl.Series(list("ABCDEFG")).gather(rng.integers(0, 7, n_loans)),
            "term": rng.choice([36, 60], n_loans),
            "defaulted": rng.random(n_loans) < 0.08,
        }
    )


def make_history(n_loans: int, seed: int = 11) -> pl.DataFrame:
    """24 monthly rows a loan: days past due, a status label, an amortising balance."""
    rng = np.random.default_rng(seed)
    n = n_loans * MONTHS
    loan_id = np.repeat(np.arange(n_loans, dtype=np.int64), MONTHS)
    period = np.tile(np.arange(1, MONTHS + 1, dtype=np.int64), n_loans)
    # Most months current; a few 30/60/90 days late.
    dpd = rng.choice(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 35, 65, 95]), n)
    codes = pl.Series("code", np.select([dpd >= 90, dpd >= 60, dpd >= 30], [3, 2, 1], 0).astype(np.int8))
    status = codes.replace_strict({0: "Current", 1: "30", 2: "60", 3: "90+"}, return_dtype=pl.String)
    start = np.repeat(rng.uniform(1_000, 40_000, n_loans), MONTHS)
    balance = start * (1.0 - period / (MONTHS + 12))
    return pl.DataFrame(
        {"loan_id": loan_id, "period": period, "status": status, "days_past_due": dpd, "balance": balance}
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k loans instead of 1M")
    args = parser.parse_args()
    print_header(f"bench_features: loan features and GX validation, {'100k' if args.quick else '1M'} loans x 24 months")
    n_loans = 100_000 if args.quick else 1_000_000

    t0 = time.perf_counter()
    tape = make_tape(n_loans)
    history = make_history(n_loans)
    gen_s = time.perf_counter() - t0
    rss_data = _peak_rss_mb()

    t0 = time.perf_counter()
    features, report = build_features(tape, history, id_column="loan_id")
    feat_s = time.perf_counter() - t0
    rss_features = _peak_rss_mb()

    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  # timed apart: a one-off cost per process

    import_s = time.perf_counter() - t0
    from resources.expectations import validate_loan_tape

    schema = infer_schema(tape.head(10_000), id_columns=["loan_id"], target="defaulted")
    t0 = time.perf_counter()
    outcomes = validate_loan_tape(tape, schema=schema, declared_columns=["grade", "defaulted"])
    gx_tape_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcomes_perf = validate_loan_tape(
        tape, schema=schema, declared_columns=["grade", "defaulted"], performance=history
    )
    gx_perf_s = time.perf_counter() - t0
    rss_gx = _peak_rss_mb()

    rows = [
        ("synthetic data (tape + history)", f"{n_loans:,} + {history.height:,} rows", gen_s, None),
        ("build_features", f"{len(report.built)} built, {len(report.skipped)} skipped", feat_s, FEATURES_TARGET_S),
        ("import great_expectations", "once per process", import_s, None),
        ("validate_loan_tape (tape only)", f"{sum(o.passed for o in outcomes)}/{len(outcomes)} passed", gx_tape_s,
         GX_TARGET_S),
        ("validate_loan_tape (+ history gaps)", f"{sum(o.passed for o in outcomes_perf)}/{len(outcomes_perf)} passed",
         gx_perf_s, None),
    ]
    print(f"loans={n_loans:,} history rows={history.height:,} features shape={features.shape}")
    print(f"{'step':38} {'what':30} {'time s':>8} {'target s':>9} {'ratio':>7}")
    for name, what, seconds, target in rows:
        ratio = f"{seconds / target:.2f}" if target else "-"
        target_text = f"{target:.0f}" if target else "-"
        print(f"{name:38} {what:30} {seconds:8.2f} {target_text:>9} {ratio:>7}")
    print(
        f"\npeak RSS: after data {rss_data:,.0f} MB, after features {rss_features:,.0f} MB, "
        f"after GX {rss_gx:,.0f} MB"
    )
    print(f"loans per second, features: {n_loans / feat_s:,.0f}; GX tape rows per second: {n_loans / gx_tape_s:,.0f}")
    if report.skipped:
        print("skipped features:", report.skipped)
    failed = [o.check for o in outcomes_perf if not o.passed]
    print("failed checks (expected none on clean synthetic data):", failed or "none")


if __name__ == "__main__":
    main()
