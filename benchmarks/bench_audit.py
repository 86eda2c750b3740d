"""Privacy audit benchmark: speed, memory and verdicts of `models.privacy.audit.run_audit`, with SDMetrics as a peer.

The book: a demo portfolio split 80/20 into train and holdout (50,000 train
rows), the default twin engine (`make_engine("credittwin")`, k=5, as the
`fitted_copula` asset makes it) fitted on train and sampled at 50,000 rows,
then k-anonymized (k=5, l=2 on age, region and annual income) by
`models.privacy.anonymize`: the 50k-row release the `privacy_audit` asset sees.

Cases (each timed ``--repeats`` times, median reported):

- DCR + membership inference on the release (anonymeter off): time against the
  target (< 5 s), and peak traced memory (one extra run under tracemalloc).
- the full audit with anonymeter's three attacks at 2,000 attacks each: the
  first run in this fresh process includes numba's one-off compilation of
  anonymeter's neighbour search (cold JIT) and is shown on its own; target
  < 30 s.
- a leaky release (half of it copied train rows) through the same audit, to
  show the verdicts move (once: its time is not the point).
- the peer, measured: SDMetrics' DCROverfittingProtection (a pandas cross
  join) on the twin before anonymization (SDMetrics cannot compare range
  labels with raw values), every table subsampled to the same size, against
  our `distance_to_closest_record` on the same tables at the same size,
  interleaved (ours, SDMetrics, ours, ...) for ``--repeats`` rounds; the ratio
  is SDMetrics' median over ours.

Quoted, not measured: "a comparable platform reports about 15 s for its audit
on 4 vCPU", the figure the issue that set the 5 s target cites. The platform is
not named and cannot be installed here, so the figure is printed as quoted and
no ratio is computed from it.

``--quick`` shrinks the book to a 10k-row release and the peer to 1,000 rows.
Times on the shared 2-core machine are indicative; the header prints the load.

Run: ``.venv/bin/python benchmarks/bench_audit.py [--quick] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peers import Quoted, interleave, median, print_header, spread, times, version  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from models.privacy.anonymize import AnonymizationPolicy, anonymize  # noqa: E402
from models.privacy.audit import AuditConfig, run_audit  # noqa: E402
from models.privacy.distance import distance_to_closest_record  # noqa: E402
from models.privacy.policy import AuditPolicy, evaluate_policy  # noqa: E402
from models.twin.engine import make_engine  # noqa: E402
from models.tape.demo import generate_portfolio  # noqa: E402
from models.tape.schema import ColumnType, infer_schema  # noqa: E402

TARGET_CORE_SECONDS = 5.0
TARGET_FULL_SECONDS = 30.0
QUOTED_PEER = Quoted("a comparable platform's privacy audit, 50k-row release on 4 vCPU", "about 15 s",
                     "the issue that set the 5 s target; platform not named, cannot be installed here")
QIS = ["age", "region", "annual_income"]


def build_book(release_rows: int, seed: int = 0):
    """Train, holdout, the twin (before anonymization), the release and its schema."""
    n_loans = int(release_rows / 0.8)
    portfolio = generate_portfolio(n_loans, months=4, seed=seed)
    loans = portfolio.loans
    config = portfolio.tenant_config
    schema = infer_schema(
        loans,
        id_columns=config["id_columns"],
        target="default_flag",
        target_positive=[1],
        quasi_identifiers=QIS,
        sensitive_columns=config["sensitive_columns"],
    )
    order = np.random.default_rng(seed).permutation(loans.height)
    cut = int(0.8 * loans.height)
    train, holdout = loans[np.sort(order[:cut])], loans[np.sort(order[cut:])]
    twin = make_engine("credittwin", k=5).fit(train, schema).sample(release_rows, seed=seed + 1)
    anonymized = anonymize(twin, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS))
    return train, holdout, twin, anonymized, schema


def timed(function, *args, trace: bool = False, **kwargs):
    """Run once; return (result, seconds, peak traced bytes or None)."""
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, seconds, peak


def sdmetrics_dcr(train, twin, holdout, schema, rows: int, seed: int = 0):
    """SDMetrics' DCROverfittingProtection on the same columns, every table subsampled to `rows`."""
    from sdmetrics.single_table import DCROverfittingProtection

    columns = [c.name for c in schema.columns if c.type not in (ColumnType.IDENTIFIER, ColumnType.TEXT)]
    sdtypes = {
        ColumnType.NUMERIC: "numerical", ColumnType.INTEGER: "numerical", ColumnType.DATETIME: "datetime",
        ColumnType.CATEGORICAL: "categorical", ColumnType.BOOLEAN: "boolean",
    }
    metadata = {"columns": {c: {"sdtype": sdtypes[schema[c].type]} for c in columns}}
    frames = [f.select(columns).to_pandas() for f in (train, twin, holdout)]
    np.random.seed(seed)  # SDMetrics subsamples through pandas' global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DCROverfittingProtection.compute_breakdown(
            frames[0], frames[1], frames[2], metadata, None, num_rows_subsample=rows, num_iterations=1
        )


def repeated(repeats: int, function, *args, **kwargs):
    """Run `repeats` times; (last result, list of seconds)."""
    seconds, result = [], None
    for _ in range(repeats):
        result, elapsed, _ = timed(function, *args, **kwargs)
        seconds.append(elapsed)
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k-row release, 1,000-row peer comparison")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timed case; interleaved rounds with the peer")
    args = parser.parse_args()
    release_rows = 10_000 if args.quick else 50_000
    peer_rows = 1_000 if args.quick else 2_000
    repeats = max(1, args.repeats)
    print_header(f"bench_audit: {release_rows:,}-row release, peer at {peer_rows:,} rows, {repeats} run(s) a case",
                 measured=[f"{version('sdmetrics')} (DCROverfittingProtection)"], quoted=[QUOTED_PEER])

    start = time.perf_counter()
    train, holdout, twin, anonymized, schema = build_book(release_rows)
    released = anonymized.table
    print(
        f"book: train {train.height:,} rows, holdout {holdout.height:,}, release {released.height:,} "
        f"(k={anonymized.k_achieved}, l={anonymized.l_achieved}, {len(schema.columns)} columns) "
        f"built in {time.perf_counter() - start:.1f} s"
    )
    # the tenant default policy (models.tape.tenant.AuditSpec): inference risks have their own limit
    from models.tape.tenant import AuditSpec

    defaults = AuditSpec()
    policy = AuditPolicy(k=5, l=2, max_anonymeter_risk=defaults.max_anonymeter_risk,
                         max_inference_risk=defaults.max_inference_risk)
    common = {"tenant": "bench", "generalisations": anonymized.generalisations}

    core, core_runs = repeated(
        repeats, run_audit, released, train, holdout, schema, config=AuditConfig(run_anonymeter=False), **common
    )
    _, _, core_peak = timed(
        run_audit, released, train, holdout, schema, config=AuditConfig(run_anonymeter=False), trace=True, **common
    )
    full, full_runs = repeated(repeats, run_audit, released, train, holdout, schema,
                               config=AuditConfig(n_attacks=2000), **common)
    half = train.sample(release_rows // 2, seed=5)
    leaky_release = anonymize(
        pl.concat([half, twin.head(release_rows - half.height)]), schema,
        AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS),
    )
    leaky, leaky_s, _ = timed(
        run_audit, leaky_release.table, train, holdout, schema, config=AuditConfig(run_anonymeter=False),
        tenant="bench", generalisations=leaky_release.generalisations,
    )
    peer_runs = interleave({
        "our DCR": lambda r: timed(distance_to_closest_record, twin, train, holdout, schema, sample_size=peer_rows,
                                   seed=r),
        "SDMetrics DCROverfittingProtection": lambda r: timed(sdmetrics_dcr, train, twin, holdout, schema, peer_rows,
                                                              seed=r),
    }, repeats)
    ours_peer, peer = peer_runs["our DCR"][0][0], peer_runs["SDMetrics DCROverfittingProtection"][0][0]
    ours_peer_s = [seconds for _, seconds, _ in peer_runs["our DCR"]]
    peer_s = [seconds for _, seconds, _ in peer_runs["SDMetrics DCROverfittingProtection"]]

    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    core_s, full_s = median(core_runs), median(full_runs)
    print()
    print(f"{'case':58s} {'median s':>8s} {'target':>8s} {'ratio':>7s}  runs (s)")
    print(f"{'DCR + MIA on the ' + f'{released.height:,}-row release (10k samples)':58s} {core_s:8.2f} "
          f"{TARGET_CORE_SECONDS:8.1f} {core_s / TARGET_CORE_SECONDS:7.2f}  {spread(core_runs)}")
    print(f"{'full audit incl. anonymeter 3 x 2,000 attacks':58s} {full_s:8.2f} "
          f"{TARGET_FULL_SECONDS:8.1f} {full_s / TARGET_FULL_SECONDS:7.2f}  {spread(full_runs)}")
    print(f"{'  its first run (cold JIT: numba compiles in this process)':58s} {full_runs[0]:8.2f} "
          f"{TARGET_FULL_SECONDS:8.1f} {full_runs[0] / TARGET_FULL_SECONDS:7.2f}")
    print(f"{'  of which anonymeter (full - core, medians)':58s} {full_s - core_s:8.2f}")
    print(f"{'leaky release (half copied train rows), DCR + MIA':58s} {leaky_s:8.2f}")
    print(f"{f'our DCR, {peer_rows:,} rows per table (twin before anonymization)':58s} {median(ours_peer_s):8.2f} "
          f"{'':8s} {'':7s}  {spread(ours_peer_s)}")
    print(f"{f'SDMetrics DCROverfittingProtection, {peer_rows:,} rows per table':58s} {median(peer_s):8.2f} "
          f"{'':8s} {'':7s}  {spread(peer_s)}; ours {times(median(peer_s), median(ours_peer_s))} faster")
    print(f"peer platform: {QUOTED_PEER.figure} quoted, not measured (no ratio)")
    if repeats < 3:
        print("(fewer than 3 runs: the medians and the ratio are indicative only)")
    print()
    print(f"peak traced memory, DCR + MIA: {core_peak / 1024**2:.0f} MiB; process peak RSS: {rss_mib:.0f} MiB")
    print()
    print(f"{'figure':40s} {'release':>10s} {'leaky':>10s}")
    rows = [
        ("DCR share closer to train", core.dcr["share_closer_to_train"], leaky.dcr["share_closer_to_train"]),
        ("exact-match rate", core.dcr["exact_match_rate"], leaky.dcr["exact_match_rate"]),
        ("NNDR median train", core.dcr["nndr_median_train"], leaky.dcr["nndr_median_train"]),
        ("NNDR median holdout", core.dcr["nndr_median_holdout"], leaky.dcr["nndr_median_holdout"]),
        ("MIA AUC (strongest)", core.mia["auc"], leaky.mia["auc"]),
        ("MIA AUC CI low", core.mia["auc_ci"][0], leaky.mia["auc_ci"][0]),
        ("MIA TPR at 0.1% FPR", core.mia["tpr_at_fpr"], leaky.mia["tpr_at_fpr"]),
    ]
    for name, ours_value, leaky_value in rows:
        print(f"{name:40s} {ours_value:10.4f} {leaky_value:10.4f}")
    print()
    print("anonymeter (full audit of the release): risk [95% CI]")
    anonymeter = full.anonymeter
    entries = [("singling out", anonymeter.get("singling_out")), ("linkability", anonymeter.get("linkability"))]
    entries += [(f"inference {k}", v) for k, v in (anonymeter.get("inference") or {}).items()]
    for name, risk in entries:
        if risk is not None:
            print(f"  {name:30s} {risk['risk']:.4f} [{risk['ci'][0]:.4f}, {risk['ci'][1]:.4f}]")
    print()
    print("policy verdicts (full audit of the release):")
    for result in evaluate_policy(full, policy):
        print(f"  {'PASS' if result.passed else 'FAIL'} {result.rule}: {result.message}")
    leaky_failed = [r.rule for r in evaluate_policy(leaky, AuditPolicy(k=5, l=2, require_measured=False)) if not r.passed]
    print(f"leaky release fails: {', '.join(leaky_failed)}")
    print()
    closer = ours_peer["share_closer_to_train"]
    peer_closer = peer["synthetic_data_percentages"]["closer_to_training"]
    print(f"peer DCR on the twin at {peer_rows:,} rows (round 1): ours share closer to train {closer:.4f} "
          f"(ties count 1/2), SDMetrics {peer_closer:.4f} (score {peer['score']:.4f}; ties count as holdout)")


if __name__ == "__main__":
    main()
