"""Pipeline benchmark: the issue-level targets that span several modules.

- ingest + features of a 1M-row demo tape (loans as CSV), target under 10 s:
  `read_tape` (sniff, type, split) then `build_features`; then the same with
  its 24-month history as Parquet (~20M rows, validated and featurised too);
- the README's demo command end to end (`credittwin demo`, 5,000 loans with 24
  months of history, every asset and check), target under 60 s.

Run: ``.venv/bin/python benchmarks/bench_pipeline.py [--quick]`` (--quick: 100k loans).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from peers import print_header  # noqa: E402


def ingest_and_features(n_loans: int, *, with_history: bool = True) -> dict[str, float]:
    from models.tape.demo import generate_portfolio, write_landing
    from models.tape.features import build_features
    from models.tape.loan_tape import find_upload, read_tape

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bench"
        portfolio = generate_portfolio(n_loans, months=24, seed=1)
        write_landing(portfolio, folder, fmt="parquet")
        portfolio.loans.write_csv(folder / "loans.csv")
        (folder / "loans.parquet").unlink()
        if not with_history:
            (folder / "performance.parquet").unlink()
        del portfolio
        started = time.perf_counter()
        tape = read_tape(find_upload(folder, "bench"))
        read_seconds = time.perf_counter() - started
        features, report = build_features(tape.loans, tape.performance, id_column=tape.schema.id_column)
        total = time.perf_counter() - started
        return {
            "loans": tape.loans.height,
            "history_rows": tape.performance.height if tape.performance is not None else 0,
            "features": len(report.built),
            "read_seconds": read_seconds,
            "features_seconds": total - read_seconds,
            "total_seconds": total,
        }


def demo_command() -> float:
    cli = Path(sys.executable).parent / "credittwin"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CREDITTWIN_DATA_DIR": str(Path(tmp) / "data")}
        env.pop("DAGSTER_HOME", None)
        started = time.perf_counter()
        out = subprocess.run([str(cli), "demo"], cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"credittwin demo failed:\n{out.stdout}\n{out.stderr}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k loans instead of 1M")
    args = parser.parse_args()
    print_header(f"bench_pipeline: ingest + features ({'100k' if args.quick else '1M'} loans) and credittwin demo end to end")
    n = 100_000 if args.quick else 1_000_000
    print(f"{'case':<52} {'figure':>12} {'target':>10} {'ratio':>7}")
    for with_history in (False, True):
        figures = ingest_and_features(n, with_history=with_history)
        label = f"ingest+features, {figures['loans']} loans, {figures['history_rows']} history rows"
        target = n == 1_000_000
        print(
            f"{label:<52} {figures['total_seconds']:>10.2f} s {'10 s' if target else '-':>10} "
            f"{figures['total_seconds'] / 10.0 if target else float('nan'):>7.2f}"
        )
        print(f"{'  of which read_tape':<52} {figures['read_seconds']:>10.2f} s")
        print(f"{'  of which build_features (%d features)' % figures['features']:<52} {figures['features_seconds']:>10.2f} s")
    seconds = demo_command()
    print(f"{'credittwin demo (5,000 loans, whole graph)':<52} {seconds:>10.2f} s {'60 s':>10} {seconds / 60.0:>7.2f}")


if __name__ == "__main__":
    main()
