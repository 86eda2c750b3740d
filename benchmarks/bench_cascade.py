"""Benchmark of the LSTM cascade against its targets, the Markov baseline and SDV's PARSynthesizer.

Run: ``.venv/bin/python benchmarks/bench_cascade.py [--quick] [--loans N] [--par-loans N]``

What it measures, on demo books from `models.tape.demo.generate_portfolio`:

- training time of the cascade on N loans x 24 months (target: under 60 s on a
  2-core CPU) and the process's peak memory;
- generation time of N synthetic histories of 24 months (target: under 3 s; a
  comparable platform reports ~30 s on 4 vCPU);
- held-out next-state log-likelihood per transition, cascade against the
  Markov baseline, on the demo book and on a book whose hazards depend on the
  static attributes non-linearly (``nonlinear=True``); both on an independent
  book from the same generator;
- sequence fidelity of each model's synthetic book (transition-matrix
  distance, 12-month cumulative default rate), on the training loans and, to
  show the state-head calibration generalises, on the independent book's
  loans against that book's real histories;
- SDV's PARSynthesizer, the peer a user would otherwise pick, on a subset of
  the same histories (``--par-loans``): fit + sample time and the same
  transition-matrix distance.

Other processes share the CPU, so times are indicative.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.sequences.cascade import CascadeConfig, LoanCascade  # noqa: E402
from models.tape.demo import generate_portfolio  # noqa: E402
from models.sequences.markov import MarkovBaseline  # noqa: E402
from models.tape.schema import infer_schema  # noqa: E402
from models.sequences.histories import compare_sequences, transition_distance  # noqa: E402

TRAIN_TARGET_S = 60.0
GENERATE_TARGET_S = 3.0
PEER_GENERATE_S = 30.0


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def book(n_loans: int, months: int, seed: int, nonlinear: bool):
    portfolio = generate_portfolio(n_loans, months=months, seed=seed, nonlinear=nonlinear)
    schema = infer_schema(portfolio.loans, id_columns=["loan_id", "borrower_id"], target="default_flag")
    return portfolio.loans, portfolio.performance, schema


def with_new_ids(loans: pl.DataFrame) -> pl.DataFrame:
    return loans.with_columns(pl.format("S{}", pl.col("loan_id")).alias("loan_id"))


def run_book(name: str, n_loans: int, months: int, config: CascadeConfig, rows: list[tuple[str, str, str, str]]) -> None:
    """Train both models on one book, score them on an independent one, and add the figures to `rows`."""
    nonlinear = name == "nonlinear"
    loans, perf, schema = book(n_loans, months, seed=11, nonlinear=nonlinear)
    held_loans, held_perf, _ = book(max(n_loans // 4, 500), months, seed=12, nonlinear=nonlinear)

    started = time.perf_counter()
    markov = MarkovBaseline().fit(loans, perf, schema)
    markov_fit = time.perf_counter() - started

    started = time.perf_counter()
    cascade = LoanCascade(config).fit(loans, perf, schema)
    cascade_fit = time.perf_counter() - started

    synthetic = with_new_ids(loans)
    started = time.perf_counter()
    cascade_sample = cascade.sample(synthetic, seed=1)
    cascade_gen = time.perf_counter() - started
    started = time.perf_counter()
    markov_sample = markov.sample(synthetic, seed=1)
    markov_gen = time.perf_counter() - started

    cascade_ll = cascade.log_likelihood(held_loans, held_perf)
    markov_ll = markov.log_likelihood(held_loans, held_perf)
    cascade_fid = compare_sequences(perf, cascade_sample)
    markov_fid = compare_sequences(perf, markov_sample)
    held_fid = compare_sequences(held_perf, cascade.sample(held_loans, seed=2))
    calibration = cascade._prep["calibration"]

    size = f"{n_loans} x {months}"
    rows += [
        (name, "cascade train time (s)", f"{cascade_fit:.1f}", f"target {TRAIN_TARGET_S:.0f} s: {cascade_fit / TRAIN_TARGET_S:.2f}x of budget ({len(cascade.history)} epochs, {size})"),
        (name, "markov fit time (s)", f"{markov_fit:.2f}", ""),
        (name, "cascade generate time (s)", f"{cascade_gen:.2f}", f"target {GENERATE_TARGET_S:.0f} s: {cascade_gen / GENERATE_TARGET_S:.2f}x; peer ~{PEER_GENERATE_S:.0f} s: {PEER_GENERATE_S / cascade_gen:.0f}x faster"),
        (name, "markov generate time (s)", f"{markov_gen:.2f}", ""),
        (name, "held-out LL / transition: cascade", f"{cascade_ll:.4f}", f"{'beats' if cascade_ll > markov_ll else 'DOES NOT beat'} Markov by {cascade_ll - markov_ll:+.4f} nats"),
        (name, "held-out LL / transition: markov", f"{markov_ll:.4f}", f"segment: {markov._fitted['segment']['column']}"),
        (name, "transition distance: cascade", f"{cascade_fid.transition_distance['mean']:.4f}", f"max row {cascade_fid.transition_distance['max']:.4f} (threshold 0.02 per judged row)"),
        (name, "transition distance: markov", f"{markov_fid.transition_distance['mean']:.4f}", f"max row {markov_fid.transition_distance['max']:.4f}"),
        (name, "12m CDR real / cascade / markov", f"{cascade_fid.real_cdr:.4f}", f"{cascade_fid.synthetic_cdr:.4f} ({cascade_fid.cdr12_relative_diff:.1%} rel) / {markov_fid.synthetic_cdr:.4f} ({markov_fid.cdr12_relative_diff:.1%} rel)"),
        (name, "12m CDR independent book real / cascade", f"{held_fid.real_cdr:.4f}", f"{held_fid.synthetic_cdr:.4f} ({held_fid.cdr12_relative_diff:.1%} rel, {held_loans.height} loans)"),
        (name, "state-head calibration", "on" if calibration.get("fitted") else "off", f"teacher-forced NLL {calibration.get('nll_before', float('nan')):.4f} -> {calibration.get('nll_after', float('nan')):.4f}, {calibration.get('free_running_rounds', 0)} free-running rounds"),
        (name, "fidelity check passed: cascade / markov", f"{cascade_fid.passed} / {markov_fid.passed}", "; ".join(cascade_fid.failures)[:90]),
        (name, "peak RSS so far (MiB)", f"{peak_rss_mib():.0f}", ""),
    ]


def run_par(n_loans: int, months: int, epochs: int, rows: list[tuple[str, str, str, str]]) -> None:
    """SDV PARSynthesizer on `n_loans` demo histories: fit + sample time and transition distance."""
    from sdv.metadata import Metadata
    from sdv.sequential import PARSynthesizer

    loans, perf, _ = book(n_loans, months, seed=11, nonlinear=False)
    table = perf.join(loans.select("loan_id", "grade", "product"), on="loan_id").select(
        "loan_id", "period", "grade", "product", "status", "balance", "payment"
    )
    metadata = Metadata.load_from_dict(
        {
            "tables": {
                "performance": {
                    "columns": {
                        "loan_id": {"sdtype": "id"},
                        "period": {"sdtype": "numerical"},
                        "grade": {"sdtype": "categorical"},
                        "product": {"sdtype": "categorical"},
                        "status": {"sdtype": "categorical"},
                        "balance": {"sdtype": "numerical"},
                        "payment": {"sdtype": "numerical"},
                    },
                    "sequence_key": "loan_id",
                    "sequence_index": "period",
                }
            }
        }
    )
    synthesizer = PARSynthesizer(metadata, context_columns=["grade", "product"], epochs=epochs, cuda=False, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        synthesizer.fit({"performance": table.to_pandas()})
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        sampled = pl.from_pandas(synthesizer.sample_sequences(num_sequences=n_loans)["performance"])
        sample_s = time.perf_counter() - started
    # PAR's periods need not be consecutive; months are renumbered in row order so transitions can be read.
    sampled = sampled.with_columns(
        pl.col("loan_id").cast(pl.String),
        (pl.int_range(pl.len()).over("loan_id") + 1).cast(pl.Int64).alias("period"),
        pl.col("status").cast(pl.String),
    )
    distance = transition_distance(perf, sampled)
    per_1k = sample_s / n_loans * 1000
    rows += [
        ("sdv PAR", "PAR fit time (s)", f"{fit_s:.1f}", f"{n_loans} loans x {months}, {epochs} epochs"),
        ("sdv PAR", "PAR generate time (s)", f"{sample_s:.2f}", f"{per_1k:.2f} s per 1k histories (x{10:d} for 10k: ~{per_1k * 10:.0f} s)"),
        ("sdv PAR", "transition distance: PAR", f"{distance['mean']:.4f}", f"max row {distance['max']:.4f}"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small books (2,000 loans), 200-loan PAR run")
    parser.add_argument("--loans", type=int, default=10_000, help="loans per training book")
    parser.add_argument("--months", type=int, default=24, help="months of history")
    parser.add_argument("--par-loans", type=int, default=1_000, help="loans in the SDV PAR run (0 skips it)")
    parser.add_argument("--par-epochs", type=int, default=32, help="PAR training epochs (SDV's default is 128)")
    parser.add_argument("--no-calibration", action="store_true", help="train the cascade without its state-head calibration")
    args = parser.parse_args(argv)
    n_loans = 2_000 if args.quick else args.loans
    par_loans = min(args.par_loans, 200) if args.quick else args.par_loans
    config = CascadeConfig(epochs=30, device="auto", calibrate=not args.no_calibration)

    rows: list[tuple[str, str, str, str]] = []
    for name in ("demo", "nonlinear"):
        run_book(name, n_loans, args.months, config, rows)
    if par_loans > 0:
        run_par(par_loans, args.months, args.par_epochs, rows)

    widths = [max(len(r[i]) for r in rows + [("book", "figure", "value", "against target / peer")]) for i in range(3)]
    header = ("book", "figure", "value", "against target / peer")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  " + header[3])
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
