"""The statistical baseline for monthly loan performance: a Markov chain per risk segment.

`MarkovBaseline` estimates, for each risk segment (a grade, or quantile bins of
a score; or one pooled segment, the plain chain, with ``segmented=False``), the distribution of the first month's state and the month-to-month
transition matrix, shrunk towards the pooled book so thin segments borrow
strength. Transitions landing on a loan's last contractual month get their own
pooled matrix, because that is where loans mature. Balances and payments follow
each state's average ratio (balance to the previous balance, payment to the
scheduled installment, or to the previous balance in a pay-off month).

It has the same interface as `models.sequences.cascade.LoanCascade`, which must beat it
on held-out next-state log-likelihood.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError, NotFittedError, TenantConfigError
from models.files import atomic_write_text
from models.tape.schema import TableSchema
from models.sequences.histories import (
    ABSORBING_CODES,
    AMOUNTS,
    CLOSING_CODES,
    N_STATES,
    ObservationWindow,
    history_amounts,
    loan_paths,
    loan_terms,
    observation_window,
    observed_states,
    paths_to_frame,
    ratio_targets,
    reporting_offset,
    state_days_past_due,
    training_paths,
    validate_histories,
)

SEGMENT_CANDIDATES = ("grade", "risk_grade", "sub_grade", "risk_segment", "credit_score", "fico")
_MAX_LEVELS = 30
_NUMERIC_BINS = 5
MODEL_FILE = "markov.json"


class MarkovBaseline:
    """A Markov chain of monthly states conditioned on a risk segment.

    Args:
        smoothing: pseudo-transitions drawn from the pooled matrix that are
            added to each segment's row, so thin segments stay close to the
            book and no held-out transition gets probability zero.
        segmented: False fits the plain chain, one pooled segment for the
            whole book, whatever segment columns the loans carry; the
            yardstick that shows what conditioning on a segment adds.
    """

    def __init__(self, *, smoothing: float = 20.0, segmented: bool = True) -> None:
        self.smoothing = float(smoothing)
        self.segmented = bool(segmented)
        self._fitted: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        loans: pl.DataFrame,
        performance: pl.DataFrame,
        schema: TableSchema,
        *,
        segment_column: str | None = None,
        seed: int = 0,
        as_of: str | None = None,
        tenant: str | None = None,
        file: str | None = None,
    ) -> "MarkovBaseline":
        """Estimate the per-segment chains from the loans' histories.

        Args:
            loans: the static loans table (the train split).
            performance: their monthly histories.
            schema: the loans table's schema (names the id and the columns).
            segment_column: the risk segment; default the first of grade,
                risk_grade, sub_grade, risk_segment, credit_score, fico present
                (numeric columns are cut into quintiles), else one segment.
                A plain chain (``segmented=False``) takes none.
            seed: accepted so both models share `fit`'s signature; estimating
                the chain involves no randomness.
            as_of: the history's cut-off ('YYYY-MM'); None takes its last
                reporting month. Sampled histories stop there, as the
                cascade's do (`models.sequences.histories.ObservationWindow`).
            tenant: named in errors.
            file: named in errors.

        Raises:
            InvalidDataError: the histories fail `validate_histories`, the
                segment column does not exist, or no loan has both a history
                and static attributes.
            TenantConfigError: a segment column is named for a plain chain, or
                the history reports months after `as_of`.
        """
        id_column = schema.id_column or "loan_id"
        report = validate_histories(performance, loans, tenant=tenant, file=file, id_column=id_column)
        offset = reporting_offset(performance, loans, id_column)
        window = observation_window(performance, loans, offset, as_of=as_of, tenant=tenant)
        segment_column = self._segment_column(loans, schema, segment_column, tenant, file)
        ids = loans.get_column(id_column).cast(pl.String).to_numpy()
        months = report.max_period
        amounts = history_amounts(performance)
        paths, keep = training_paths(performance, ids, months, tenant=tenant, file=file)
        spec = self._segment_spec(loans, segment_column)
        segments = self._segment_codes(loans, spec)
        n_segments = len(spec["levels"])
        terms = loan_terms(
            loans, fallback_term=months, term_column=report.term_column or "term_months", need_amount=bool(amounts),
            tenant=tenant, file=file,
        )

        rows, to_t, frm, to = paths.transitions()
        # The pseudo-counts go to states the history holds: a state the tape never had is never sampled.
        seen = np.asarray(observed_states(performance), dtype=np.float64)
        pooled = np.full((N_STATES, N_STATES), 0.1) * seen
        np.add.at(pooled, (frm, to), 1.0)
        pooled /= pooled.sum(axis=1, keepdims=True)
        counts = np.zeros((n_segments, N_STATES, N_STATES))
        np.add.at(counts, (segments[rows], frm, to), 1.0)
        transition = (counts + self.smoothing * pooled) / (counts.sum(axis=2, keepdims=True) + self.smoothing)

        at_term_mask = (to_t + 1) == terms.term[rows]
        term_counts = np.zeros((N_STATES, N_STATES))
        np.add.at(term_counts, (frm[at_term_mask], to[at_term_mask]), 1.0)
        at_term = (term_counts + self.smoothing * pooled) / (term_counts.sum(axis=1, keepdims=True) + self.smoothing)

        first = paths.states[keep, 0]
        pooled_initial = np.bincount(first, minlength=N_STATES) + 0.1 * seen
        pooled_initial = pooled_initial / pooled_initial.sum()
        initial_counts = np.zeros((n_segments, N_STATES))
        np.add.at(initial_counts, (segments[keep], first), 1.0)
        initial = (initial_counts + self.smoothing * pooled_initial) / (
            initial_counts.sum(axis=1, keepdims=True) + self.smoothing
        )

        balance_ratio, payment_ratio = ratio_targets(paths, terms.amount, terms.installment)
        valid = paths.states >= 0
        codes = paths.states[valid]

        def mean_by_state(ratio: np.ndarray, fallback: float) -> list[float]:
            # A state without a finite ratio (or a history without that amount) keeps the fallback.
            values = ratio[valid]
            return [float(values[(codes == s) & np.isfinite(values)].mean()) if ((codes == s) & np.isfinite(values)).any()
                    else fallback for s in range(N_STATES)]

        balance_by_state = mean_by_state(balance_ratio, 1.0)
        payment_by_state = mean_by_state(payment_ratio, 0.0)
        self._fitted = {
            "id_column": id_column,
            "term_column": report.term_column,
            "months": months,
            "segment": spec,
            "initial": initial.tolist(),
            "transition": transition.tolist(),
            "at_term": at_term.tolist(),
            "balance_ratio": [0.0 if not np.isfinite(v) else v for v in balance_by_state],
            "payment_ratio": [0.0 if not np.isfinite(v) else v for v in payment_by_state],
            "days_past_due": state_days_past_due(performance),
            "amounts": amounts,
            "reporting_offset": offset,
            "observation_window": window.to_dict(),
            "seed": int(seed),
            "history": report.to_dict(),
        }
        return self

    def _segment_column(
        self, loans: pl.DataFrame, schema: TableSchema, column: str | None, tenant: str | None, file: str | None
    ) -> str | None:
        if not self.segmented:
            if column is not None:
                raise TenantConfigError(
                    f"a plain Markov chain (segmented=False) has no segment, but segment_column '{column}' was given.",
                    tenant=tenant,
                    column=column,
                    fix="leave segment_column out, or build MarkovBaseline(segmented=True).",
                )
            return None
        if column is not None:
            if column not in loans.columns:
                raise InvalidDataError(
                    f"the segment column '{column}' is not in the loans table.",
                    tenant=tenant,
                    file=file,
                    column=column,
                    fix=f"name one of the loans columns, e.g. {loans.columns[:8]}.",
                )
            return column
        usable = [c for c in SEGMENT_CANDIDATES if c in loans.columns and c != schema.target]
        return usable[0] if usable else None

    @staticmethod
    def _segment_spec(loans: pl.DataFrame, column: str | None) -> dict[str, Any]:
        if column is None:
            return {"column": None, "kind": "none", "levels": ["all"], "edges": []}
        series = loans.get_column(column)
        if series.dtype.is_numeric() and series.n_unique() > _MAX_LEVELS:
            values = series.cast(pl.Float64).drop_nulls().to_numpy()
            edges = np.unique(np.quantile(values, np.linspace(0, 1, _NUMERIC_BINS + 1)[1:-1])).tolist()
            return {"column": column, "kind": "numeric", "levels": [f"bin{i}" for i in range(len(edges) + 1)], "edges": edges}
        counts = series.cast(pl.String).fill_null("__missing__").value_counts(sort=True)
        levels = counts.get_column(column).head(_MAX_LEVELS - 1).to_list()
        return {"column": column, "kind": "categorical", "levels": sorted(levels) + ["__other__"], "edges": []}

    @staticmethod
    def _segment_codes(loans: pl.DataFrame, spec: dict[str, Any]) -> np.ndarray:
        if spec["kind"] == "none":
            return np.zeros(loans.height, dtype=np.int64)
        if spec["column"] not in loans.columns:
            raise InvalidDataError(
                f"the loans lack the segment column '{spec['column']}' the baseline was fitted with.",
                column=spec["column"],
                fix="pass loans with the same static columns as the training loans.",
            )
        series = loans.get_column(spec["column"])
        if spec["kind"] == "numeric":
            values = series.cast(pl.Float64, strict=False).fill_null(strategy="mean").to_numpy()
            return np.searchsorted(np.asarray(spec["edges"]), np.nan_to_num(values), side="right").astype(np.int64)
        index = {level: i for i, level in enumerate(spec["levels"])}
        other = index["__other__"]
        labels = series.cast(pl.String).fill_null("__missing__").to_list()
        return np.fromiter((index.get(v, other) for v in labels), dtype=np.int64, count=len(labels))

    def _require(self) -> dict[str, Any]:
        if self._fitted is None:
            raise NotFittedError("the Markov baseline is not fitted.", fix="call fit(...) or MarkovBaseline.load(path) first.")
        return self._fitted

    # ------------------------------------------------------------------ use

    def sample(self, loans: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
        """Monthly histories for `loans` (e.g. synthetic loans with new ids), vectorised over loans.

        Each path stops at an absorbing state, at the loan's term, at the
        longest training history, or at the tape's cut-off, exactly as
        `LoanCascade.sample` stops them (`ObservationWindow`). Returns the
        canonical performance columns, plus ``reporting_month`` when the
        training history had one and a loan can be placed in time.
        """
        fitted = self._require()
        rng = np.random.default_rng(seed)
        months = int(fitted["months"])
        amounts = fitted.get("amounts", list(AMOUNTS))  # saved before optional amounts: both
        terms = loan_terms(
            loans, fallback_term=months, term_column=fitted["term_column"] or "term_months", need_amount=bool(amounts)
        )
        segments = self._segment_codes(loans, fitted["segment"])
        initial = np.asarray(fitted["initial"])
        transition = np.asarray(fitted["transition"])
        at_term = np.asarray(fitted["at_term"])
        balance_ratio = np.asarray(fitted["balance_ratio"])
        payment_ratio = np.asarray(fitted["payment_ratio"])
        n = loans.height
        # Saved before histories stopped at the cut-off: uncapped.
        window = ObservationWindow.from_dict(fitted.get("observation_window") or {
            "as_of": None, "source": "saved before sampled histories stopped at the cut-off",
            "offset": fitted["reporting_offset"]})
        first = window.first_months(loans, np.random.default_rng([int(seed), 1]))
        limits = window.limits(first)
        horizon = np.minimum(terms.term, months)
        if limits is not None:
            horizon = np.minimum(horizon, limits)
        states = np.full((n, months), -1, dtype=np.int64)
        balance = np.full((n, months), np.nan)
        payment = np.full((n, months), np.nan)
        previous_state = np.zeros(n, dtype=np.int64)
        previous_balance = terms.amount.copy()
        alive = horizon > 0
        for t in range(months):
            if not alive.any():
                break
            if t == 0:
                probs = initial[segments]
            else:
                probs = np.where(
                    ((t + 1) == terms.term)[:, None], at_term[previous_state], transition[segments, previous_state]
                )
            draw = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
            state = np.minimum(draw, N_STATES - 1)
            closing = np.isin(state, CLOSING_CODES)
            new_balance = np.where(closing, 0.0, previous_balance * balance_ratio[state])
            new_payment = np.where(closing, previous_balance, terms.installment) * payment_ratio[state]
            states[alive, t] = state[alive]
            balance[alive, t] = new_balance[alive]
            payment[alive, t] = new_payment[alive]
            previous_state, previous_balance = state, new_balance
            alive = alive & ~np.isin(state, ABSORBING_CODES) & ((t + 1) < horizon)
        ids = loans.get_column(fitted["id_column"] if fitted["id_column"] in loans.columns else "loan_id")
        return paths_to_frame(
            ids.cast(pl.String).to_numpy(), states, balance, payment, fitted["days_past_due"], amounts=amounts,
            first_month=first,
        )

    def log_likelihood(self, loans: pl.DataFrame, performance: pl.DataFrame) -> float:
        """Mean log-probability per month-to-month transition of `performance` (held-out histories).

        Only transitions out of non-absorbing states count, exactly the set
        `LoanCascade.log_likelihood` scores, so the two figures compare.
        """
        fitted = self._require()
        months = int(fitted["months"])
        ids = loans.get_column(fitted["id_column"] if fitted["id_column"] in loans.columns else "loan_id")
        paths = loan_paths(performance, ids.cast(pl.String).to_numpy(), months)
        rows, to_t, frm, to = paths.transitions()
        if rows.size == 0:
            raise InvalidDataError(
                "the histories hold no month-to-month transition to score.",
                column="period",
                fix="pass histories of at least two months for loans in the loans table.",
            )
        terms = loan_terms(
            loans, fallback_term=months, term_column=fitted["term_column"] or "term_months",
            need_amount=bool(fitted.get("amounts", AMOUNTS)),
        )
        segments = self._segment_codes(loans, fitted["segment"])
        transition = np.asarray(fitted["transition"])
        at_term = np.asarray(fitted["at_term"])
        probs = np.where(
            (to_t + 1) == terms.term[rows], at_term[frm, to], transition[segments[rows], frm, to]
        )
        return float(np.mean(np.log(np.maximum(probs, 1e-12))))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted chain as JSON in the folder `path` (created if needed); returns the file."""
        fitted = self._require()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / MODEL_FILE
        atomic_write_text(
            target, json.dumps({"smoothing": self.smoothing, "segmented": self.segmented, **fitted}, indent=1)
        )
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "MarkovBaseline":
        """Load a chain saved by `save` from the folder `path`."""
        target = Path(path) / MODEL_FILE
        if not target.is_file():
            raise NotFittedError(
                f"no saved Markov baseline at '{target}'.", file=str(target), fix="save one with MarkovBaseline.save(path)."
            )
        data = json.loads(target.read_text(encoding="utf-8"))
        # Saved before plain chains existed: a segmented chain.
        model = cls(smoothing=data.pop("smoothing"), segmented=data.pop("segmented", True))
        model._fitted = data
        return model
