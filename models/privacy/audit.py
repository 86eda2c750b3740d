"""The privacy audit of a released (anonymized) synthetic portfolio: `run_audit`.

The audit compares the released table with the train split (members: the rows
the generator saw) and the holdout (non-members), drawn at the same sizes and
on fixed-size seeded samples for large books, once for every measure
(`models.privacy.distance.draw_samples`), and gathers in one `AuditReport`:

* **Distance to closest record** (`models.privacy.distance`): the share of
  released rows closer to train than to holdout, exact copies of records
  unique in the tape, and the nearest-neighbour distance ratio, under a
  mixed-type distance that reads generalised labels.
* **Membership inference** (`models.privacy.membership`): a DOMIAS-style
  density-ratio attack and a plain distance attack, with AUC and TPR at
  0.1 % FPR and their intervals.
* **Attribute inference** (`models.privacy.inference`): CreditTwin's own
  attack on the default flag and the declared sensitive columns.
* **Attack-based risks** (`models.privacy.anonymeter_attacks`): anonymeter's
  singling-out, linkability and inference attacks, when it is installed.
* **The DP bound** (`models.privacy.membership.dp_auc_bound`): the largest
  attacker AUC an (epsilon, delta)-DP release allows, beside the empirical AUC.
* **k and l** (`measure_anonymity`): the smallest equivalence class over the
  quasi-identifiers of the release and, for each sensitive column (the target
  and tenant.yaml's `sensitive_columns`, chosen by
  `models.privacy.anonymize.l_diversity_scope`), the fewest distinct non-null values in
  one class; l is the smallest of them.

`models.privacy.policy.evaluate_policy` then applies the tenant's `AuditPolicy`
to the report; its attack rules are `models.privacy.leak.leak_test`s.

Small books: the audit never refuses a book for its size. It computes what is
meaningful, widens the intervals of small samples (Wilson intervals on an
effective size for the AUC), says so in `warnings`, and skips an attack that
cannot run (membership inference needs at least 2 members, 2 non-members and
1 reference row; attribute inference and anonymeter at least 5 rows per
table), saying why. A non-leaky book of a few hundred loans can be certified
when every required attack has the power to see a complete leak (a default
flag of 20 % at 400 loans does; a 3 % flag does not, and its inference rule is
then "not measured", which fails under `AuditPolicy.require_measured`); copies fail at any
size on the exact-match and DCR rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.privacy.anonymeter_attacks import anonymeter_from_samples
from models.privacy.anonymize import default_quasi_identifiers, l_diversity_scope
from models.privacy.distance import dcr_from_samples, draw_samples
from models.privacy.inference import MIN_ATTACK_ROWS, inference_from_samples, secret_columns
from models.privacy.membership import FPR_TARGET, N_BOOTSTRAP, dp_auc_bound, dp_tpr_bound, membership_from_samples
from models.tape.schema import TableSchema


@dataclass
class AuditConfig:
    """How the audit samples and attacks.

    Attributes:
        sample_size: rows drawn (seeded, without replacement) from each of the
            released table, the train split and the holdout when they are
            larger; train and holdout are drawn at the same size.
        n_attacks: anonymeter attacks per evaluator (2,000 in production).
        seed: seed of every random draw of the audit.
        run_anonymeter: False skips the three anonymeter attacks.
        anonymeter_sample_size: rows of each table given to anonymeter (drawn
            from the samples above). Its neighbour search is brute force, so
            its time grows with attacks x rows, while its intervals depend on
            the number of attacks: 5,000 rows keep 2,000 attacks meaningful at
            half the time of 10,000.
        n_jobs: threads for anonymeter's neighbour searches (-1: all cores).
        n_bootstrap: bootstrap replicates of the TPR-at-FPR interval.
    """

    sample_size: int = 10_000
    n_attacks: int = 2000
    seed: int = 0
    run_anonymeter: bool = True
    anonymeter_sample_size: int = 5_000
    n_jobs: int = -1
    n_bootstrap: int = N_BOOTSTRAP

    def validate(self, tenant: str | None = None) -> None:
        """Raise `InvalidDataError` when a setting is out of range (naming its tenant.yaml key under `audit:`)."""
        for name, minimum, default in (
            ("sample_size", 10, "10,000"),
            ("n_attacks", 1, "2,000"),
            ("anonymeter_sample_size", MIN_ATTACK_ROWS, "5,000"),
            ("n_bootstrap", 10, "200"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidDataError(
                    f"audit {name} must be an integer of at least {minimum}, got {value!r}.",
                    tenant=tenant,
                    fix=f"set audit.{name} in tenant.yaml to {minimum} or more ({default} is the default)."
                    if name != "n_bootstrap"
                    else f"set n_bootstrap to {minimum} or more ({default} is the default).",
                )


@dataclass
class AuditReport:
    """Everything the audit measured, JSON-ready through `to_dict`.

    Attributes:
        dcr: distance-to-closest-record figures
            (`models.privacy.distance.distance_to_closest_record`).
        mia: membership-inference figures (`models.privacy.membership.membership_inference`).
        anonymeter: anonymeter risks (`models.privacy.anonymeter_attacks.anonymeter_risks`);
            `{"skipped": reason}` when the attacks did not run.
        dp: the DP spend and the bound it implies, or None without DP.
        sizes: rows of each input and of each sample used.
        warnings: every caveat a reviewer should read beside the figures.
        anonymity: achieved k and l of the release (`measure_anonymity`).
        inference: CreditTwin's own attribute-inference attack
            (`models.privacy.inference.attribute_inference`): per secret, the success counts on members
            and controls; `{"not_applicable": reason}` without a secret,
            `{"skipped": reason}` when the book is too small.
    """

    dcr: dict
    mia: dict
    anonymeter: dict
    dp: dict | None
    sizes: dict
    warnings: list[str]
    anonymity: dict = field(default_factory=dict)
    inference: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (non-finite floats become None)."""
        return jsonable(asdict(self))


# --------------------------------------------------------------------------- differential privacy


def _dp_section(dp_spent: tuple[float, float] | None, mia: dict[str, Any], tenant: str | None) -> dict[str, Any] | None:
    if dp_spent is None:
        return None
    try:
        epsilon, delta = (float(v) for v in dp_spent)
    except (TypeError, ValueError):
        raise InvalidDataError(
            f"dp_spent must be a pair (epsilon, delta), got {dp_spent!r}.",
            tenant=tenant,
            fix="pass the totals read from the tenant's privacy ledger.",
        ) from None
    try:
        bound = dp_auc_bound(epsilon, delta)
    except InvalidDataError as error:
        raise error.with_context(tenant=tenant)
    section = {
        "epsilon": epsilon,
        "delta": delta,
        "auc_bound": bound,
        "tpr_bound_at_fpr": dp_tpr_bound(epsilon, delta, FPR_TARGET),
        "fpr": FPR_TARGET,
        "empirical_auc": mia.get("auc"),
        "empirical_tpr_at_fpr": mia.get("tpr_at_fpr"),
    }
    if "auc_ci" in mia:
        # The bound holds for the true AUC, so only an interval wholly above it
        # is evidence that the accounting or the mechanism is wrong.
        section["empirical_within_bound"] = bool(mia["auc_ci"][0] <= bound)
    return section


# --------------------------------------------------------------------------- k and l


def measure_anonymity(
    released: pl.DataFrame, schema: TableSchema, sensitive_columns: list[str] | None = None,
    quasi_identifiers: list[str] | None = None,
) -> dict[str, Any]:
    """Achieved k (smallest class over the quasi-identifiers) and l, overall and per sensitive column.

    Quasi-identifiers are `quasi_identifiers` (those the anonymizer enforced
    k on, `AnonymizationResult.quasi_identifiers`), else the ones it picks when
    the tenant declares none (`models.privacy.anonymize.default_quasi_identifiers`:
    the schema's `quasi_identifier` columns, else the columns whose names say
    they describe the borrower), that the release carries; sensitive columns are those `models.privacy.anonymize.l_diversity_scope`
    picks (the target, the schema's `sensitive` columns and `sensitive_columns`)
    that the release carries and that are not quasi-identifiers. Per column,
    l is the fewest distinct non-null values in a class (``l_by_column``);
    ``l`` is the smallest of them. A figure is None when its columns are absent.
    """
    if quasi_identifiers is None:
        quasi_identifiers = default_quasi_identifiers(schema)
    qis = [c for c in quasi_identifiers if c in released.columns]
    scope = l_diversity_scope(schema, released.columns, 1, declared=list(sensitive_columns or []))
    sensitive = [name for name in scope.columns if name not in qis]
    result: dict[str, Any] = {"quasi_identifiers": qis, "sensitive": sensitive, "k": None, "l": None,
                              "l_by_column": {}, "sensitive_not_released": list(scope.not_released), "classes": None}
    if not qis or released.height == 0:
        return result
    aggregations = [pl.len().alias("__size")]
    aggregations += [pl.col(c).drop_nulls().n_unique().alias(f"__l_{i}") for i, c in enumerate(sensitive)]
    classes = released.group_by(qis).agg(aggregations)
    result["k"] = int(classes.get_column("__size").min())
    result["classes"] = classes.height
    result["l_by_column"] = {c: int(classes.get_column(f"__l_{i}").min()) for i, c in enumerate(sensitive)}
    if sensitive:
        result["l"] = min(result["l_by_column"].values())
    return result


# --------------------------------------------------------------------------- the whole audit


def run_audit(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    config: AuditConfig,
    sensitive_columns: list[str] | None = None,
    dp_spent: tuple[float, float] | None = None,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
    quasi_identifiers: list[str] | None = None,
) -> AuditReport:
    """Audit a released portfolio against its train split (members) and holdout (non-members).

    Samples are drawn once (`models.privacy.distance.draw_samples`) and shared
    by every measure.

    Args:
        released: the released (anonymized) table; generalised quasi-identifier
            columns may hold range or group labels.
        train: the train split the generator was fitted on.
        holdout: the holdout split the generator never saw.
        schema: the tape's schema (identifiers and text are not compared).
        config: sampling, seed and attack settings.
        sensitive_columns: secrets for anonymeter's inference attack and for l,
            beside the target and the schema's sensitive columns.
        dp_spent: the (epsilon, delta) spent on this release per the ledger, or
            None when the tenant is not under DP.
        tenant: named in errors.
        generalisations: `AnonymizationResult.generalisations` of the release;
            it names the members of large category groups (whose labels are
            hashed); without it such a label matches no real category.
        quasi_identifiers: the columns k-anonymity was enforced on
            (`AnonymizationResult.quasi_identifiers`); None measures k on those
            the anonymizer picks from the schema (`measure_anonymity`).

    Returns:
        An `AuditReport`; every caveat (small samples, skipped attacks, an
        unresolvable 0.1 % FPR) is in its `warnings`.

    Raises:
        InvalidDataError: an empty table, no comparable column, an unreadable
            released label, a bad setting, a sensitive column not audited, or a
            malformed `dp_spent`.
    """
    config.validate(tenant)
    samples = draw_samples(
        released, train, holdout, schema,
        sample_size=config.sample_size, seed=config.seed, tenant=tenant, generalisations=generalisations,
    )
    secrets = secret_columns(schema, samples.columns, sensitive_columns, tenant)
    notes = list(samples.warnings)
    dcr = dcr_from_samples(samples, schema, seed=config.seed)
    mia = membership_from_samples(samples, seed=config.seed, n_bootstrap=config.n_bootstrap)
    notes.extend(mia.pop("warnings"))
    inference = inference_from_samples(samples, schema, secrets)
    notes.extend(value for key, value in inference.items() if key in ("skipped", "not_applicable"))
    if config.run_anonymeter:
        anonymeter = anonymeter_from_samples(
            samples, schema, n_attacks=config.n_attacks, secrets=secrets, seed=config.seed, n_jobs=config.n_jobs,
            rows=config.anonymeter_sample_size,
        )
        notes.extend(anonymeter.pop("warnings"))
    else:
        anonymeter = {"skipped": "not measured: anonymeter attacks disabled by the audit configuration "
                      "(audit.run_anonymeter: false)"}
    dp = _dp_section(dp_spent, mia, tenant)
    if dp is not None and dp.get("empirical_within_bound") is False:
        notes.append(
            f"the empirical MIA AUC interval lies above the bound {dp['auc_bound']:.3f} implied by epsilon="
            f"{dp['epsilon']:.4g}, delta={dp['delta']:.3g}: the privacy accounting or the DP mechanism is suspect"
        )
    return AuditReport(
        dcr=dcr,
        mia=mia,
        anonymeter=anonymeter,
        dp=dp,
        sizes=samples.sizes,
        warnings=notes,
        anonymity=measure_anonymity(released, schema, sensitive_columns, quasi_identifiers),
        inference=inference,
    )


def jsonable(value: Any) -> Any:
    """`value` with plain JSON types: numpy scalars unwrapped, non-finite floats as None, dates as ISO text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
