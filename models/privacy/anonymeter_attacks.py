"""Anonymeter's singling-out, linkability and inference attacks on a release, holdout as control.

`anonymeter_risks` gives each attack as a risk with its confidence interval
and the success counts the policy tests (`models.privacy.leak.leak_test`).
Anonymeter is optional (it pins an old NumPy, see the README): without it
these figures are "not measured: not installed", with the install command.
The module is not called `anonymeter` so that it never shadows the library.
"""

from __future__ import annotations

import functools
import math
import warnings as py_warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import polars as pl

from models.privacy.distance import (
    MISSING,
    ColumnPlan,
    Samples,
    category_strings,
    draw_samples,
    numeric_values,
    take_rows,
)
from models.privacy.inference import MIN_ATTACK_ROWS, secret_columns
from models.privacy.labels import CategoryGroup, NumericRange, parse_generalised_label
from models.privacy.leak import CONFIDENCE
from models.tape.schema import ColumnType, TableSchema

if TYPE_CHECKING:
    import pandas as pd

# Query attempts granted per requested singling-out attack before anonymeter
# gives up generating more (its own default of 10 million can run for hours on
# a heavily generalised table where few queries single anyone out).
SINGLING_OUT_ATTEMPTS_PER_ATTACK = 100
ANONYMETER_INSTALL = "pip install --no-deps 'anonymeter==1.1.0'"


def _label_for(values: np.ndarray, ranges: list[tuple[str, NumericRange]]) -> list[str | None]:
    """The released range label each real value falls in (the nearest when none contains it)."""
    lows = np.array([r.low for _, r in ranges])
    highs = np.array([r.high for _, r in ranges])
    out: list[str | None] = []
    for start in range(0, values.size, 4096):
        chunk = values[start:start + 4096]
        gap = np.maximum(np.maximum(lows[None, :] - chunk[:, None], chunk[:, None] - highs[None, :]), 0.0)
        # Among containing ranges prefer the narrowest, the most specific recoding.
        width = np.where(np.isfinite(highs - lows), highs - lows, np.inf)
        best = np.lexsort((np.broadcast_to(width, gap.shape), gap), axis=1)[:, 0]
        out.extend(None if np.isnan(v) else ranges[i][0] for v, i in zip(chunk, best))
    return out


def _anonymeter_frame(frame: pl.DataFrame, plans: list[ColumnPlan], schema: TableSchema, released_frame: pl.DataFrame, *, released: bool) -> "pd.DataFrame":
    """A pandas table whose columns have one dtype across released, train and holdout.

    Numeric columns are floats; generalised numeric columns are compared as
    strings: real values are replaced by the released range label that contains
    them, which is what an attacker knowing the recoding would do. Categories
    are strings (a group label for a real category it covers), nulls "<missing>".
    """
    import pandas as pd

    data: dict[str, Any] = {}
    for column in plans:
        series = frame.get_column(column.name)
        ctype = schema[column.name].type
        if column.numeric and not column.generalised:
            data[column.name] = numeric_values(series)
        elif column.numeric:
            # sorted: polars' unique() has no fixed order, and ties between equally good ranges go to the first
            labels = sorted(v for v in released_frame.get_column(column.name).cast(pl.String).unique().to_list() if v is not None)
            if released:
                values = series.cast(pl.String).to_list()
            else:
                ranges = []
                for label in labels:
                    parsed = parse_generalised_label(label)
                    if label.strip() == MISSING:
                        continue
                    if isinstance(parsed, NumericRange):
                        ranges.append((label, parsed))
                    elif isinstance(parsed, CategoryGroup):
                        ranges.append((label, NumericRange(-math.inf, math.inf, False, False)))
                    else:
                        number = float(label)
                        ranges.append((label, NumericRange(number, number, True, True)))
                values = _label_for(numeric_values(series), ranges) if ranges else [None] * frame.height
            data[column.name] = [MISSING if v is None else v for v in values]
        else:
            values = [MISSING if v is None else v for v in category_strings(series, ctype)]
            if column.generalised and not released:
                # A real category becomes the first released label covering it
                # (labels are sorted, so the choice is stable).
                cover: dict[str, str] = {}
                any_label = next((label for label, members in column.groups.items() if members is None), None)
                for label in column.labels:
                    members = column.groups.get(label, frozenset([label]))
                    for member in members or ():
                        cover.setdefault(member, label)
                values = [cover.get(v, any_label or v) for v in values]
            data[column.name] = values
    return pd.DataFrame(data)


@contextmanager
def _anonymeter_log(notes: list[str]) -> Iterator[None]:
    """Keep what anonymeter logs (a singling-out attack that found fewer queries than asked: the risk may be
    underestimated) as the audit's notes, instead of lines on the user's terminal."""
    import logging

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = f"anonymeter: {record.getMessage()}"
            if text not in notes:
                notes.append(text)

    logger = logging.getLogger("anonymeter")
    handler, propagate = _Keep(level=logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for anonymeter (which samples through it), then restore it."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


@functools.cache
def cache_compiled_distances() -> None:
    """Keep anonymeter's numba-compiled neighbour search on disk, so each machine compiles it once, not each process.

    anonymeter jit-compiles its Gower distance and nearest-neighbour loop without numba's cache, so every process
    that audits (each step process of each run, each `credittwin` command) spent about 3.5 s compiling them again.
    numba's own on-disk cache (`Dispatcher.enable_caching`, what ``cache=True`` turns on) keeps the compiled code
    beside the module or in the user's cache folder, keyed by the source file and the CPU; a changed anonymeter or
    machine compiles afresh. The compiled code is the same, so the figures are too.
    """
    from anonymeter.neighbors import mixed_types_kneighbors

    for function in (mixed_types_kneighbors.gower_distance, mixed_types_kneighbors._nearest_neighbors):
        function.enable_caching()


def seeded_linkability(evaluator_class: Any, seed: int) -> Any:
    """anonymeter's `LinkabilityEvaluator` with its random-guess baseline drawn from a generator seeded by `seed`.

    anonymeter 1.1.0 draws the baseline's random links from ``np.random.default_rng()``, fresh OS entropy, which
    no global seed reaches: the same audit of the same release gave a different baseline rate (and so a different
    risk and signed certificate) on every run and on every worker. The baseline is the same random guess (for each
    attack, `n_neighbors` synthetic rows without replacement, twice), only reproducible. It sets the evaluator's
    ``_baseline_links`` after the library's `evaluate`, so it relies on that private attribute of the pinned version.
    """
    from anonymeter.evaluators.linkability_evaluator import LinkabilityIndexes

    class SeededLinkabilityEvaluator(evaluator_class):
        def evaluate(self, n_jobs: int = -2):
            super().evaluate(n_jobs=n_jobs)
            rng = np.random.default_rng(seed + 3)
            n_synthetic = self._syn.shape[0]

            def links() -> np.ndarray:
                return np.array([rng.choice(n_synthetic, size=self._n_neighbors, replace=False)
                                 for _ in range(self._n_attacks)])

            self._baseline_links = LinkabilityIndexes(idx_0=links(), idx_1=links())
            return self

    return SeededLinkabilityEvaluator


def _risk(evaluator: Any, n_attacks: int) -> dict[str, Any]:
    results = evaluator.results(confidence_level=CONFIDENCE)
    risk = results.risk()
    return {
        "risk": float(risk.value),
        "ci": [float(risk.ci[0]), float(risk.ci[1])],
        "attack_rate": float(results.attack_rate.value),
        "baseline_rate": float(results.baseline_rate.value),
        "control_rate": None if results.control_rate is None else float(results.control_rate.value),
        "n_attacks": n_attacks,
        # The counts behind the rates: the policy tests members against controls on them (`models.privacy.leak.leak_test`).
        "members_attacked": int(results.n_attacks_ori),
        "members_succeeded": int(results.n_success),
        "controls_attacked": int(results.n_attacks_control),
        "controls_succeeded": None if results.n_control is None else int(results.n_control),
    }


def anonymeter_from_samples(
    samples: Samples, schema: TableSchema, *, n_attacks: int, secrets: list[str], seed: int, n_jobs: int, rows: int
) -> dict[str, Any]:
    """`anonymeter_risks` on samples already drawn (`draw_samples`), at most `rows` rows of each table."""
    try:
        from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator
    except ImportError as error:
        # anonymeter pins numpy<1.27, so it cannot be a declared dependency and a plain `pip install -e .` lacks
        # it. CreditTwin's own attacks still run; anonymeter's second opinion is reported as not measured.
        reason = (
            f"not measured: anonymeter is not installed ({error}); install it beside CreditTwin with "
            f"`{ANONYMETER_INSTALL}` to add its singling-out, linkability and inference attacks"
        )
        return {"skipped": reason, "not_installed": True, "warnings": [reason]}

    cache_compiled_distances()
    rng = np.random.default_rng(seed + 2)
    rel_frame, train_frame, holdout_frame = (take_rows(samples.frames[name], rows, rng) for name in ("released", "train", "holdout"))
    smallest = min(rel_frame.height, train_frame.height, holdout_frame.height)
    if smallest < MIN_ATTACK_ROWS:
        reason = (
            f"anonymeter attacks skipped: they need at least {MIN_ATTACK_ROWS} unique rows in each of the "
            f"released, train and holdout tables, the smallest has {smallest}; upload a larger book"
        )
        return {"skipped": reason, "warnings": [reason]}
    notes: list[str] = []
    attacks = min(n_attacks, smallest)
    if attacks < n_attacks:
        notes.append(f"anonymeter ran {attacks} attacks per evaluator instead of {n_attacks}: the tables are smaller")
    syn = _anonymeter_frame(rel_frame, samples.plans, schema, rel_frame, released=True)
    ori = _anonymeter_frame(train_frame, samples.plans, schema, rel_frame, released=False)
    control = _anonymeter_frame(holdout_frame, samples.plans, schema, rel_frame, released=False)
    columns = list(syn.columns)
    out: dict[str, Any] = {"n_attacks": attacks, "n_requested": n_attacks}
    with py_warnings.catch_warnings(record=True) as caught, _seeded_global_numpy(seed), _anonymeter_log(notes):
        py_warnings.simplefilter("always")
        singling = SinglingOutEvaluator(
            ori=ori, syn=syn, control=control, n_attacks=attacks, n_cols=min(3, len(columns)),
            max_attempts=SINGLING_OUT_ATTEMPTS_PER_ATTACK * attacks, seed=seed,
        ).evaluate(mode="multivariate" if len(columns) > 1 else "univariate")
        out["singling_out"] = _risk(singling, attacks)
        if len(columns) >= 2:
            # The attacker holds two tables that share no column: the compared
            # columns, alternately dealt, keep both halves similar in content.
            aux = (columns[0::2], columns[1::2])
            linkability = seeded_linkability(LinkabilityEvaluator, seed)(
                ori=ori, syn=syn, control=control, aux_cols=aux, n_attacks=attacks, n_neighbors=1
            )
            out["linkability"] = _risk(linkability.evaluate(n_jobs=n_jobs), attacks)
            out["linkability"]["aux_cols"] = [list(aux[0]), list(aux[1])]
        else:
            notes.append("linkability skipped: it needs at least two compared columns to split between two tables")
        inference: dict[str, Any] = {}
        for secret in secrets:
            aux_cols = [c for c in columns if c not in secrets]
            if not aux_cols:
                notes.append(f"inference on '{secret}' skipped: no column is left for the attacker to know")
                continue
            regression = bool(schema[secret].type is ColumnType.NUMERIC and not next(p for p in samples.plans if p.name == secret).generalised)
            evaluator = InferenceEvaluator(
                ori=ori, syn=syn, control=control, aux_cols=aux_cols, secret=secret, regression=regression, n_attacks=attacks,
            )
            inference[secret] = _risk(evaluator.evaluate(n_jobs=n_jobs), attacks)
        out["inference"] = inference
    seen = set()
    for item in caught:
        text = f"anonymeter: {item.message}"
        if text not in seen:
            seen.add(text)
            notes.append(text)
    out["warnings"] = notes
    return out


def anonymeter_risks(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    n_attacks: int = 2000,
    sensitive_columns: list[str] | None = None,
    sample_size: int = 10_000,
    seed: int = 0,
    n_jobs: int = -1,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Anonymeter's singling-out, linkability and inference risks, holdout as control.

    The tables are deduplicated and sampled as for
    `models.privacy.distance.distance_to_closest_record`.
    Singling out is multivariate on 3 columns; linkability splits the compared
    columns alternately into the attacker's two tables; inference targets the
    default flag (`schema.target`), the schema's sensitive columns and
    `sensitive_columns`, each guessed from all non-secret columns (a numeric
    secret counts as guessed within anonymeter's 5 % tolerance). Generalised
    columns are compared as strings (see `_anonymeter_frame`). Anonymeter
    samples through NumPy's global generator, which is seeded with `seed` for
    the duration and restored after.

    Returns:
        `singling_out`, `linkability` and `inference` (one entry per secret),
        each with `risk`, its confidence interval `ci`, the attack, baseline and
        control success rates and `n_attacks`; `warnings`. `{"skipped": reason}`
        when a table has fewer than 5 unique rows.

    Raises:
        InvalidDataError: as `models.privacy.distance.distance_to_closest_record`, or a sensitive
            column is not audited.
    """
    samples = draw_samples(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    secrets = secret_columns(schema, samples.columns, sensitive_columns, tenant)
    result = anonymeter_from_samples(
        samples, schema, n_attacks=n_attacks, secrets=secrets, seed=seed, n_jobs=n_jobs, rows=sample_size
    )
    result["warnings"] = list(samples.warnings) + result["warnings"]
    return result
