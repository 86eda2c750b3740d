"""Fuzz: any small frame a lender could export either goes through the models or stops with a `CreditTwinError`.

Hypothesis draws frames of random shape: column names (spaces, capitals, unicode, names our aliases know), numbers
with nulls, constants, all-null columns, booleans in many spellings, small-integer codes, categories, dates,
row numbers and near-duplicate columns; a default flag spelled as the file spells it (or, sometimes, a positive
that matches nothing); a few quasi-identifiers. Each frame is written as a CSV upload and run through the same
models-level entry points the assets call: `read_tape` (ingest and schema), the twin's `fit`/`sample`,
`anonymize`, `expand_release` + `build_validation_report`, and `run_audit` + `evaluate_policy`. Every stage either
completes or raises a `CreditTwinError` that, with the context the asset adds (tenant and file, as
`assets.common.tenant_errors` does), names the tenant, the file and the fix, and names the column when the
problem is one column's. No other exception type may escape.

The examples are derandomized, so CI runs the same 50 frames every time.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import CreditTwinError, ValidationErrors

TENANT = "fuzz-bank"

BOOL_SPELLINGS = [("Yes", "No"), ("yes", "no"), ("Y", "N"), ("TRUE", "FALSE"), ("true", "false"), ("T", "F"),
                  ("1", "0"), ("bad", "good"), ("default", "current")]
NAMES = ["Amount", "amount", "loan amount", "Income", "age", "AGE", "Default", "status", "grade", "term", "rate",
         "balance", "Limit", "dependents", "région", "x", "flag", "Student", "emp title", "id", "rownames", "date"]


@st.composite
def column(draw, rows: int, index: int):
    """One column as a list of CSV cells (strings, '' for a null) and its kind."""
    kind = draw(st.sampled_from(["float", "int", "small_int", "constant", "all_null", "bool", "category", "date",
                                 "row_number", "text_id"]))
    rng_values = draw(st.lists(st.integers(0, 10_000), min_size=rows, max_size=rows))
    null_share = draw(st.sampled_from([0.0, 0.0, 0.02, 0.3]))
    nulls = [v % 1000 < null_share * 1000 for v in rng_values]
    if kind == "float":
        cells = [f"{v * 3.17:.2f}" for v in rng_values]
    elif kind == "int":
        cells = [str(v * 7) for v in rng_values]
    elif kind == "small_int":
        cells = [str(v % 5) for v in rng_values]
    elif kind == "constant":
        cells = [draw(st.sampled_from(["0", "1", "N", "USD", "360"]))] * rows
        nulls = [False] * rows
    elif kind == "all_null":
        cells, nulls = [""] * rows, [True] * rows
    elif kind == "bool":
        yes, no = draw(st.sampled_from(BOOL_SPELLINGS))
        cells = [yes if v % 3 == 0 else no for v in rng_values]
    elif kind == "category":
        levels = draw(st.lists(st.text(string.ascii_letters + " -_", min_size=1, max_size=8), min_size=2, max_size=6,
                               unique=True))
        cells = [levels[v % len(levels)] for v in rng_values]
    elif kind == "date":
        fmt = draw(st.sampled_from(["%Y-%m-%d", "%b-%Y", "%d/%m/%Y"]))
        import datetime as dt

        cells = [(dt.date(2015, 1, 1) + dt.timedelta(days=v % 2000)).strftime(fmt) for v in rng_values]
    elif kind == "row_number":
        cells, nulls = [str(i + 1) for i in range(rows)], [False] * rows
    else:
        cells, nulls = [f"ACC-{v:05d}-{i}" for i, v in enumerate(rng_values)], [False] * rows
    cells = ["" if null else cell for cell, null in zip(cells, nulls)]
    return kind, cells


@st.composite
def upload(draw):
    rows = draw(st.integers(80, 300))
    n_columns = draw(st.integers(1, 7))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=n_columns, max_size=n_columns, unique=True))
    columns = {name: draw(column(rows, i)) for i, name in enumerate(names)}
    if draw(st.booleans()) and any(kind in ("float", "int") for kind, _ in columns.values()):
        # a near-duplicate column: a copy of a numeric one with a little noise
        source = next(name for name, (kind, _) in columns.items() if kind in ("float", "int"))
        cells = columns[source][1]
        columns[source + "_copy"] = ("float", [c if not c else f"{float(c) * 1.001:.3f}" for c in cells])
    config: dict = {}
    flags = [name for name, (kind, cells) in columns.items() if kind in ("bool", "category", "small_int")]
    if flags and draw(st.booleans()):
        target = draw(st.sampled_from(flags))
        written = sorted({c for c in columns[target][1] if c})
        if written:
            positive = draw(st.sampled_from(written + ["no-such-value"]))
            config["target"] = {"column": target, "positive": positive.swapcase() if draw(st.booleans()) else positive}
    candidates = [n for n, (kind, _) in columns.items() if kind not in ("text_id", "row_number")]
    config["quasi_identifiers"] = draw(st.lists(st.sampled_from(candidates), max_size=2, unique=True)) if candidates else []
    config["audit"] = {"n_attacks": 20, "anonymeter_sample_size": 60, "require_measured": False,
                       "max_dcr_share": 1.0, "max_mia_auc": 1.0, "max_anonymeter_risk": 1.0, "max_inference_risk": 1.0}
    return rows, columns, config


def _write(folder: Path, rows: int, columns: dict, config: dict) -> None:
    import csv

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "loans.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        for i in range(rows):
            writer.writerow([cells[i] for _, cells in columns.values()])
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


def _run_models(folder: Path) -> None:
    """The models-level path of the asset graph, stage by stage, as the assets call it."""
    from models.privacy.anonymize import AnonymizationPolicy, anonymize
    from models.privacy.audit import AuditConfig, run_audit
    from models.privacy.policy import evaluate_policy
    from models.twin.engine import make_engine
    from models.quality.release_frame import expand_release
    from models.tape.loan_tape import find_upload, read_tape
    from models.quality.validation import build_validation_report

    tape = read_tape(find_upload(folder, TENANT))
    schema, config = tape.schema, tape.config
    train, holdout = tape.split("train"), tape.split("holdout")
    twin = make_engine(config.engine, k=config.privacy.k).fit(train, schema)
    synthetic = twin.sample(train.height, seed=0)
    policy = AnonymizationPolicy(k=config.privacy.k, l=config.privacy.l, quasi_identifiers=list(config.quasi_identifiers),
                                 max_suppression=config.privacy.max_suppression)
    result = anonymize(synthetic, schema, policy, tenant=TENANT)
    generalisations = result.to_dict().get("generalisations")
    released = expand_release(result.table, schema, generalisations, seed=0)
    build_validation_report(train, holdout, released, schema, target=schema.target,
                            positive=schema.target_positive or None, thresholds=config.validation, seed=0, tenant=TENANT)
    spec = config.audit
    report = run_audit(result.table, train, holdout, schema,
                       config=AuditConfig(sample_size=spec.sample_size, n_attacks=spec.n_attacks, seed=spec.seed,
                                          run_anonymeter=spec.run_anonymeter,
                                          anonymeter_sample_size=spec.anonymeter_sample_size, n_jobs=1),
                       sensitive_columns=list(config.sensitive_columns), tenant=TENANT, generalisations=generalisations)
    evaluate_policy(report, _policy(config))


def _policy(config):
    from models.privacy.policy import AuditPolicy

    spec = config.audit
    return AuditPolicy(**{name: getattr(spec, name) for name in AuditPolicy.__dataclass_fields__ if hasattr(spec, name)})


def _assert_actionable(error: CreditTwinError) -> None:
    error.with_context(tenant=TENANT, file="loans.csv")  # what assets.common.tenant_errors adds
    problems = error.problems if isinstance(error, ValidationErrors) else [error]
    for problem in problems:
        problem.with_context(tenant=TENANT, file="loans.csv")
        text = str(problem)
        assert f"tenant '{TENANT}'" in text and "file '" in text, text
        assert problem.fix, f"no fix in: {text}"
        if problem.column is None:
            assert "column '" not in problem.reason, f"names a column in its text but not as `column`: {text}"


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(drawn=upload())
def test_any_small_frame_completes_or_stops_with_an_actionable_error(tmp_path_factory, drawn):
    # setup
    rows, columns, config = drawn
    folder = tmp_path_factory.mktemp("fuzz") / TENANT
    _write(folder, rows, columns, config)
    # run / assert: only a CreditTwinError with tenant, file and fix may stop the models
    try:
        _run_models(folder)
    except CreditTwinError as error:
        _assert_actionable(error)


def test_a_positive_that_matches_nothing_lists_the_values_found(tmp_path):
    # setup: a Yes/No flag declared with a positive the file never uses
    folder = tmp_path / TENANT
    _write(folder, 120, {"amount": ("int", [str(i) for i in range(120)]),
                         "default": ("bool", ["Yes" if i % 4 == 0 else "No" for i in range(120)])},
           {"target": {"column": "default", "positive": "Bad"}})
    # run / assert
    with pytest.raises(CreditTwinError, match=r"(?s)default.*Bad.*(Yes.*No|No.*Yes)"):
        _run_models(folder)
