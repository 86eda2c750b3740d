"""`lstm_cascade`: the monthly performance model of a tenant's loans, beside its Markov baseline."""

import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import history_of, png_markdown, split_of, tape_schema, tenant_errors, train_split, upload_file
from pipelines.partitions import tenants
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


def _files_of(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(folder)}": p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def load_cascade(artifact: Artifact):
    """The trained cascade of an `lstm_cascade` artifact, or None when the tenant has no history."""
    from models.cascade import LoanCascade

    if artifact.document("status", {}).get("skipped"):
        return None
    return LoanCascade.load(artifact.path / CASCADE_DIR)


@dg.asset(
    partitions_def=tenants,
    group_name="twin",
    kinds={"pytorch"},
    code_version="1",
    check_specs=[
        dg.AssetCheckSpec(
            "cascade_beats_markov",
            asset="lstm_cascade",
            description="Held-out next-state log-likelihood of the cascade is above the Markov baseline's.",
        )
    ],
    description="An LSTM cascade of each loan's monthly path (state, balance, payment) conditioned on its static attributes.",
)
def lstm_cascade(context: dg.AssetExecutionContext, config: LstmCascadeConfig, raw_loan_tape: Artifact):
    """Train the cascade and the Markov baseline on the train split's histories; score both on the holdout."""
    from models.cascade import CascadeConfig, LoanCascade
    from models.markov import MarkovBaseline
    from models.plots import training_curve_png
    from models.sequences import compare_sequences

    performance = raw_loan_tape.tables.get("performance")
    if performance is None:
        reason = "no performance history was uploaded (performance.csv or performance.parquet)"
        context.log.info(f"tenant '{context.partition_key}': cascade skipped: {reason}")
        yield dg.Output(Artifact(documents={"status": {"skipped": True, "reason": reason}}), metadata={"skipped": reason})
        yield dg.AssetCheckResult(check_name="cascade_beats_markov", passed=True, metadata={"not_applicable": reason})
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
    settings = CascadeConfig(
        epochs=config.epochs, hidden_size=config.hidden_size, cell=config.cell, seed=config.seed, device=config.device
    )
    perf_file = upload_file(raw_loan_tape, "performance")
    with tenant_errors(tenant, perf_file):
        cascade = LoanCascade(settings).fit(train_loans, train_perf, schema, tenant=tenant, file=perf_file)
        markov = MarkovBaseline().fit(train_loans, train_perf, schema, seed=config.seed, tenant=tenant, file=perf_file)
    ll_cascade = cascade.log_likelihood(holdout_loans, holdout_perf)
    ll_markov = markov.log_likelihood(holdout_loans, holdout_perf)
    generated = cascade.sample(holdout_loans, seed=config.seed)
    fidelity = compare_sequences(holdout_perf, generated, holdout_loans, holdout_loans)
    with tempfile.TemporaryDirectory() as tmp:
        cascade.save(Path(tmp) / CASCADE_DIR)
        markov.save(Path(tmp) / MARKOV_DIR)
        files = _files_of(Path(tmp), ".")
    files = {name.removeprefix("./"): data for name, data in files.items()}
    curve = training_curve_png(cascade.history, f"{tenant}: cascade training")
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
    yield dg.Output(
        Artifact(documents={"status": {"skipped": False}, "summary": summary, "transition_matrices": matrices}, files=files),
        metadata={
            "train_loans": train_loans.height,
            "epochs_run": len(cascade.history),
            "holdout_loglik_cascade": dg.MetadataValue.float(ll_cascade),
            "holdout_loglik_markov": dg.MetadataValue.float(ll_markov),
            "holdout_cdr12_real": dg.MetadataValue.float(fidelity.real_cdr),
            "holdout_cdr12_generated": dg.MetadataValue.float(fidelity.synthetic_cdr),
            "transition_distance_mean": dg.MetadataValue.float(float(fidelity.transition_distance["mean"])),
            "transition_matrix_real_vs_generated": dg.MetadataValue.md(transition_markdown(matrices)),
            "training_curve": png_markdown(curve, "training curve"),
        },
    )
    yield dg.AssetCheckResult(
        check_name="cascade_beats_markov",
        passed=bool(ll_cascade > ll_markov),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"cascade": ll_cascade, "markov": ll_markov, "margin": ll_cascade - ll_markov},
    )


def transition_markdown(matrices: dict[str, list[list[float]]]) -> str:
    """Real and generated transition matrices as one Markdown table ("real / generated" per cell)."""
    from models.states import STATES

    header = "| from \\ to | " + " | ".join(STATES) + " |\n|" + "---|" * (len(STATES) + 1) + "\n"
    rows = []
    for i, state in enumerate(STATES):
        cells = [f"{matrices['real'][i][j]:.3f} / {matrices['generated'][i][j]:.3f}" for j in range(len(STATES))]
        rows.append(f"| {state} | " + " | ".join(cells) + " |")
    return "Real / generated (holdout loans)\n\n" + header + "\n".join(rows)
