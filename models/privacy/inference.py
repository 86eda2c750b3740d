"""CreditTwin's own attribute-inference attack: is a member's secret easier to guess from the release?

`attribute_inference` runs on every install (it needs no optional library).
For each secret (the default flag and the declared sensitive columns,
`secret_columns`) the attacker knows every other compared column of a target
record, takes the nearest released row on those columns under the audit's
distance (`models.privacy.distance`) and guesses its secret. Targets are every
sampled train row (members) and as many holdout rows (controls), so the attack
count grows with the book up to the holdout size; the release leaks when
members' secrets are guessed more often than controls' (`models.privacy.leak`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.privacy.distance import (
    TIE_TOLERANCE,
    ColumnPlan,
    EncodedTable,
    Samples,
    draw_samples,
    encode_table,
    nearest_rows,
    pair_distances,
)
from models.privacy.leak import leak_test
from models.tape.schema import TableSchema

# Unique rows each table needs before attribute inference or anonymeter attacks it.
MIN_ATTACK_ROWS = 5
# A numeric secret counts as guessed within this distance (in IQR units, as the
# audit's distance scales it): 5 % of the interquartile range.
INFERENCE_TOLERANCE = 0.05


def inference_from_samples(samples: Samples, schema: TableSchema, secrets: list[str]) -> dict[str, Any]:
    """`attribute_inference` of `secrets` on samples already drawn (`draw_samples`)."""
    if not secrets:
        return {"not_applicable": "the tape declares no default flag and no sensitive column, so there is no secret "
                "to infer; declare target or sensitive_columns in tenant.yaml to have it measured"}
    members, controls = samples.frames["train"], samples.frames["holdout"]
    smallest = min(samples.released.n, members.height, controls.height)
    if smallest < MIN_ATTACK_ROWS:
        return {"skipped": (
            f"attribute inference skipped: it needs at least {MIN_ATTACK_ROWS} unique rows in each of the "
            f"released, train and holdout tables, the smallest has {smallest}; upload a larger book"
        )}
    aux = [plan for plan in samples.plans if plan.name not in secrets]
    if not aux:
        return {"skipped": "attribute inference skipped: every compared column is a secret, so the attacker knows "
                "nothing to link a record by"}
    released = samples.frames["released"]

    def encode(frame: pl.DataFrame, plans: list[ColumnPlan], is_released: bool) -> EncodedTable:
        return encode_table(frame, plans, schema, released=is_released, tenant=None)

    rel_aux = encode(released, aux, True)
    guesses = {}
    for name, frame in (("members", members), ("controls", controls)):
        guesses[name] = nearest_rows(aux, encode(frame, aux, False), rel_aux, 1)[1][:, 0]
    out: dict[str, Any] = {
        "attack": "the secret of the nearest released row on every other compared column",
        "tolerance": f"numeric secrets within {INFERENCE_TOLERANCE:g} IQR, categories equal (or covered by a group)",
        "secrets": {},
    }
    for secret in secrets:
        plan = [p for p in samples.plans if p.name == secret]
        rel_secret = encode(released, plan, True)
        entry: dict[str, Any] = {}
        for name, frame in (("members", members), ("controls", controls)):
            target = encode(frame, plan, False)
            rows = np.arange(target.n)
            distance = pair_distances(plan, target, rel_secret, rows, guesses[name])
            entry[f"{name}_attacked"] = int(target.n)
            entry[f"{name}_guessed"] = int(np.sum(distance <= INFERENCE_TOLERANCE + TIE_TOLERANCE))
        rates = leak_test(entry["members_guessed"], entry["members_attacked"], entry["controls_guessed"],
                          entry["controls_attacked"], 0.0)
        entry.update({key: rates.get(key) for key in ("member_rate", "control_rate", "risk", "risk_low", "risk_high")})
        out["secrets"][secret] = entry
    return out


def attribute_inference(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sensitive_columns: list[str] | None = None,
    sample_size: int = 10_000,
    seed: int = 0,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """CreditTwin's own attribute-inference attack: is a member's secret easier to guess from the release?

    The attacker knows every compared column of a target record except the
    secrets (the target, the schema's sensitive columns and
    `sensitive_columns`), finds the nearest released row on those columns
    with the audit's mixed-type distance, and guesses that row's secret.
    Targets are the sampled train rows (members) and as many holdout rows
    (controls). It needs no optional library.

    Returns:
        `secrets`: per secret, attacked and guessed counts for members and
        controls, both rates, and the risk with its one-sided 95 % bounds (see
        `leak_test`); `{"not_applicable": reason}` without a secret;
        `{"skipped": reason}` when a table has fewer than 5 unique rows.

    Raises:
        InvalidDataError: as `models.privacy.distance.distance_to_closest_record`, or a sensitive
            column is not audited.
    """
    samples = draw_samples(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    return inference_from_samples(samples, schema, secret_columns(schema, samples.columns, sensitive_columns, tenant))


def secret_columns(schema: TableSchema, columns: list[str], sensitive_columns: list[str] | None, tenant: str | None) -> list[str]:
    """The secrets the inference attacks guess: the target, the schema's sensitive columns and `sensitive_columns`.

    Raises:
        InvalidDataError: a secret is not among the audited `columns`.
    """
    secrets = []
    for name in ([schema.target] if schema.target else []) + schema.with_role("sensitive") + list(sensitive_columns or []):
        if name and name not in secrets:
            if name not in columns:
                raise InvalidDataError(
                    "a sensitive column is not among the audited columns of the released, train and holdout tables.",
                    tenant=tenant,
                    column=name,
                    fix="declare as sensitive only columns of the loans table that the release keeps.",
                )
            secrets.append(name)
    return secrets
