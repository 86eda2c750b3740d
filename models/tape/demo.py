"""The demo portfolio generator: borrowers, loans and monthly performance histories.

`generate_portfolio` builds a credit book with a realistic joint structure and
`write_landing` drops it into a tenant's landing folder, so demo data enters
CreditTwin through the same door as a lender's upload.

How the book is made:

* A latent risk factor per borrower drives the credit score, income, existing
  debt, revolving utilisation and down payment, so score, grade, rate, DTI and
  LTV are correlated with the signs a credit analyst expects.
* Each loan gets a product (mortgage, auto, personal, card), a term, a grade set
  from the score and existing debt, a rate from product and grade, an annuity
  installment, a DTI that includes that installment, and an LTV for secured
  products only.
* Every loan is followed month by month from its first month on book (period 1)
  for `months` months or until an absorbing state: delinquency rolls
  current -> dpd30 -> dpd60 -> dpd90 -> default with cures back to current,
  prepayment only from current, and maturity at the loan's term. Monthly hazards
  depend on the loan's static risk, its product, months on book (seasoning) and
  the calendar month (a mild credit cycle, so vintages differ).
* The roll hazards share one intercept shift, found by root finding on the
  exact expected default rate of a subsample (forward propagation of each
  loan's state probabilities), so the simulated default rate lands on the
  requested target up to sampling noise.

All loans are simulated together as NumPy arrays, one step per month; the
polars frames are built once at the end. `oracle_default_probabilities` gives
each loan's exact default probability under the generator, the yardstick for
models fitted to a demo book.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.files import atomic_write_bytes
from models.sequences.states import STATE_INDEX, STATES

PRODUCTS: tuple[str, ...] = ("mortgage", "auto", "personal", "card")
GRADES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G")
REGIONS: tuple[str, ...] = (
    "north", "north-east", "north-west", "east", "west",
    "south", "south-east", "south-west", "central", "capital",
)
HOME_OWNERSHIP: tuple[str, ...] = ("rent", "own", "mortgage")
ORIGINATION_MONTHS = 24  # loans originate over the 24 months before start_date
MAX_MONTHS = 360  # the longest term: every loan has closed by then
MIN_MONTHS_TO_DEFAULT = 4  # current -> dpd30 -> dpd60 -> dpd90 -> default
TENANT_FILE_NAME = "tenant.yaml"
LANDING_FORMATS: tuple[str, ...] = ("parquet", "csv")

_MORTGAGE, _AUTO, _PERSONAL, _CARD = range(4)
_PRODUCT_SHARE = (0.25, 0.25, 0.30, 0.20)
# Term choices (months) and their probabilities per product; cards are revolving, modelled as 36 months.
_TERMS = (
    ((180, 240, 360), (0.15, 0.20, 0.65)),
    ((36, 48, 60, 72), (0.20, 0.25, 0.40, 0.15)),
    ((12, 24, 36, 60), (0.15, 0.30, 0.35, 0.20)),
    ((36,), (1.0,)),
)
# Grade cut points on the lender's standardised risk score: shares about 15/25/25/17/10/5/3 %.
_GRADE_CUTS = (-1.036, -0.253, 0.385, 0.915, 1.405, 1.881)
_BASE_RATE = (3.2, 4.5, 7.5, 14.0)  # percent, grade A, first vintage
_GRADE_SPREAD = (0.0, 1.8, 3.6, 6.0, 9.0, 12.5, 16.0)
_SPREAD_FACTOR = (0.35, 0.70, 1.00, 0.80)  # secured products price risk less steeply
_REGION_SHARE = (0.09, 0.08, 0.11, 0.09, 0.10, 0.12, 0.11, 0.08, 0.12, 0.10)
_REGION_INCOME = (-0.05, -0.08, -0.02, 0.00, 0.03, -0.04, 0.05, -0.03, 0.00, 0.20)  # log-income shift
_REGION_RISK = (0.05, 0.15, 0.00, -0.05, -0.10, 0.10, -0.05, 0.12, 0.00, -0.15)  # hazard logit shift
_PRODUCT_RISK = (-0.70, -0.10, 0.25, 0.45)
_PREPAY_BASE = (-5.0, -4.4, -4.0, -3.7)  # monthly prepayment logits: about 0.7 %, 1.2 %, 1.8 %, 2.4 %
_SECOND_LOAN_SHARE = 0.07  # share of loans taken by a borrower who already holds one

_CURRENT = STATE_INDEX["current"]
_DPD30 = STATE_INDEX["dpd30"]
_DPD90 = STATE_INDEX["dpd90"]
_DEFAULT = STATE_INDEX["default"]
_PREPAID = STATE_INDEX["prepaid"]
_MATURED = STATE_INDEX["matured"]
_MAX_MISSED = 5  # dpd90 lasts three months (90, 120, 150 days); the next month is a charge-off
_CALIBRATION_COARSE = 20_000  # loans in the first, coarse calibration solve
_CALIBRATION_FINE = 200_000  # loans in the refining solve


@dataclass
class DemoPortfolio:
    """A generated credit book.

    Attributes:
        loans: one row per loan (static attributes and `default_flag`).
        performance: long form, one row per loan-month: loan_id, period,
            reporting_month, status, days_past_due, balance, payment.
        tenant_config: the content of `tenant.yaml` for this book.
        calibration: how the default rate was calibrated: the target, the
            intercept `shift` found, the `expected_rate` it gives on the
            calibration subsample and the `achieved_rate` of the book.
    """

    loans: pl.DataFrame
    performance: pl.DataFrame
    tenant_config: dict[str, Any]
    calibration: dict[str, float] = field(default_factory=dict)


def demo_tenant_config() -> dict[str, Any]:
    """The `tenant.yaml` content of a demo book (a fresh dict on every call)."""
    return {
        "target": {"column": "default_flag", "positive": 1},
        "id_columns": ["loan_id", "borrower_id"],
        "quasi_identifiers": ["age", "region", "annual_income"],
        "sensitive_columns": ["default_flag"],
        "privacy": {"k": 5},
        # Business rules a synthetic book must keep in every row: a product's terms, and funding within the loan.
        "constraints": [
            {"type": "fixed_combinations", "columns": ["product", "term_months"]},
            {"type": "inequality", "low": "funded_amount", "high": "loan_amount"},
        ],
        "performance": {
            "loan_id": "loan_id",
            "period": "period",
            "status": "status",
            "days_past_due": "days_past_due",
            "balance": "balance",
            "payment": "payment",
        },
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, computed in place on `x` (callers pass temporaries)."""
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x


def _seasoning(t: int) -> float:
    """Logit shift of the roll-to-30 hazard at month on book `t`: low at first, peaking near 20 months."""
    return 0.8 * math.log(t + 1.0) - 0.04 * t - 1.0


def _prepay_seasoning(t: int) -> float:
    """Logit shift of the prepayment hazard: borrowers rarely refinance a loan they just took out."""
    return -1.0 * math.exp(-(t - 1) / 6.0)


def _credit_cycle(n_calendar_months: int) -> np.ndarray:
    """Logit shift of the roll-to-30 hazard per calendar month since the first origination month."""
    c = np.arange(n_calendar_months, dtype=np.float64)
    return 0.25 * np.sin(2.0 * np.pi * (c - 8.0) / 30.0)


@dataclass(frozen=True)
class _Hazards:
    """Per-loan inputs of the monthly transition model.

    `eta` is the static risk index (logit scale), `early` weights a payment
    shock in the first months on book (None in the linear book),
    `prepay_odds_inv` is exp(-logit) of the static prepayment hazard,
    `vintage` the origination month index, `term` the term in months and
    `cycle` the credit-cycle logit shift per calendar month.
    """

    eta: np.ndarray
    early: np.ndarray | None
    prepay_odds_inv: np.ndarray
    vintage: np.ndarray
    term: np.ndarray
    cycle: np.ndarray

    def subset(self, idx: np.ndarray) -> "_Hazards":
        early = None if self.early is None else self.early[idx]
        return _Hazards(self.eta[idx], early, self.prepay_odds_inv[idx], self.vintage[idx], self.term[idx], self.cycle)

    def delinquent_probs(self, shift: float) -> tuple[np.ndarray, ...]:
        """Roll and cure probabilities from dpd30, dpd60 and dpd90 (time-invariant).

        Returns (roll30, cure30, roll60, cure60, default90, cure90); a cure is
        competing with the roll, so roll + cure <= 1 and the rest stays.
        """
        eta = self.eta
        roll30 = _sigmoid(-1.1 + 0.7 * shift + 0.4 * eta)
        cure30 = (1.0 - roll30) * _sigmoid(0.6 - 0.3 * eta)
        roll60 = _sigmoid(-0.5 + 0.7 * shift + 0.4 * eta)
        cure60 = (1.0 - roll60) * _sigmoid(-0.3 - 0.3 * eta)
        default90 = _sigmoid(0.1 + 0.7 * shift + 0.3 * eta)
        cure90 = (1.0 - default90) * _sigmoid(-2.8 - 0.2 * eta)
        return roll30, cure30, roll60, cure60, default90, cure90

    def current_probs(self, t: int, roll_odds_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of rolling to dpd30 and of prepaying from current at month on book `t`.

        `roll_odds_inv` comes from `roll_odds_inverse(shift)`. Working with
        inverse odds, the logistic of a sum of logit terms is a product, which
        saves an exponential per loan and month.
        """
        month_terms = np.exp(-(_seasoning(t) + self.cycle[t : t + ORIGINATION_MONTHS]))
        scaled = roll_odds_inv * month_terms[self.vintage]
        if self.early is not None:
            scaled *= np.exp(self.early * -math.exp(-(t - 1) / 4.0))
        scaled += 1.0
        roll = np.reciprocal(scaled, out=scaled)
        prepay = self.prepay_odds_inv * math.exp(-_prepay_seasoning(t))
        prepay += 1.0
        np.reciprocal(prepay, out=prepay)
        prepay *= 1.0 - roll
        return roll, prepay

    def roll_odds_inverse(self, shift: float) -> np.ndarray:
        """exp(-logit) of the static part of the roll-to-30 hazard at intercept shift `shift`."""
        return np.exp(-(self.eta + (shift - 4.9)))

    def expected_default_rate(self, shift: float, months: int) -> float:
        """The exact expected share of loans that reach `default` within `months` months."""
        return float(self.default_probabilities(shift, months).mean())

    def default_probabilities(self, shift: float, months: int) -> np.ndarray:
        """Each loan's exact probability of reaching `default` within `months` months.

        Propagates each loan's probability of being current, dpd30, dpd60 or in
        its first, second or third month of dpd90, with the same transition
        probabilities the simulation draws from.
        """
        n = self.eta.shape[0]
        r30, c30, r60, c60, d90, c90 = self.delinquent_probs(shift)
        s30 = 1.0 - r30 - c30
        s60 = 1.0 - r60 - c60
        s90 = 1.0 - d90 - c90
        odds_inv = self.roll_odds_inverse(shift)
        p0 = np.ones(n)
        p1 = np.zeros(n)
        p2 = np.zeros(n)
        p3a = np.zeros(n)
        p3b = np.zeros(n)
        p3c = np.zeros(n)
        defaulted = np.zeros(n)
        for t in range(1, months + 1):
            roll, prepay = self.current_probs(t, odds_inv)
            in90 = p3a + p3b
            defaulted += in90 * d90 + p3c
            n0 = p0 * (1.0 - roll - prepay) + p1 * c30 + p2 * c60 + in90 * c90
            n1 = p0 * roll + p1 * s30
            n2 = p1 * r30 + p2 * s60
            n3a = p2 * r60
            n3b = p3a * s90
            n3c = p3b * s90
            matures = self.term == t
            if matures.any():
                for arr in (n0, n1, n2, n3a, n3b, n3c):
                    arr[matures] = 0.0
            p0, p1, p2, p3a, p3b, p3c = n0, n1, n2, n3a, n3b, n3c
        return defaulted


def _check_int(name: str, value: object, low: int, high: int | None, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidDataError(f"{name} must be an integer, got {type(value).__name__} {value!r}.", fix=fix)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidDataError(f"{name} must be {bound}, got {value}.", fix=fix)
    return int(value)


def _validate(n_loans: object, months: object, seed: object, target: object, start_date: object, nonlinear: object) -> None:
    _check_int("n_loans", n_loans, 1, None, "ask for at least one loan, e.g. n_loans=10_000.")
    _check_int(
        "months",
        months,
        MIN_MONTHS_TO_DEFAULT,
        MAX_MONTHS,
        f"a loan needs {MIN_MONTHS_TO_DEFAULT} months to go current -> dpd30 -> dpd60 -> dpd90 -> default and every "
        f"loan has closed by {MAX_MONTHS} months; use months between {MIN_MONTHS_TO_DEFAULT} and {MAX_MONTHS} (24 is usual).",
    )
    _check_int("seed", seed, 0, None, "use a non-negative integer seed.")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or not 0.0 < target < 0.5:
        raise InvalidDataError(
            f"target_default_rate must be a number strictly between 0 and 0.5, got {target!r}.",
            column="default_flag",
            fix="pass a share such as 0.08 for an 8 % default rate.",
        )
    if not isinstance(start_date, date):
        raise InvalidDataError(
            f"start_date must be a datetime.date, got {type(start_date).__name__}.", fix="pass e.g. date(2021, 1, 1)."
        )
    if not isinstance(nonlinear, bool):
        raise InvalidDataError(f"nonlinear must be True or False, got {nonlinear!r}.", fix="pass nonlinear=True or nonlinear=False.")


def _month_starts(start: date, count: int) -> np.ndarray:
    """Days since 1970-01-01 of the first day of `count` consecutive months, the first being 24 months before `start`."""
    first = start.year * 12 + (start.month - 1) - ORIGINATION_MONTHS
    epoch = date(1970, 1, 1)
    out = np.empty(count, dtype=np.int32)
    for i in range(count):
        y, m = divmod(first + i, 12)
        out[i] = (date(y, m + 1, 1) - epoch).days
    return out


def _labels(values: tuple[str, ...], codes: np.ndarray) -> pl.Series:
    """A String Series of `values[codes]`, gathered without building Python strings per row."""
    return pl.Series(values, dtype=pl.String).gather(codes.astype(np.uint32, copy=False))


def _ids(prefix: str, numbers: np.ndarray) -> pl.Series:
    """Zero-padded ids such as 'L00000001' for 1-based `numbers`."""
    digits = max(8, len(str(int(numbers.max())))) if numbers.size else 8
    return (
        pl.select(pl.lit(prefix) + pl.Series(numbers, dtype=pl.Int64).cast(pl.String).str.zfill(digits))
        .to_series()
    )


def _borrowers(n_borrowers: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Borrower attributes, all driven by a latent risk factor `z` (higher is riskier)."""
    z = rng.standard_normal(n_borrowers)
    age = np.clip(np.rint(44.0 - 4.0 * z + 12.5 * rng.standard_normal(n_borrowers)), 18, 85).astype(np.int64)
    employment = np.clip(
        np.rint((age - 18) * rng.beta(2.0, 3.0, n_borrowers) - 1.5 * z), 0, np.minimum(40, age - 18)
    ).astype(np.int64)
    region = rng.choice(len(REGIONS), size=n_borrowers, p=_REGION_SHARE)
    log_income = (
        10.9
        + np.asarray(_REGION_INCOME)[region]
        + 0.012 * (np.minimum(age, 60) - 40)
        - 0.22 * z
        + 0.45 * rng.standard_normal(n_borrowers)
    )
    income = np.round(np.clip(np.exp(log_income), 9_000.0, 2_000_000.0), 2)
    score = np.clip(np.rint(700.0 - 58.0 * z + 28.0 * rng.standard_normal(n_borrowers)), 300, 850).astype(np.int64)
    zs = (score - 700.0) / 64.4
    credit_limit = np.round(np.clip(income * 0.25 * np.exp(0.3 * zs + 0.3 * rng.standard_normal(n_borrowers)), 500.0, None), -2)
    utilisation = 1.2 * _sigmoid(-1.0 + 0.9 * z + 0.8 * rng.standard_normal(n_borrowers))
    # Home ownership before any mortgage in this book: older and richer borrowers own more.
    own_logit = -3.0 + 0.06 * (age - 18)
    mort_logit = -1.2 + 0.03 * np.minimum(age - 18, 30) + 0.6 * (log_income - 10.9) - 0.3 * z
    gumbel = rng.gumbel(size=(n_borrowers, 3))
    home = np.argmax(np.stack([np.zeros(n_borrowers), own_logit, mort_logit], axis=1) + gumbel, axis=1)
    return {
        "z": z,
        "age": age,
        "employment_years": employment,
        "region": region,
        "log_income": log_income,
        "annual_income": income,
        "credit_score": score,
        "score_z": zs,
        "credit_limit": credit_limit,
        "utilisation": utilisation,
        "revolving_balance": np.round(credit_limit * utilisation, 2),
        "home_ownership": home,
    }


def _risk_index(loan: dict[str, np.ndarray], nonlinear: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The static risk index (logit scale) of each loan and, in the nonlinear book, its early-months shock weight.

    `loan` holds the loan columns plus the borrower's latent risk `z`, standardised
    score `score_z` and revolving `utilisation`, per loan.
    """
    product, grade, ltv, dti = loan["product"], loan["grade"], loan["ltv"], loan["dti"]
    zd = (dti - 25.0) / 10.0
    zl = np.where(product == _MORTGAGE, (ltv - 80.0) / 12.0, np.where(product == _AUTO, (ltv - 95.0) / 15.0, 0.0))
    linear = (
        0.17 * (grade - 2.0)
        - 0.20 * loan["score_z"]
        + 0.18 * zd
        + 0.15 * zl
        + 0.30 * (loan["utilisation"] - 0.35)
        + np.asarray(_PRODUCT_RISK)[product]
        + np.asarray(_REGION_RISK)[loan["region"]]
        + 0.20 * loan["z"]
    )
    if not nonlinear:
        return linear, None
    # Risk that a segment (product x grade) average cannot see: a DTI x LTV cliff,
    # a U-shape in age, score thresholds that matter by product, payment shock.
    income, score = loan["annual_income"], loan["credit_score"]
    stretched = np.where(np.isnan(ltv), loan["utilisation"] > 0.75, np.nan_to_num(ltv) > 85.0)
    cliff = 1.5 * ((dti > 40.0) & stretched)
    u_age = 0.5 * ((loan["age"] - 47.0) / 14.0) ** 2 - 0.6
    unsecured = (product == _CARD) | (product == _PERSONAL)
    score_band = 1.0 * (unsecured & (score < 640)) - 0.8 * ((product == _MORTGAGE) & (score > 760))
    shock = 0.9 * ((income < 35_000.0) & (12.0 * loan["installment"] / income > 0.12))
    eta = 0.4 * linear + cliff + u_age + score_band + shock
    # Short job tenure and underwater car loans go bad early or not at all.
    underwater = (product == _AUTO) & (np.nan_to_num(ltv) > 110.0)
    early = 1.5 * (loan["employment_years"] < 2) + 0.8 * underwater
    return eta, early


def _static_book(n: int, rng: np.random.Generator, months: int, nonlinear: bool) -> tuple[dict[str, np.ndarray], _Hazards]:
    """Draw borrowers and loans; returns the loan columns as arrays and the hazard inputs."""
    # A few borrowers take a second loan, sharing their attributes across both.
    n_second = min(int(n * _SECOND_LOAN_SHARE), n // 2)
    n_borrowers = n - n_second
    owner = np.concatenate([np.arange(n_borrowers), rng.choice(n_borrowers, size=n_second, replace=False)])
    owner = owner[rng.permutation(n)]
    borrower = _borrowers(n_borrowers, rng)

    # Product tilted towards mortgages for higher incomes, then the product's terms.
    li = borrower["log_income"][owner] - 10.9
    prod_logits = np.log(np.asarray(_PRODUCT_SHARE)) + np.stack([0.8 * li, 0.1 * li, -0.3 * li, -0.3 * li], axis=1)
    product = np.argmax(prod_logits + rng.gumbel(size=(n, 4)), axis=1)
    term = np.empty(n, dtype=np.int64)
    for p, (choices, probs) in enumerate(_TERMS):
        sel = product == p
        term[sel] = rng.choice(np.asarray(choices), size=int(sel.sum()), p=probs)
    has_mortgage = np.zeros(n_borrowers, dtype=bool)
    has_mortgage[owner[product == _MORTGAGE]] = True
    borrower["home_ownership"] = np.where(has_mortgage, HOME_OWNERSHIP.index("mortgage"), borrower["home_ownership"])

    vintage_w = 1.0 + np.arange(ORIGINATION_MONTHS) / (ORIGINATION_MONTHS - 1)  # a growing book
    vintage = rng.choice(ORIGINATION_MONTHS, size=n, p=vintage_w / vintage_w.sum())
    day = rng.integers(0, 28, size=n)

    loan = {name: values[owner] for name, values in borrower.items() if name not in ("log_income",)}
    zb, inc = loan["z"], loan["annual_income"]
    other_debt = np.clip(12.0 + 5.5 * zb + 6.0 * rng.standard_normal(n), 0.0, 45.0)  # % of income, before this loan
    # The lender grades on what it sees: score and existing debt.
    lender = (-0.8 * loan["score_z"] + 0.35 * (other_debt - 12.0) / 8.0 + 0.49 * rng.standard_normal(n)) / 1.165
    grade = np.searchsorted(np.asarray(_GRADE_CUTS), lender)
    rate = (
        np.asarray(_BASE_RATE)[product]
        + np.asarray(_GRADE_SPREAD)[grade] * np.asarray(_SPREAD_FACTOR)[product]
        + 0.05 * vintage
        + 0.3 * rng.standard_normal(n)
    )
    rate = np.round(np.clip(rate, 1.0, 35.0), 2)

    amount_noise = rng.standard_normal(n)
    scale = inc / 60_000.0
    amount = np.select(
        [product == _MORTGAGE, product == _AUTO, product == _PERSONAL],
        [
            np.round(np.clip(inc * np.exp(math.log(3.2) + 0.3 * amount_noise), 30_000.0, 2_500_000.0), -3),
            np.round(np.clip(24_000.0 * scale**0.3 * np.exp(0.4 * amount_noise), 3_000.0, 150_000.0), -2),
            np.round(np.clip(9_000.0 * scale**0.4 * np.exp(0.7 * amount_noise), 1_000.0, 60_000.0), -2),
        ],
        np.round(np.clip(3_500.0 * np.exp(0.8 * amount_noise), 300.0, 40_000.0), -1),
    )
    partial = rng.random(n) < 0.12
    # Floor to the cent so a partly funded loan never exceeds its requested amount.
    funded = np.where(partial, np.floor(amount * rng.uniform(0.75, 1.0, n) * 100.0) / 100.0, amount)
    r = rate / 1200.0
    installment = np.round(funded * r / (1.0 - (1.0 + r) ** (-term)), 2)
    dti = np.round(np.clip(other_debt + 100.0 * installment / (inc / 12.0), 0.0, 65.0), 2)
    ltv_noise = rng.standard_normal(n)
    ltv = np.where(
        product == _MORTGAGE,
        np.clip(80.0 + 6.0 * zb + 9.0 * ltv_noise, 25.0, 97.0),
        np.where(product == _AUTO, np.clip(95.0 + 8.0 * zb + 14.0 * ltv_noise, 40.0, 140.0), np.nan),
    )
    loan.update(
        owner=owner,
        vintage=vintage,
        day=day,
        product=product,
        grade=grade,
        loan_amount=amount,
        funded_amount=funded,
        term_months=term,
        interest_rate=rate,
        installment=installment,
        dti=dti,
        ltv=np.round(ltv, 2),
    )
    eta, early = _risk_index(loan, nonlinear)
    prepay = np.asarray(_PREPAY_BASE)[product] + 0.08 * (rate - np.asarray(_BASE_RATE)[product]) + 0.2 * loan["score_z"]
    hazards = _Hazards(
        eta=eta,
        early=early,
        prepay_odds_inv=np.exp(-prepay),
        vintage=vintage,
        term=term,
        cycle=_credit_cycle(ORIGINATION_MONTHS + months + 1),
    )
    for latent in ("z", "score_z", "utilisation"):
        del loan[latent]
    return loan, hazards


def _logit(p: float) -> float:
    p = min(max(p, 1e-15), 1.0 - 1e-15)
    return math.log(p / (1.0 - p))


def _solve_shift(sample: _Hazards, months: int, target: float, lo: float, hi: float, tol: float) -> tuple[float, float]:
    """Illinois regula falsi for the shift whose expected default rate on `sample` equals `target`.

    The root is sought on the logit of the rate, which is close to linear in
    the shift, so a wide bracket converges in a few evaluations. Returns the
    shift and its expected rate, or (nan, nan) when the bracket holds no root.
    """
    goal = _logit(target)
    f_lo = _logit(sample.expected_default_rate(lo, months)) - goal
    f_hi = _logit(sample.expected_default_rate(hi, months)) - goal
    if f_lo > 0.0 or f_hi < 0.0:
        return math.nan, math.nan
    shift, rate = lo, math.nan
    side = 0
    for _ in range(100):
        shift = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        rate = sample.expected_default_rate(shift, months)
        f = _logit(rate) - goal
        if abs(rate - target) < tol or hi - lo < 1e-9:
            break
        if f > 0.0:
            hi, f_hi = shift, f
            if side == 1:
                f_lo /= 2.0
            side = 1
        else:
            lo, f_lo = shift, f
            if side == -1:
                f_hi /= 2.0
            side = -1
    return shift, rate


def _evenly_spaced(hazards: _Hazards, size: int) -> _Hazards:
    n = hazards.eta.shape[0]
    return hazards if n <= size else hazards.subset(np.linspace(0, n - 1, size).astype(np.int64))


def _refine_shift(fine: _Hazards, months: int, target: float, start: float, slope: float, tol: float) -> tuple[float, float]:
    """Secant steps on `fine` from `start`, the first step using `slope` (d rate / d shift) found on a subsample.

    Returns (nan, nan) when the steps do not settle, so the caller can fall back to bracketing.
    """
    prev = start
    f_prev = fine.expected_default_rate(prev, months) - target
    if abs(f_prev) < tol:
        return prev, f_prev + target
    shift = prev - f_prev / slope
    for _ in range(8):
        f = fine.expected_default_rate(shift, months) - target
        if abs(f) < tol:
            return shift, f + target
        if f == f_prev:
            break
        prev, f_prev, shift = shift, f, shift - f * (shift - prev) / (f - f_prev)
    return math.nan, math.nan


def _calibrate(hazards: _Hazards, months: int, target: float) -> tuple[float, float]:
    """The roll-hazard shift whose expected default rate equals `target`, and that rate.

    A bracketed solve on an evenly spaced subsample of 20,000 loans finds the
    shift; on larger books, secant steps on up to 200,000 loans (every loan of
    a book of that size) remove most of the subsample's composition noise,
    leaving the achieved rate off the target by the simulation's sampling noise.
    """
    coarse = _evenly_spaced(hazards, _CALIBRATION_COARSE)
    shift, expected = _solve_shift(coarse, months, target, -12.0, 12.0, 2e-6)
    if math.isnan(shift):
        lowest = coarse.expected_default_rate(-12.0, months)
        highest = coarse.expected_default_rate(12.0, months)
        raise InvalidDataError(
            f"a default rate of {100 * target:.3g}% cannot be reached in {months} months of history "
            f"(this book can reach {100 * lowest:.3g}% to {100 * highest:.3g}%).",
            column="default_flag",
            fix="choose a target_default_rate in that range, or simulate more months for a higher one.",
        )
    if hazards.eta.shape[0] > _CALIBRATION_COARSE:
        step = 0.05
        slope = (coarse.expected_default_rate(shift + step, months) - coarse.expected_default_rate(shift - step, months)) / (2 * step)
        fine = _evenly_spaced(hazards, _CALIBRATION_FINE)
        refined, refined_rate = _refine_shift(fine, months, target, shift, slope, 2e-5) if slope > 0 else (math.nan, math.nan)
        if math.isnan(refined):
            refined, refined_rate = _solve_shift(fine, months, target, -12.0, 12.0, 2e-5)
        if not math.isnan(refined):
            shift, expected = refined, refined_rate
    return shift, expected


def _simulate(
    hazards: _Hazards, months: int, shift: float, rng: np.random.Generator, funded: np.ndarray, rate: np.ndarray, installment: np.ndarray
) -> dict[str, np.ndarray]:
    """Draw every loan's monthly path; one vectorised step per month on book.

    Most loans are current in a given month, so the full-width arithmetic
    handles current loans and delinquent loans and the month's few cures and
    closures are patched in through index subsets.

    Returns arrays of shape (loans, months) keyed status, days_past_due,
    balance and payment; status -1 marks months not observed, and the other
    arrays hold arbitrary values there.
    """
    n = hazards.eta.shape[0]
    status = np.full((n, months), -1, dtype=np.int8)
    dpd = np.empty((n, months), dtype=np.int16)
    balance_out = np.empty((n, months), dtype=np.float64)
    payment_out = np.empty((n, months), dtype=np.float64)

    # Rows 1..3 hold, for a loan in dpd30/60/90, the probability of getting worse
    # (rolling on, or defaulting from dpd90) and of curing back to current.
    r30, c30, r60, c60, d90, c90 = hazards.delinquent_probs(shift)
    worse = np.stack([np.zeros(n), r30, r60, d90])
    better = np.stack([np.zeros(n), c30, c60, c90])
    del r30, c30, r60, c60, d90, c90
    odds_inv = hazards.roll_odds_inverse(shift)
    maturity_months = set(np.unique(hazards.term).tolist())

    q = 1.0 + rate / 1200.0
    qn = q ** hazards.term
    # Scheduled principal after k installments is a - b * q**k (annuity schedule).
    sched_a = funded * qn / (qn - 1.0)
    sched_b = funded / (qn - 1.0)
    state = np.zeros(n, dtype=np.int8)
    missed = np.zeros(n, dtype=np.int8)  # installments in arrears: 0 current, 1 dpd30, 2 dpd60, 3..5 dpd90
    qk = np.ones(n)  # q ** (installments paid so far)
    principal = funded.astype(np.float64, copy=True)
    for t in range(1, months + 1):
        u = rng.random(n)  # one draw per loan and month, alive or not, so a path does not depend on other loans
        alive = state < _DEFAULT
        if not alive.any():
            break
        p_worse, p_better = hazards.current_probs(t, odds_inv)
        late = np.flatnonzero((state >= _DPD30) & (state <= _DPD90))
        late_state = state[late]
        p_worse[late] = worse[late_state, late]
        p_better[late] = better[late_state, late]
        # Three months at dpd90 (150 days) is charged off.
        p_worse[late[(late_state == _DPD90) & (missed[late] >= _MAX_MISSED)]] = 1.0
        p_better += p_worse
        goes_worse = u < p_worse
        goes_worse &= alive
        stays = u >= p_better
        stays &= alive
        better_idx = np.flatnonzero(alive & ~goes_worse & ~stays)
        was_current = state[better_idx] == _CURRENT
        cure_idx = better_idx[~was_current]

        # Payments: staying current or at dpd30/60 pays one installment, a cure pays the
        # arrears plus this month, rolling on or staying at dpd90 pays nothing.
        paid = (stays & (state < _DPD90)).astype(np.int8)
        paid[cure_idx] = missed[cure_idx] + 1
        missed_old = missed.copy()
        missed += goes_worse
        missed += stays & (state == _DPD90)
        missed[cure_idx] = 0
        new = state + goes_worse.view(np.int8)
        new[better_idx] = np.where(was_current, _PREPAID, _CURRENT)
        if t in maturity_months:
            matures = np.flatnonzero(alive & (hazards.term == t) & (new != _DEFAULT))
            new[matures] = _MATURED

        qk *= np.where(paid == 1, q, 1.0)
        qk[cure_idx] *= q[cure_idx] ** paid[cure_idx]
        principal_new = sched_a - sched_b * qk
        month_balance = principal_new
        month_payment = paid * installment
        month_dpd = missed.astype(np.int16)
        month_dpd *= 30
        ended = np.flatnonzero(alive & (new >= _DEFAULT))
        if ended.size:
            ended_state = new[ended]
            defaulted = ended[ended_state == _DEFAULT]
            closed = ended[ended_state != _DEFAULT]
            month_balance = principal_new.copy()
            month_balance[defaulted] = principal[defaulted]
            month_balance[closed] = 0.0
            month_payment[closed] = principal[closed] * q[closed]
            month_dpd[defaulted] = 30 * (missed_old[defaulted].astype(np.int16) + 1)
            month_dpd[closed] = 0

        col = t - 1
        status[:, col] = np.where(alive, new, -1)
        dpd[:, col] = month_dpd
        balance_out[:, col] = month_balance
        payment_out[:, col] = month_payment
        state = new
        principal = principal_new
    return {"status": status, "days_past_due": dpd, "balance": balance_out, "payment": payment_out}


def _performance_frame(paths: dict[str, np.ndarray], loan_ids: pl.Series, vintage: np.ndarray, month_table: np.ndarray) -> pl.DataFrame:
    """Flatten the observed months into one row per loan-month, ordered by loan then period.

    Observed months are a prefix of each row, so boolean indexing in C order
    yields loan-major, period-ascending rows. `paths` is emptied as its arrays
    are flattened, so a million-loan book never holds both forms of every array.
    """
    observed = paths["status"] >= 0
    lengths = observed.sum(axis=1)
    total = int(lengths.sum())
    loan_row = np.repeat(np.arange(lengths.shape[0], dtype=np.uint32), lengths)
    period = np.arange(1, total + 1, dtype=np.int64)
    period -= np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns: dict[str, pl.Series] = {
        "loan_id": loan_ids.gather(loan_row),
        "period": pl.Series(period, dtype=pl.Int64),
    }
    reporting = vintage.astype(np.int32)[loan_row]
    del loan_row
    reporting += period.astype(np.int32)
    del period
    columns["reporting_month"] = pl.Series(month_table[reporting], dtype=pl.Int32).cast(pl.Date)
    del reporting
    columns["status"] = _labels(STATES, paths.pop("status")[observed])
    columns["days_past_due"] = pl.Series(paths.pop("days_past_due")[observed].astype(np.int64), dtype=pl.Int64)
    for name in ("balance", "payment"):
        flat = paths.pop(name)[observed]
        np.round(flat, 2, out=flat)
        columns[name] = pl.Series(flat, dtype=pl.Float64)
        del flat
    return pl.DataFrame(columns)


def generate_portfolio(
    n_loans: int,
    *,
    months: int = 24,
    seed: int = 0,
    target_default_rate: float = 0.08,
    start_date: date = date(2021, 1, 1),
    nonlinear: bool = False,
) -> DemoPortfolio:
    """Generate a seeded demo credit book: loans and their monthly performance.

    Args:
        n_loans: number of loans (at least 1); about 7 % of loans belong to a
            borrower who holds two.
        months: months of history per loan, from its first month on book
            (period 1, the month after origination); a path stops earlier at
            default, prepayment or maturity. Between 4 (the fastest way to
            default) and 360.
        seed: seed of the NumPy PCG64 generator; the same arguments give
            identical frames.
        target_default_rate: the share of loans whose path reaches `default`
            within their history, strictly between 0 and 0.5. The roll hazards
            are shifted so the expected rate equals it; the achieved rate is
            within sampling noise (about 0.1 percentage point at 100k loans).
        start_date: loans originate over the 24 months before this date, so
            vintages (and the credit cycle they meet) differ.
        nonlinear: when True the monthly hazards depend non-linearly on the
            static attributes (a DTI x LTV cliff, a U-shape in age, product-
            specific score thresholds, payment shock and an early-months hazard
            for short employment or underwater auto loans), so a model that
            conditions on each loan's attributes beats a segment-level Markov
            chain. The loans table is the same as with False for the same seed.

    Returns:
        A `DemoPortfolio` with `loans`, `performance`, `tenant_config` and the
        `calibration` figures.

    Raises:
        InvalidDataError: an argument is out of range, naming it and the fix.
    """
    _validate(n_loans, months, seed, target_default_rate, start_date, nonlinear)
    rng = np.random.Generator(np.random.PCG64(seed))
    cols, hazards = _static_book(n_loans, rng, months, nonlinear)
    shift, expected = _calibrate(hazards, months, float(target_default_rate))
    paths = _simulate(hazards, months, shift, rng, cols["funded_amount"], cols["interest_rate"], cols["installment"])
    default_flag = (paths["status"] == _DEFAULT).any(axis=1).astype(np.int64)

    month_table = _month_starts(start_date, ORIGINATION_MONTHS + months + 1)
    loan_ids = _ids("L", np.arange(1, n_loans + 1)).rename("loan_id")
    origination = month_table[cols["vintage"]] + cols["day"].astype(np.int32)
    loans = pl.DataFrame(
        {
            "loan_id": loan_ids,
            "borrower_id": _ids("B", cols["owner"] + 1),
            "origination_date": pl.Series(origination, dtype=pl.Int32).cast(pl.Date),
            "product": _labels(PRODUCTS, cols["product"]),
            "grade": _labels(GRADES, cols["grade"]),
            "credit_score": pl.Series(cols["credit_score"], dtype=pl.Int64),
            "annual_income": pl.Series(cols["annual_income"], dtype=pl.Float64),
            "employment_years": pl.Series(cols["employment_years"], dtype=pl.Int64),
            "age": pl.Series(cols["age"], dtype=pl.Int64),
            "region": _labels(REGIONS, cols["region"]),
            "home_ownership": _labels(HOME_OWNERSHIP, cols["home_ownership"]),
            "loan_amount": pl.Series(cols["loan_amount"], dtype=pl.Float64),
            "funded_amount": pl.Series(cols["funded_amount"], dtype=pl.Float64),
            "term_months": pl.Series(cols["term_months"], dtype=pl.Int64),
            "interest_rate": pl.Series(cols["interest_rate"], dtype=pl.Float64),
            "installment": pl.Series(cols["installment"], dtype=pl.Float64),
            "dti": pl.Series(cols["dti"], dtype=pl.Float64),
            "ltv": pl.Series(cols["ltv"], dtype=pl.Float64, nan_to_null=True),
            "revolving_balance": pl.Series(cols["revolving_balance"], dtype=pl.Float64),
            "credit_limit": pl.Series(cols["credit_limit"], dtype=pl.Float64),
            "default_flag": pl.Series(default_flag, dtype=pl.Int64),
        }
    )
    performance = _performance_frame(paths, loan_ids, cols["vintage"], month_table)
    calibration = {
        "target": float(target_default_rate),
        "shift": float(shift),
        "expected_rate": float(expected),
        "achieved_rate": float(default_flag.mean()),
    }
    return DemoPortfolio(loans=loans, performance=performance, tenant_config=demo_tenant_config(), calibration=calibration)


def oracle_default_probabilities(
    n_loans: int,
    *,
    months: int = 24,
    seed: int = 0,
    target_default_rate: float = 0.08,
    start_date: date = date(2021, 1, 1),
    nonlinear: bool = False,
) -> np.ndarray:
    """The exact probability that each loan of the matching book reaches `default` in its window.

    With the same arguments as `generate_portfolio`, entry i belongs to the
    loan in row i of that book's `loans`: it is what a perfect model of the
    generator would predict from the loan's attributes, the yardstick for
    models fitted to the book (a segment-level Markov chain, an LSTM on
    statics). Computed by propagating state probabilities, not by sampling.

    Raises:
        InvalidDataError: an argument is out of range, as for `generate_portfolio`.
    """
    _validate(n_loans, months, seed, target_default_rate, start_date, nonlinear)
    rng = np.random.Generator(np.random.PCG64(seed))
    _, hazards = _static_book(n_loans, rng, months, nonlinear)
    shift, _ = _calibrate(hazards, months, float(target_default_rate))
    return hazards.default_probabilities(shift, months)


def write_landing(portfolio: DemoPortfolio, tenant_dir: Path, *, fmt: str = "parquet") -> list[Path]:
    """Write loans.<fmt>, performance.<fmt> and tenant.yaml into `tenant_dir` atomically.

    All three files are encoded in memory first, so a failure to encode them
    leaves the previous upload untouched; each is then written atomically
    (`models.files.atomic_write_bytes`), so a reader never sees half a file.
    tenant.yaml and the performance file go in before the loans file, because
    the landing sensor treats the loans file as the upload. A loans or
    performance file of the other format is removed just before the writes,
    since the landing zone refuses a folder holding both.

    Args:
        portfolio: the book from `generate_portfolio`.
        tenant_dir: the tenant's landing folder; created when missing.
        fmt: "parquet" or "csv".

    Returns:
        The paths written: [loans, performance, tenant.yaml].

    Raises:
        InvalidDataError: `fmt` is not parquet or csv, or `tenant_dir` is a link
            or not a folder.
    """
    import yaml

    if fmt not in LANDING_FORMATS:
        raise InvalidDataError(f"unknown landing format {fmt!r}.", fix=f"use one of {list(LANDING_FORMATS)}.")
    tenant_dir = Path(tenant_dir)
    if tenant_dir.is_symlink() or (tenant_dir.exists() and not tenant_dir.is_dir()):
        raise InvalidDataError(
            f"landing folder {tenant_dir} is a link or not a folder.", fix="point write_landing at a plain folder under the data root."
        )
    tenant_dir.mkdir(parents=True, exist_ok=True)

    def encoded(frame: pl.DataFrame) -> bytes:
        buffer = io.BytesIO()
        if fmt == "parquet":
            frame.write_parquet(buffer)
        else:
            frame.write_csv(buffer)
        return buffer.getvalue()

    config_path = tenant_dir / TENANT_FILE_NAME
    perf_path = tenant_dir / f"performance.{fmt}"
    loans_path = tenant_dir / f"loans.{fmt}"
    files = (
        (config_path, yaml.safe_dump(portfolio.tenant_config, sort_keys=False).encode("utf-8")),
        (perf_path, encoded(portfolio.performance)),
        (loans_path, encoded(portfolio.loans)),
    )
    other = next(f for f in LANDING_FORMATS if f != fmt)
    for stem in ("performance", "loans"):
        stale = tenant_dir / f"{stem}.{other}"
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    for target, data in files:
        atomic_write_bytes(target, data)
    return [loans_path, perf_path, config_path]
