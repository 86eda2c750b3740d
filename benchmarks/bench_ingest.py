"""Ingest benchmark: time and peak memory of `models.tape.ingest.read_table`.

Cases (each read in a fresh subprocess, so its peak RSS is its own):

- a 1M-row loan tape (CSV), against the target "ingest + features of a
  1M-row tape under 10 s" (this measures the ingest part);
- the same tape as Parquet;
- a ~1 GB CSV (``--quick``: ~200 MB), against the target "peak memory under 3x
  the file size"; the peak is reported both raw and less the baseline of a
  subprocess that imports the same modules and reads nothing.

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--quick] [--gb 1.0]``.
The machine is shared, so times are indicative.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from peers import print_header

TARGET_SECONDS_1M = 10.0
TARGET_MEMORY_RATIO = 3.0

_CHILD = r"""
import json, re, sys, time
from pathlib import Path
import polars as pl
from models.tape.ingest import read_table
path = Path(sys.argv[1])
start = time.perf_counter()
rows = 0
if path.name != "baseline":
    frame, report = read_table(path, tenant="bench")
    rows = frame.height
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would carry over the parent's.
peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"seconds": elapsed, "peak_bytes": peak_kib * 1024, "rows": rows}))
"""


def demo_tape(rows: int, seed: int = 0) -> pl.DataFrame:
    """A loan tape shaped like the demo portfolio (ids, dates, categories, amounts, a flag)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2018-01-01")
    return pl.DataFrame(
        {
            "loan_id": [f"L{i:08d}" for i in range(rows)],
            "origination_date": (start + rng.integers(0, 2000, rows).astype("timedelta64[D]")),
            "product": rng.choice(["mortgage", "auto", "personal", "card"], rows),
            "grade": rng.choice(list("ABCDEFG"), rows),
            "credit_score": rng.integers(300, 851, rows),
            "annual_income": rng.lognormal(10.8, 0.5, rows).round(2),
            "employment_years": rng.integers(0, 41, rows),
            "age": rng.integers(18, 86, rows),
            "region": rng.choice(["north", "south", "east", "west", "south-east", "north-west"], rows),
            "loan_amount": rng.uniform(1_000, 400_000, rows).round(2),
            "term_months": rng.choice([12, 24, 36, 48, 60, 72, 180, 360], rows),
            "interest_rate": rng.uniform(2, 25, rows).round(3),
            "dti": rng.uniform(0, 60, rows).round(2),
            "ltv": np.where(rng.random(rows) < 0.3, np.nan, rng.uniform(20, 110, rows).round(2)),
            "default_flag": (rng.random(rows) < 0.08).astype(np.int64),
        }
    ).with_columns(pl.col("ltv").fill_nan(None))


def write_big_csv(path: Path, target_bytes: int) -> int:
    """Append demo-tape blocks to `path` until it holds about `target_bytes`; returns its size."""
    block = demo_tape(200_000, seed=1)
    with open(path, "wb") as handle:
        block.write_csv(handle)
        body = block.write_csv(include_header=False).encode()
        while handle.tell() + len(body) <= target_bytes:
            handle.write(body)
    return path.stat().st_size


def measure(path: Path) -> dict:
    """Read `path` in a fresh interpreter; seconds, peak RSS bytes and rows."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, cwd=root, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~200 MB file instead of ~1 GB")
    parser.add_argument("--gb", type=float, default=None, help="size of the big CSV in GB")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the tape timed against the 10 s target")
    args = parser.parse_args()
    print_header("bench_ingest: read_table time and peak memory")
    big_gb = args.gb if args.gb is not None else (0.2 if args.quick else 1.0)
    mib = 1024 * 1024
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        baseline = measure(folder / "baseline")
        tape = demo_tape(args.rows)
        tape.write_csv(folder / "loans.csv")
        tape.write_parquet(folder / "loans.parquet")
        del tape
        for name in ("loans.csv", "loans.parquet"):
            path = folder / name
            result = measure(path)
            rows_out.append((f"{args.rows:,}-row tape {path.suffix[1:]}", path.stat().st_size, result))
        started = time.perf_counter()
        size = write_big_csv(folder / "big.csv", int(big_gb * 1e9))
        written = time.perf_counter() - started
        big = measure(folder / "big.csv")
        rows_out.append((f"big CSV ({size / 1e9:.2f} GB, written in {written:.0f} s)", size, big))

    print(f"baseline interpreter (imports only): peak RSS {baseline['peak_bytes'] / mib:,.0f} MiB")
    header = f"{'case':46s} {'rows':>11s} {'MiB':>8s} {'seconds':>8s} {'peak MiB':>9s} {'peak/size':>9s} {'(peak-base)/size':>17s}"
    print(header)
    print("-" * len(header))
    for label, size, r in rows_out:
        ratio = r["peak_bytes"] / size
        net = (r["peak_bytes"] - baseline["peak_bytes"]) / size
        print(
            f"{label:46s} {r['rows']:>11,d} {size / mib:>8,.0f} {r['seconds']:>8.2f} {r['peak_bytes'] / mib:>9,.0f} {ratio:>9.2f} {net:>17.2f}"
        )
    csv_time = rows_out[0][2]["seconds"]
    big_label, big_size, big_result = rows_out[-1]
    print()
    print(f"1M-row ingest (CSV): {csv_time:.2f} s; target {TARGET_SECONDS_1M:.0f} s for ingest + features -> ratio {csv_time / TARGET_SECONDS_1M:.2f} of the budget")
    print(
        f"big CSV peak memory: {big_result['peak_bytes'] / big_size:.2f}x the file size "
        f"(target < {TARGET_MEMORY_RATIO:.0f}x -> ratio {big_result['peak_bytes'] / big_size / TARGET_MEMORY_RATIO:.2f} of the limit); "
        f"throughput {big_size / mib / big_result['seconds']:.0f} MiB/s"
    )


if __name__ == "__main__":
    main()
