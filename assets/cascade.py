"""`lstm_cascade`: the monthly performance model of a tenant's loans, beside its Markov baseline."""

import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import (
    charge_privacy,
    not_measured,
    history_of,
    paid_release,
    png_markdown,
    split_of,
    store_paid_release,
    tape_config,
    tape_schema,
    tenant_errors,
    train_split,
    upload_file,
)
from assets.policies import EXTERNAL_SERVICE_RETRY, TRAINING_POOL
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings
from resources.ledger import PrivacyLedgerResource
from resources.storage import Artifact

CASCADE_DIR = "cascade"
MARKOV_DIR = "markov"


class LstmCascadeConfig(dg.Config):
    """Training settings of the cascade."""

    epochs: int = Field(default=30, description="Most passes over the training loans (early stopping usually ends sooner).")
    hidden_size: int = Field(default=64, description="Width of the recurrent layer.")
    cell: str = Field(default="lstm", description="'lstm' or 'gru'.")
    seed: int = Field(default=0, description="Seeds initialisation, shuffling and the validation split.")
    device: str = Field(default="auto", description="'auto' (a GPU when torch finds one), 'cpu' or 'cuda'.")
    max_loans: Optional[int] = Field(
        default=None, description="Train on a seeded sample of at most this many loans (None: all train loans)."
    )
    batch_size: int = Field(default=128, description="Loans (borrowers under DP-SGD) per optimiser step.")
    max_months_under_dp: int = Field(
        default=36, description="Under privacy.epsilon: the longest path modelled (public, not read from the data)."
    )


def _public_domains(tenant_config) -> dict:
    """The tenant's declared domains completed by the documented defaults (both public)."""
    from models.twin.dp import DEFAULT_DOMAINS

    return {**DEFAULT_DOMAINS, **tenant_config.privacy.domains}


def _plan_dpsgd(raw_loan_tape, tenant_config, cascade_config, train_loans, train_perf, unit):
    """The DP-SGD spend of the cascade fit, from public counts: (mechanism spec, number of borrowers)."""
    import polars as pl

    from models.twin.dp import bound_units, plan_dpsgd

    id_column = tape_schema(raw_loan_tape).id_column
    with_history = train_loans.filter(
        pl.col(id_column).cast(pl.String).is_in(train_perf.get_column("loan_id").unique().implode())
    )
    n_units = bound_units(with_history, unit).height
    epsilon = tenant_config.privacy.dpsgd_epsilon or tenant_config.privacy.epsilon
    from models.privacy.accounting import release_delta

    delta = release_delta(tenant_config.privacy.delta, n_units)
    return plan_dpsgd(n_units, cascade_config.batch_size, cascade_config.epochs, epsilon, delta), n_units


# Under DP, figures measured on real loans (the holdout's likelihoods, transition matrix and default rate, the
# training counts) are kept in the stored summary for the tenant's own review, marked so, and never shown as metadata.
INTERNAL_NOTE = "computed on real data; not covered by the DP guarantee; not exported"


def _check_result(summary: dict) -> dg.AssetCheckResult:
    ll = summary["holdout_log_likelihood"]
    metadata = {"cascade": ll["cascade"], "markov": ll["markov"], "margin": ll["cascade"] - ll["markov"]}
    if summary.get("scope") == "internal":  # a DP cascade: the holdout's likelihoods are exact real statistics
        metadata = {"scope": f"internal ({INTERNAL_NOTE}): the figures are in the stored summary"}
    return dg.AssetCheckResult(
        check_name="cascade_beats_markov",
        passed=bool(ll["cascade"] > ll["markov"]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def load_cascade(artifact: Artifact):
    """The trained cascade of an `lstm_cascade` artifact, or None when the tenant has no history."""
    from models.sequences.cascade import LoanCascade

    status = artifact.document("status", {})
    if status.get("skipped"):
        return None
    if status.get("dp"):
        from models.twin.dp import dp_recurrent_factory

        return LoanCascade.load(artifact.path / CASCADE_DIR, recurrent_factory=dp_recurrent_factory)
    return LoanCascade.load(artifact.path / CASCADE_DIR)


@dg.asset(
    partitions_def=tenants,
    group_name="twin",
    kinds={"pytorch"},
    code_version="1",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    pool=TRAINING_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            "cascade_beats_markov",
            asset="lstm_cascade",
            description="Held-out next-state log-likelihood of the cascade is above the Markov baseline's.",
        )
    ],
    description="An LSTM cascade of each loan's monthly path (state, balance, payment) conditioned on its static attributes.",
)
def lstm_cascade(
    context: dg.AssetExecutionContext,
    config: LstmCascadeConfig,
    settings: CreditTwinSettings,
    privacy_ledger: PrivacyLedgerResource,
    raw_loan_tape: Artifact,
):
    """Train the cascade and the Markov baseline on the train split's histories; score both on the holdout."""
    from models.sequences.cascade import CascadeConfig, LoanCascade
    from models.sequences.markov import MarkovBaseline
    from models.reports.plots import training_curve_png
    from models.sequences.histories import compare_sequences

    performance = raw_loan_tape.tables.get("performance")
    if performance is None:
        reason = "no performance history was uploaded (performance.csv or performance.parquet)"
        context.log.info(f"tenant '{context.partition_key}': cascade skipped: {reason}")
        yield dg.Output(Artifact(documents={"status": {"skipped": True, "reason": reason}}), metadata={"skipped": reason})
        yield not_measured("cascade_beats_markov", reason)
        return
    schema = tape_schema(raw_loan_tape)
    id_column = schema.id_column
    train_loans = train_split(raw_loan_tape)
    if config.max_loans is not None and train_loans.height > config.max_loans:
        train_loans = train_loans.sample(config.max_loans, seed=config.seed)
    holdout_loans = split_of(raw_loan_tape, "holdout")
    train_perf = history_of(train_loans, performance, id_column)
    holdout_perf = history_of(holdout_loans, performance, id_column)
    tenant = context.partition_key
    tenant_config = tape_config(raw_loan_tape)
    under_dp = tenant_config.privacy.epsilon is not None
    cascade_config = CascadeConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        hidden_size=config.hidden_size,
        cell=config.cell,
        seed=config.seed,
        device=config.device,
        # under DP the path length is a public setting, not read from the histories
        max_months=config.max_months_under_dp if under_dp else None,
    )
    perf_file = upload_file(raw_loan_tape, "performance")
    unit = tenant_config.privacy.unit_column or ("borrower_id" if "borrower_id" in train_loans.columns else None)
    charge, hook = None, None
    with tenant_errors(tenant, perf_file):
        if under_dp:
            from models.privacy.accounting import replace_one_charge
            from models.twin.dp import OpacusDPHook

            spec, n_units = _plan_dpsgd(raw_loan_tape, tenant_config, cascade_config, train_loans, train_perf, unit)
            charge = charge_privacy(
                privacy_ledger,
                context,
                asset="lstm_cascade",
                mechanism=replace_one_charge(spec),
                input_version=raw_loan_tape.document("ingest")["upload_sha256"],
                # max_loans picks the training sample, so it is part of what the charge pays for
                config={"spec": spec.to_dict(), "config": cascade_config.to_dict(), "max_loans": config.max_loans},
                seed=cascade_config.seed,
            )
            stored = paid_release(settings.root, "lstm_cascade", tenant, charge)
            if stored is not None:
                context.log.info("this DP-SGD training was already paid for (ledger charge %s); re-releasing its model "
                                 "byte for byte", charge.id)
                yield dg.Output(stored, metadata={"privacy": stored.document("privacy")["label"], "re_released": True})
                yield _check_result(stored.document("summary"))
                return
            hook = OpacusDPHook(spec, n_units=n_units, batch_size=cascade_config.batch_size)
        cascade = LoanCascade(cascade_config).fit(
            train_loans,
            train_perf,
            schema,
            dp=hook,
            privacy_unit_column=unit,
            public_domains=_public_domains(tenant_config) if under_dp else None,
            tenant=tenant,
            file=perf_file,
        )
        markov = MarkovBaseline().fit(train_loans, train_perf, schema, seed=config.seed, tenant=tenant, file=perf_file)
    ll_cascade = cascade.log_likelihood(holdout_loans, holdout_perf)
    ll_markov = markov.log_likelihood(holdout_loans, holdout_perf)
    generated = cascade.sample(holdout_loans, seed=config.seed)
    fidelity = compare_sequences(holdout_perf, generated, holdout_loans, holdout_loans)
    with tempfile.TemporaryDirectory() as tmp:
        cascade.save(Path(tmp) / CASCADE_DIR)
        if not under_dp:  # the baseline is not private: under DP it is scored, never stored
            markov.save(Path(tmp) / MARKOV_DIR)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
    curve = training_curve_png(cascade.history, f"{tenant}: cascade training")
    privacy = (
        {"label": f"DP-SGD: epsilon={charge.epsilon:.4g}, delta={charge.delta:.3g} (replace-one borrower; the number of borrowers is public)",
         "ledger_charge_id": charge.id, "idempotency_hash": charge.idempotency_hash}
        if charge is not None
        else {"label": "not differentially private (set privacy.epsilon in tenant.yaml to opt in)"}
    )
    files["plots/training_curve.png"] = curve
    summary = {
        "holdout_log_likelihood": {"cascade": ll_cascade, "markov": ll_markov},
        "holdout_fidelity": fidelity.to_dict(),
        "history": cascade.history,
        "train_loans": train_loans.height,
        "train_months": train_perf.height,
    }
    matrices = {
        "real": fidelity.real_transition_matrix.round(4).tolist(),
        "generated": fidelity.synthetic_transition_matrix.round(4).tolist(),
    }
    if under_dp:
        # the training counts are exact; the holdout figures are measured on real loans: internal, never metadata
        summary = {"scope": "internal", "note": INTERNAL_NOTE, "transition_matrices": matrices,
                   **{k: v for k, v in summary.items() if k not in ("train_loans", "train_months")}}
        matrices = {"note": f"under DP the holdout matrices are in the summary ({INTERNAL_NOTE})"}
    artifact = Artifact(
        documents={
            "status": {"skipped": False, "dp": under_dp},
            "privacy": privacy,
            "summary": summary,
            "transition_matrices": matrices,
        },
        files=files,
    )
    if charge is not None:  # the paid bytes are stored before anything leaves this step
        artifact = store_paid_release(settings.root, "lstm_cascade", tenant, charge, artifact)
    metadata = {
        "privacy": privacy["label"],
        "train_loans": train_loans.height,
        "epochs_run": len(cascade.history),
        "holdout_loglik_cascade": dg.MetadataValue.float(ll_cascade),
        "holdout_loglik_markov": dg.MetadataValue.float(ll_markov),
        "holdout_cdr12_real": dg.MetadataValue.float(fidelity.real_cdr),
        "holdout_cdr12_generated": dg.MetadataValue.float(fidelity.synthetic_cdr),
        "transition_distance_mean": dg.MetadataValue.float(float(fidelity.transition_distance["mean"])),
        "training_curve": png_markdown(curve, "training curve"),
    }
    if under_dp:
        metadata = {"privacy": privacy["label"], "epochs_run": len(cascade.history),
                    "training_curve": metadata["training_curve"],
                    "holdout_evaluation": f"internal ({INTERNAL_NOTE}): in the stored summary document"}
    else:
        metadata["transition_matrix_real_vs_generated"] = dg.MetadataValue.md(transition_markdown(matrices))
    yield dg.Output(artifact, metadata=metadata)
    yield _check_result(summary)


def transition_markdown(matrices: dict[str, list[list[float]]]) -> str:
    """Real and generated transition matrices as one Markdown table ("real / generated" per cell)."""
    from models.sequences.states import STATES

    header = "| from \\ to | " + " | ".join(STATES) + " |\n|" + "---|" * (len(STATES) + 1) + "\n"
    rows = []
    for i, state in enumerate(STATES):
        cells = [f"{matrices['real'][i][j]:.3f} / {matrices['generated'][i][j]:.3f}" for j in range(len(STATES))]
        rows.append(f"| {state} | " + " | ".join(cells) + " |")
    return "Real / generated (holdout loans)\n\n" + header + "\n".join(rows)
