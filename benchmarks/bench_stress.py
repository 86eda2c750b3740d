"""Speed of the stress test: a book through the built-in scenarios with a real LightGBM PD model.

Trains a small LightGBM PD model (60 trees of 15 leaves, categorical product,
grade, region and home ownership) on a 50k-loan demo book from
`models.tape.demo.generate_portfolio`, then times `models.risk.stress.run_stress` over
the three built-in scenarios (baseline, adverse, severely adverse): the median
of 5 runs, training excluded, chart rendering excluded (charts are lazy:
`StressResult.render_charts`, timed once on its own). The model's predict
time counts: it runs three times per stress run (the unshocked book, adverse,
severely adverse; the baseline scenario reuses the unshocked PDs), and the
time inside the model is printed beside the engine's own share.

A second row per size swaps in a NumPy logistic model (four features), whose
predict costs next to nothing, to show the engine's own cost.

Target: 50k loans x 3 scenarios in under 0.5 s. The 1M-loan run is for
information.

Quoted, not measured: "a comparable platform reports about 5 s for the same
job on 4 vCPUs", the figure the issue that set the 0.5 s target cites. The
platform is not named and cannot be installed here, and no installable library
runs these scenarios, so the figure is printed as quoted, with no ratio.

    .venv/bin/python benchmarks/bench_stress.py            # 50k (5 runs) and 1M (3 runs)
    .venv/bin/python benchmarks/bench_stress.py --quick    # 50k only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import Quoted, print_header  # noqa: E402

from models.tape.demo import generate_portfolio  # noqa: E402
from models.risk.stress import StressConfig, render_stress_pdf, run_stress  # noqa: E402

TARGET_S = 0.5
QUOTED_PEER = Quoted("a comparable platform, 50k loans x 3 scenarios on 4 vCPU", "about 5 s",
                     "the issue that set the 0.5 s target; platform not named, cannot be installed here")
TARGET_LOANS = 50_000
CATEGORICAL = {
    "product": ["mortgage", "auto", "personal", "card"],
    "grade": ["A", "B", "C", "D", "E", "F", "G"],
    "region": ["north", "north-east", "north-west", "east", "west", "south", "south-east", "south-west", "central",
               "capital"],
    "home_ownership": ["rent", "own", "mortgage"],
}
NUMERIC = ["credit_score", "annual_income", "employment_years", "age", "loan_amount", "term_months", "interest_rate",
           "installment", "dti", "ltv", "revolving_balance", "credit_limit"]
FEATURES = [*CATEGORICAL, *NUMERIC]


def features(frame: pl.DataFrame) -> np.ndarray:
    """The model's input matrix: categories as their fixed codes, numbers as float64 (null as NaN)."""
    columns = [frame[c].cast(pl.Enum(CATEGORICAL[c])).to_physical().cast(pl.Float64) for c in CATEGORICAL]
    columns += [frame[c].cast(pl.Float64) for c in NUMERIC]
    return pl.DataFrame(columns).to_numpy()


def train_model(loans: pl.DataFrame, seed: int = 0, trees: int = 60):
    """A small LightGBM PD model on `loans` (80 %), with its AUC on the other 20 %."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    x = features(loans)
    y = loans["default_flag"].to_numpy()
    rng = np.random.default_rng(seed)
    test = rng.random(loans.height) < 0.2
    params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 100,
              "verbose": -1, "seed": seed, "deterministic": True}
    data = lgb.Dataset(x[~test], y[~test], categorical_feature=list(range(len(CATEGORICAL))), free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=trees)
    auc = roc_auc_score(y[test], booster.predict(x[test]))
    return booster, float(auc)


class LogisticPD:
    """A NumPy logistic PD model on four features: near-free, so its row shows the engine's own cost."""

    def __init__(self, loans: pl.DataFrame) -> None:
        from sklearn.linear_model import LogisticRegression

        x = self._x(loans)
        self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        model = LogisticRegression(max_iter=500).fit((x - self.mean) / self.std, loans["default_flag"].to_numpy())
        self.coef, self.intercept = model.coef_[0], float(model.intercept_[0])

    @staticmethod
    def _x(frame: pl.DataFrame) -> np.ndarray:
        return frame.select(
            pl.col("interest_rate"), pl.col("annual_income").log(), pl.col("dti"), pl.col("ltv").fill_null(0.0)
        ).to_numpy()

    def predict(self, x: pl.DataFrame) -> np.ndarray:
        z = ((self._x(x) - self.mean) / self.std) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def run_case(loans: pl.DataFrame, model, repeats: int) -> dict[str, float]:
    calls = {"n": 0}
    prepare = (lambda frame: frame) if isinstance(model, LogisticPD) else features

    def predict_pd(frame: pl.DataFrame) -> np.ndarray:
        calls["n"] += 1
        return model.predict(prepare(frame))

    run_stress(loans, predict_pd, StressConfig(), tenant="bench")  # warm-up (LightGBM thread pool, polars)
    calls["n"] = 0
    times, model_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run_stress(loans, predict_pd, StressConfig(), tenant="bench")
        times.append(time.perf_counter() - t0)
        model_times.append(result.timings["model_s"])
    t0 = time.perf_counter()
    result.render_charts()
    charts_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pdf = render_stress_pdf(result)
    pdf_s = time.perf_counter() - t0
    losses = {s.name: s.segment()["loss_rate"] for s in result.scenarios}
    return {
        "loans": loans.height,
        "median_s": float(np.median(times)),
        "best_s": min(times),
        "model_s": float(np.median(model_times)),
        "calls": calls["n"] / repeats,
        "charts_s": charts_s,
        "pdf_s": pdf_s,
        "pdf_kb": len(pdf) / 1024,
        "capped": result.scenario("severely_adverse").capped_loans,
        **{f"loss_{k}": v for k, v in losses.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k loans only")
    parser.add_argument("--trees", type=int, default=60, help="LightGBM trees (default 60, 15 leaves each)")
    args = parser.parse_args()
    print_header("bench_stress: " + ("50k loans" if args.quick else "50k and 1M loans"), quoted=[QUOTED_PEER])

    t0 = time.perf_counter()
    book = generate_portfolio(TARGET_LOANS, seed=11).loans
    t1 = time.perf_counter()
    booster, auc = train_model(book, trees=args.trees)
    t2 = time.perf_counter()
    print(f"demo book of {TARGET_LOANS:,} loans in {t1 - t0:.1f} s; LightGBM PD model: {booster.num_trees()} trees "
          f"trained on {int(0.8 * TARGET_LOANS):,} loans in {t2 - t1:.1f} s; holdout AUC {auc:.3f}")

    logistic = LogisticPD(book)
    cases = [("50k, 3 built-in scenarios", book, booster, 5, True),
             ("50k, NumPy logistic model", book, logistic, 5, False)]
    if not args.quick:
        big = generate_portfolio(1_000_000, seed=12).loans
        cases += [("1M, 3 built-in scenarios", big, booster, 3, False), ("1M, NumPy logistic model", big, logistic, 3, False)]

    header = (f"{'case':28} {'loans':>9} {'median s':>9} {'best s':>7} {'model s':>8} {'engine s':>9} {'calls':>5} "
              f"{'target':>7} {'ratio':>6} {'charts s':>9} {'pdf s':>6}")
    print(header)
    print("-" * len(header))
    results = []
    for name, loans, model, repeats, has_target in cases:
        f = run_case(loans, model, repeats)
        results.append((name, f))
        target = f"{TARGET_S:.1f}" if has_target else "-"
        ratio = f"{f['median_s'] / TARGET_S:.2f}" if has_target else "-"
        print(f"{name:28} {f['loans']:>9,} {f['median_s']:9.3f} {f['best_s']:7.3f} {f['model_s']:8.3f} "
              f"{f['median_s'] - f['model_s']:9.3f} {f['calls']:5.0f} {target:>7} {ratio:>6} "
              f"{f['charts_s']:9.2f} {f['pdf_s']:6.2f}")
    print("\nloss rate (EL / exposure, all loans) and capped loans in severely adverse:")
    for name, f in results:
        print(f"  {name:28} baseline {100 * f['loss_baseline']:.2f} %  adverse {100 * f['loss_adverse']:.2f} %  "
              f"severely adverse {100 * f['loss_severely_adverse']:.2f} %  capped {f['capped']:,}")
    f = results[0][1]
    print(f"\n50k: {f['median_s']:.3f} s median against the {TARGET_S} s target (ratio {f['median_s'] / TARGET_S:.2f}); "
          f"model predict {100 * f['model_s'] / f['median_s']:.0f} % of it. Peer: {QUOTED_PEER.figure}, quoted only.")
    print("loans per second at 50k:", f"{TARGET_LOANS * 3 / f['median_s']:,.0f} loan-scenarios")


if __name__ == "__main__":
    main()
