"""Differentially private synthesis: quality against epsilon, and DP-SGD's cost on the cascade.

Run: ``.venv/bin/python benchmarks/bench_dp.py [--quick] [--loans N] [--repeats R]``

What it measures:

- the DP copula (`models.twin.dp.DPGaussianCopula`) on a demo book of N loans
  (default 50,000; ``--quick`` 10,000), each borrower bounded to one loan, at
  epsilon in {0.1, 0.3, 1, 3, 10}: fit time, SDMetrics quality of N synthetic
  rows against the real loans (mean and range over `--repeats` fits, since the
  noise differs every fit), and the ratio to the target (quality >= 0.80 at
  epsilon = 1); the non-DP twin's score on the same book for reference. The
  book's tenant declares the public domains a lender knows without reading the
  data (product, grade and home-ownership lists, the origination window);
  `region` is undeclared, so its category list is paid for with a stability
  histogram (delta > 0); the numeric columns use the documented defaults;
- DP-SGD on the cascade (opacus, one loan per borrower, Poisson sampling): the
  epsilon the accountant certifies, training time against the non-DP cascade
  on the same small book, and the transition-matrix distance of each model's
  synthetic histories;
- peak memory of the process.

The machine is shared, so times are indicative.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

from models.twin.copula import GaussianCopulaTwin  # noqa: E402
from models.tape.demo import generate_portfolio  # noqa: E402
from models.twin.dp import DPGaussianCopula, OpacusDPHook, bound_units, plan_dp_copula, plan_dpsgd  # noqa: E402
from models.quality.metrics import sdmetrics_quality  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402

EPSILONS = (0.1, 0.3, 1.0, 3.0, 10.0)
TARGET_QUALITY = 0.80
TARGET_EPSILON = 1.0
DOMAINS = {
    "product": {"categories": ["mortgage", "auto", "personal", "card"]},
    "grade": {"categories": list("ABCDEFG")},
    "home_ownership": {"categories": ["mortgage", "own", "rent"]},
    "origination_date": {"low": "2019-01-01", "high": "2021-01-01", "bins": 24},
}
DPSGD_EPSILON = 3.0
DPSGD_DELTA = 1e-5


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def copula_curve(n_loans: int, repeats: int, rows: list[tuple[str, str, str]]) -> None:
    """Quality of the DP copula at each epsilon, and of the non-DP twin, on one demo book."""
    book = generate_portfolio(n_loans, seed=21)
    loans = book.loans
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    units = bound_units(loans, "borrower_id").height

    started = time.perf_counter()
    twin = GaussianCopulaTwin().fit(loans, schema)
    fit_s = time.perf_counter() - started
    reference = sdmetrics_quality(loans, twin.sample(loans.height, seed=1), schema)
    rows.append(("non-DP twin (reference)", f"{reference:.3f}", f"fit {fit_s:.1f} s, {loans.height} loans"))

    for epsilon in EPSILONS:
        plan = plan_dp_copula(loans.columns, epsilon, n_units=units, domains=DOMAINS, target="default_flag",
                              target_positive=[1], privacy_unit_column="borrower_id")
        composition = plan.composition()
        scores, times = [], []
        for repeat in range(repeats):
            started = time.perf_counter()
            model = DPGaussianCopula(plan).fit(loans, schema)
            times.append(time.perf_counter() - started)
            scores.append(sdmetrics_quality(loans, model.sample(loans.height, seed=repeat), schema))
        mean = sum(scores) / len(scores)
        note = f"fit {sum(times) / len(times):.1f} s; delta {composition.delta:.1g} ({composition.accountant})"
        if repeats > 1:
            note += f"; range {min(scores):.3f}-{max(scores):.3f} over {repeats} fits"
        if epsilon == TARGET_EPSILON:
            verdict = "MEETS" if mean >= TARGET_QUALITY else "MISSES"
            note += f"; {verdict} target {TARGET_QUALITY:.2f} ({mean / TARGET_QUALITY:.2f}x)"
        note += f"; {mean / reference:.2f}x of non-DP"
        rows.append((f"DP copula epsilon={epsilon:g}", f"{mean:.3f}", note))
    rows.append(("units after bounding (one loan per borrower)", f"{units}", f"of {loans.height} loans"))


def dpsgd(n_loans: int, epochs: int, rows: list[tuple[str, str, str]]) -> None:
    """Train the cascade with and without DP-SGD on one small book."""
    from models.sequences.cascade import CascadeConfig, LoanCascade
    from models.sequences.histories import compare_sequences

    book = generate_portfolio(n_loans, months=24, seed=22)
    loans, perf = book.loans, book.performance
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag")
    config = CascadeConfig(hidden_size=32, epochs=epochs, batch_size=128, validation_share=0.0, device="cpu")

    started = time.perf_counter()
    plain = LoanCascade(config).fit(loans, perf, schema)
    plain_s = time.perf_counter() - started

    borrowers = loans["borrower_id"].n_unique()
    spec = plan_dpsgd(borrowers, config.batch_size, epochs, DPSGD_EPSILON, DPSGD_DELTA)
    hook = OpacusDPHook(spec, n_units=borrowers, batch_size=config.batch_size, max_grad_norm=1.0)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        private = LoanCascade(config).fit(loans, perf, schema, dp=hook)
    private_s = time.perf_counter() - started

    plain_fid = compare_sequences(perf, plain.sample(loans, seed=1))
    private_fid = compare_sequences(perf, private.sample(loans, seed=1))
    spent = private.history[-1]["dp_epsilon"]
    rows += [
        ("DP-SGD epsilon certified (RDP)", f"{spent:.3f}",
         f"target {DPSGD_EPSILON:g} at delta {DPSGD_DELTA:g}: {spent / DPSGD_EPSILON:.2f}x; noise multiplier "
         f"{spec.noise_multiplier:.3f}, q {spec.sampling_rate:.4f}, {spec.steps} steps"),
        ("cascade train time: DP-SGD (s)", f"{private_s:.1f}",
         f"{private_s / plain_s:.1f}x the non-DP cascade ({plain_s:.1f} s); {borrowers} borrowers of {loans.height} "
         f"loans x 24 months, {epochs} epochs"),
        ("transition distance: DP / non-DP cascade", f"{private_fid.transition_distance['mean']:.4f}",
         f"non-DP {plain_fid.transition_distance['mean']:.4f} (DP skips state-head calibration)"),
        ("12m CDR real / DP / non-DP", f"{private_fid.real_cdr:.4f}",
         f"{private_fid.synthetic_cdr:.4f} / {plain_fid.synthetic_cdr:.4f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k loans for the curve, a smaller DP-SGD book")
    parser.add_argument("--loans", type=int, default=None, help="loans in the curve's book (default 50,000)")
    parser.add_argument("--repeats", type=int, default=1, help="DP fits per epsilon (the noise differs each fit)")
    args = parser.parse_args()
    print_header("bench_dp: DP copula quality against epsilon, DP-SGD on the cascade")
    # dp-accounting logs every RDP order it cannot evaluate at small sampling rates; the epsilon is still valid.
    logging.getLogger("absl").setLevel(logging.ERROR)
    n_loans = args.loans or (10_000 if args.quick else 50_000)
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    copula_curve(n_loans, args.repeats, rows)
    dpsgd(1_000 if args.quick else 3_000, 3 if args.quick else 5, rows)
    rows.append(("peak RSS (MiB)", f"{peak_rss_mib():.0f}", f"total wall {time.perf_counter() - started:.0f} s"))
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>8}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>8}  {note}")


if __name__ == "__main__":
    main()
