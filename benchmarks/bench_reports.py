"""Speed of the validation report and the PD model: what `validation_report`, `risk_model` and `portfolio_scores` cost.

The books come from `models.tape.demo.generate_portfolio`: a "real" book split 80/20
into train and holdout, and a "synthetic" book from another seed (an honest
stand-in for a good twin: the same population, no shared rows).

Cases, each timed once in this process (the first includes imports and, for
LightGBM, OpenMP start-up):

- `build_validation_report` at 50k and 200k train rows, with 24-month histories
  (charts included, PDF rendered separately);
- `train_pd_models` on 50k synthetic rows (LightGBM and the scorecard, both
  calibrated, evaluated on the real holdout; the tape's flag and the 12-month
  horizon of the histories);
- `score_book` of 1M loans: PD and band only, and with reason codes on 100k
  loans (LightGBM's exact contributions; the cost per loan is printed, since a
  million loans take minutes).

There is no external target for these (the issue sets none); the figures are
for the README, measured on the machine it names.

    .venv/bin/python benchmarks/bench_reports.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

from models.tape.demo import generate_portfolio  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402

QIS = ["age", "region", "annual_income"]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def books(train_rows: int, months: int):
    real = generate_portfolio(int(train_rows / 0.8), months=months, seed=1)
    synthetic = generate_portfolio(train_rows, months=months, seed=2)
    cut = train_rows
    train, holdout = real.loans.head(cut), real.loans.slice(cut)
    schema = infer_schema(real.loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1],
                          quasi_identifiers=QIS)
    ids = train.get_column("loan_id").implode()
    real_history = real.performance.filter(pl.col("loan_id").is_in(ids))
    holdout_history = real.performance.filter(~pl.col("loan_id").is_in(ids))
    return train, holdout, synthetic.loans, schema, real_history, holdout_history, synthetic.performance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows only")
    args = parser.parse_args()
    print_header("bench_reports: validation report, PD models and scoring")
    from models.risk.serving import score_book
    from models.risk.training import train_pd_models
    from models.quality.validation import build_validation_report
    from models.quality.validation_pdf import render_validation_pdf

    sizes = [10_000] if args.quick else [50_000, 200_000]
    print(f"{'case':58s} {'seconds':>8s}")
    for rows in sizes:
        train, holdout, synthetic, schema, real_h, _, syn_h = books(rows, 24)
        report, seconds = timed(
            build_validation_report, train, holdout, synthetic, schema, target="default_flag", positive=[1],
            real_history=real_h, synthetic_history=syn_h, seed=0,
        )
        _, pdf_s = timed(render_validation_pdf, report)
        print(f"{f'validation report, {rows:,} train rows, with histories':58s} {seconds:8.2f}")
        print(f"{'  its PDF':58s} {pdf_s:8.2f}   score {report.score:.3f}, passed {report.passed}")

    rows = 10_000 if args.quick else 50_000
    train, holdout, synthetic, schema, _, holdout_h, syn_h = books(rows, 24)
    training, seconds = timed(
        train_pd_models, synthetic, holdout, schema, synthetic_performance=syn_h, holdout_performance=holdout_h,
    )
    model = training.primary
    gate = model.gate()
    print(f"{f'PD models trained on {rows:,} synthetic rows (all horizons)':58s} {seconds:8.2f}   "
          f"chosen {model.chosen}, TSTR AUC {gate['tstr_auc']:.3f}, ECE {gate['ece']:.3f}, "
          f"horizons {list(training.models)}, skipped {training.skipped}")

    book_rows = 100_000 if args.quick else 1_000_000
    book = generate_portfolio(book_rows, months=4, seed=3).loans
    _, seconds = timed(score_book, model, book, reasons=False)
    print(f"{f'scores of {book_rows:,} loans, PD and band ({model.chosen})':58s} {seconds:8.2f}")
    for name in ("lightgbm", "scorecard"):
        model.chosen = name
        sample = book.head(100_000 if not args.quick else 20_000)
        _, seconds = timed(score_book, model, sample, reasons=True)
        print(f"{f'scores with reason codes, {sample.height:,} loans ({name})':58s} {seconds:8.2f}   "
              f"{seconds / sample.height * 1e6:.0f} us a loan")


if __name__ == "__main__":
    main()
