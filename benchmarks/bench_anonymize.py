"""Speed, memory and quality of k-anonymisation (Mondrian with l-diversity).

Builds a synthetic portfolio with NumPy (age and annual income numeric, region
and home ownership categorical, an 8 % default flag), anonymises it with
`models.privacy.anonymize.anonymize` at k=5, l=2 and re-checks the release with the
independent `verify_k_anonymity`. Prints time (best of the repeats), peak
traced memory, k and l achieved, suppression, information loss (NCP) and the
ratio to the target: 100k rows x 4 quasi-identifiers in under 2 s. The 1M-row
run is for information. A second table adds 2 % nulls to income and shows the
cost of null strata and suppression.

    .venv/bin/python benchmarks/bench_anonymize.py            # 100k (3 repeats) and 1M rows
    .venv/bin/python benchmarks/bench_anonymize.py --quick    # 100k rows, one repeat
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

from models.privacy.anonymize import AnonymizationPolicy, anonymize, verify_k_anonymity  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402

TARGET_S = 2.0
TARGET_ROWS = 100_000
QIS = ["age", "annual_income", "region", "home_ownership"]
REGIONS = (
    "north", "north-east", "north-west", "east", "west", "south", "south-east", "south-west", "central", "capital",
)


def make_portfolio(n: int, seed: int = 7, income_nulls: float = 0.0) -> pl.DataFrame:
    """A portfolio with two numeric and two categorical quasi-identifiers and a default flag."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 86, n)
    income = rng.lognormal(10.9, 0.55, n).round(2)
    risk = -0.02 * (age - 45) - 0.4 * (np.log(income) - 10.9) + rng.normal(0, 1, n)
    default = risk > np.quantile(risk, 0.92)
    table = pl.DataFrame(
        {
            "loan_id": np.arange(n, dtype=np.int64),
            "age": age,
            "annual_income": income,
            "region": pl.Series(REGIONS).gather(rng.integers(0, len(REGIONS), n)),
            "home_ownership": pl.Series(["rent", "own", "mortgage"]).gather(rng.integers(0, 3, n)),
            "loan_amount": rng.uniform(1_000, 40_000, n).round(0),
            "default_flag": default.astype(np.int64),
        }
    )
    if income_nulls:
        missing = pl.Series(rng.random(n) < income_nulls)
        income_or_null = pl.when(missing).then(None).otherwise(pl.col("annual_income"))
        table = table.with_columns(income_or_null.alias("annual_income"))
    return table


def run_case(table: pl.DataFrame, repeats: int, k: int = 5, l: int = 2) -> dict[str, float]:  # noqa: E741
    """Anonymise `table` `repeats` times (best time), then once under tracemalloc, then verify."""
    schema = infer_schema(table, target="default_flag", id_columns=["loan_id"])
    policy = AnonymizationPolicy(k=k, l=l, quasi_identifiers=QIS, seed=0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = anonymize(table, schema, policy)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    anonymize(table, schema, policy)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    t0 = time.perf_counter()
    check = verify_k_anonymity(result.table, QIS, "default_flag", k, l)
    verify_s = time.perf_counter() - t0
    return {
        "rows": table.height,
        "best_s": min(times),
        "median_s": float(np.median(times)),
        "peak_mb": peak / 2**20,
        "verify_s": verify_s,
        "passed": check.passed,
        "k": result.k_achieved,
        "l": result.l_achieved,
        "suppressed": result.rows_suppressed,
        "suppression": result.suppression_rate,
        "loss": result.information_loss,
        "classes": result.class_count,
        "loss_age": result.loss_by_column["age"],
        "loss_income": result.loss_by_column["annual_income"],
        "loss_region": result.loss_by_column["region"],
        "loss_home": result.loss_by_column["home_ownership"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows only, one repeat")
    args = parser.parse_args()
    print_header(f"bench_anonymize: k-anonymity (Mondrian, l-diversity), 100k rows{'' if args.quick else ' and 1M'}")
    repeats = 1 if args.quick else 3
    cases = [("100k, k=5 l=2", make_portfolio(TARGET_ROWS), repeats, True),
             ("100k, 2% income nulls", make_portfolio(TARGET_ROWS, income_nulls=0.02), 1, False)]
    if not args.quick:
        cases.append(("1M, k=5 l=2 (information)", make_portfolio(1_000_000), 1, False))

    print(f"k-anonymisation (Mondrian, distinct l-diversity), 4 quasi-identifiers: {', '.join(QIS)}")
    header = (f"{'case':28} {'rows':>9} {'best s':>7} {'med s':>7} {'target':>7} {'ratio':>6} {'peak MB':>8} "
              f"{'verify s':>8} {'k':>3} {'l':>3} {'supp %':>7} {'NCP':>6} {'classes':>8} {'passed':>6}")
    print(header)
    print("-" * len(header))
    results = []
    for name, table, reps, has_target in cases:
        figures = run_case(table, reps)
        results.append((name, figures))
        target = f"{TARGET_S:.1f}" if has_target else "-"
        ratio = f"{figures['best_s'] / TARGET_S:.2f}" if has_target else "-"
        print(f"{name:28} {figures['rows']:>9,} {figures['best_s']:7.2f} {figures['median_s']:7.2f} {target:>7} "
              f"{ratio:>6} {figures['peak_mb']:8.0f} {figures['verify_s']:8.3f} {figures['k']:>3} {figures['l']:>3} "
              f"{100 * figures['suppression']:7.2f} {figures['loss']:6.3f} {figures['classes']:>8,} "
              f"{str(figures['passed']):>6}")
    print("\ninformation loss by column (NCP, 0 = exact, 1 = fully generalised):")
    for name, figures in results:
        print(f"  {name:28} age {figures['loss_age']:.3f}  income {figures['loss_income']:.3f}  "
              f"region {figures['loss_region']:.3f}  home {figures['loss_home']:.3f}")
    print(f"\npeak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB "
          "(tracemalloc's peak counts NumPy buffers, not polars' own allocations)")
    print("rows per second at 100k:", f"{TARGET_ROWS / results[0][1]['best_s']:,.0f}")


if __name__ == "__main__":
    main()
