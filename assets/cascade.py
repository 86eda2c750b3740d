"""`lstm_cascade`: the monthly performance model of a tenant's loans, beside its Markov baseline."""

import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import metadata_table, not_measured, png_markdown, tenant_check, tenant_errors
from assets.partitions import tenants
from assets.policies import EXTERNAL_SERVICE_RETRY, TRAINING_OP_TAGS, TRAINING_POOL
from models.results import CascadeModel, TapeSplit
from resources.dagster_resources import CreditTwinSettings
from resources.ledger import PrivacyLedgerResource
from resources.paid import charged_release

class LstmCascadeConfig(dg.Config):
    """Training settings of the cascade."""

    epochs: int = Field(default=30, description="Most passes over the training loans (early stopping usually ends sooner).")
    hidden_size: int = Field(
        default=32, description="Width of the recurrent layer and the static embedding (32 matched 64's held-out fit "
        "on 5k-20k-loan books in half the time)."
    )
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


def _plan_dpsgd(raw_loan_tape: TapeSplit, cascade_config, train_loans, train_perf, unit):
    """The DP-SGD spend of the cascade fit, from public counts: (mechanism spec, number of borrowers)."""
    import polars as pl

    from models.privacy.accounting import release_delta
    from models.twin.dp import bound_units, plan_dpsgd

    privacy = raw_loan_tape.tenant_config.privacy
    with_history = train_loans.filter(
        pl.col(raw_loan_tape.schema.id_column).cast(pl.String).is_in(train_perf.get_column("loan_id").unique().implode())
    )
    n_units = bound_units(with_history, unit).height
    delta = release_delta(privacy.delta, n_units)
    spec = plan_dpsgd(n_units, cascade_config.batch_size, cascade_config.epochs, privacy.dpsgd_epsilon or privacy.epsilon, delta)
    return spec, n_units


# Under DP, figures measured on real loans (the holdout's likelihoods, transition matrix and default rate, the
# training counts) are kept in the stored summary for the tenant's own review, marked so, and never shown as metadata.
INTERNAL_NOTE = "computed on real data; not covered by the DP guarantee; not exported"
SEGMENT_CHECK = "segment_fidelity"


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


@dg.asset(
    partitions_def=tenants,
    group_name="twin",
    kinds={"pytorch"},
    code_version="1",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    pool=TRAINING_POOL,
    op_tags=TRAINING_OP_TAGS,  # the Celery queue of the training workers
    check_specs=[
        tenant_check(
            "cascade_beats_markov",
            asset="lstm_cascade",
            description="Held-out next-state log-likelihood of the cascade is above the Markov baseline's.",
        ),
        tenant_check(
            SEGMENT_CHECK,
            asset="lstm_cascade",
            description="Per grade, DTI band and product, the cascade's histories of the holdout loans keep their "
            "12-month default rate within 10% relative and each transition row within 0.02, where the holdout is "
            "large enough to judge.",
        ),
    ],
    description="An LSTM cascade of each loan's monthly path (state, balance, payment) conditioned on its static attributes.",
)
def lstm_cascade(
    context: dg.AssetExecutionContext,
    config: LstmCascadeConfig,
    settings: CreditTwinSettings,
    privacy_ledger: PrivacyLedgerResource,
    raw_loan_tape: TapeSplit,
):
    """Train the cascade and the Markov baseline on the train split's histories; score both on the holdout.

    Under `privacy.epsilon` the cascade is trained with DP-SGD, charged before
    training; a re-execution under the same charge re-releases the stored model
    (`resources.paid`).
    """
    from models.sequences.cascade import CascadeConfig

    if raw_loan_tape.performance is None:
        reason = "no performance history was uploaded (performance.csv or performance.parquet)"
        context.log.info(f"tenant '{context.partition_key}': cascade skipped: {reason}")
        yield dg.Output(CascadeModel(status={"skipped": True, "reason": reason}), metadata={"skipped": reason})
        yield not_measured("cascade_beats_markov", reason)
        yield not_measured(SEGMENT_CHECK, reason)
        return
    tenant, tenant_config = context.partition_key, raw_loan_tape.tenant_config
    train_loans = raw_loan_tape.train
    if config.max_loans is not None and train_loans.height > config.max_loans:
        train_loans = train_loans.sample(config.max_loans, seed=config.seed)
    train_perf = raw_loan_tape.history_of(train_loans)
    under_dp = tenant_config.privacy.epsilon is not None
    cascade_config = CascadeConfig(
        epochs=config.epochs, batch_size=config.batch_size, hidden_size=config.hidden_size, cell=config.cell,
        seed=config.seed, device=config.device,
        # under DP the path length is a public setting, not read from the histories
        max_months=config.max_months_under_dp if under_dp else None,
    )
    perf_file = raw_loan_tape.upload_file("performance")
    unit = tenant_config.privacy.unit_column or ("borrower_id" if "borrower_id" in train_loans.columns else None)
    fit = _Fit(raw_loan_tape, train_loans, train_perf, cascade_config, unit, tenant, perf_file)
    charge, re_released = None, False
    with tenant_errors(tenant, perf_file):
        if under_dp:
            from models.privacy.accounting import replace_one_charge

            spec, n_units = _plan_dpsgd(raw_loan_tape, cascade_config, train_loans, train_perf, unit)
            model, charge, re_released = charged_release(
                privacy_ledger, settings.storage(), tenant=tenant, run_id=context.run.run_id, result_type=CascadeModel,
                mechanism=replace_one_charge(spec), input_version=raw_loan_tape.upload_sha256,
                # max_loans picks the training sample, so it is part of what the charge pays for
                config={"spec": spec.to_dict(), "config": cascade_config.to_dict(), "max_loans": config.max_loans},
                seed=cascade_config.seed, compute=lambda paid: fit.run(paid, spec, n_units),
            )
        else:
            model = fit.run()
    if re_released:
        context.log.info("this DP-SGD training was already paid for (ledger charge %s); re-releasing its model byte "
                         "for byte", charge.id)
    yield dg.Output(model, metadata=_metadata(model, re_released))
    yield _check_result(model.summary)
    yield segment_check(model.summary)


class _Fit:
    """One training of the cascade and its baseline, scored on the holdout, as the stored result."""

    def __init__(self, tape: TapeSplit, train_loans, train_perf, cascade_config, unit, tenant: str, perf_file):
        self.tape, self.train_loans, self.train_perf = tape, train_loans, train_perf
        self.config, self.unit, self.tenant, self.perf_file = cascade_config, unit, tenant, perf_file

    def run(self, charge=None, spec=None, n_units: int | None = None) -> CascadeModel:
        from models.reports.plots import training_curve_png
        from models.sequences.cascade import LoanCascade
        from models.sequences.histories import compare_sequences
        from models.sequences.markov import MarkovBaseline

        under_dp = charge is not None
        hook = None
        if under_dp:
            from models.twin.dp import OpacusDPHook

            hook = OpacusDPHook(spec, n_units=n_units, batch_size=self.config.batch_size)
        schema, tenant_config = self.tape.schema, self.tape.tenant_config
        cascade = LoanCascade(self.config).fit(
            self.train_loans, self.train_perf, schema, dp=hook, privacy_unit_column=self.unit,
            public_domains={**_default_domains(), **tenant_config.privacy.domains} if under_dp else None,
            as_of=tenant_config.performance.as_of, tenant=self.tenant, file=self.perf_file,
        )
        # the baseline's histories stop at the same cut-off, so the two models sample like with like
        markov = MarkovBaseline().fit(self.train_loans, self.train_perf, schema, seed=self.config.seed,
                                      as_of=tenant_config.performance.as_of, tenant=self.tenant, file=self.perf_file)
        holdout = self.tape.holdout
        holdout_perf = self.tape.history_of(holdout)
        ll_cascade = cascade.log_likelihood(holdout, holdout_perf)
        ll_markov = markov.log_likelihood(holdout, holdout_perf)
        generated = cascade.sample(holdout, seed=self.config.seed)
        fidelity = compare_sequences(holdout_perf, generated, holdout, holdout, id_column=schema.id_column or "loan_id")
        segments = _segment_fidelity(holdout, holdout_perf, generated, schema, fidelity)
        with tempfile.TemporaryDirectory() as tmp:
            cascade.save(Path(tmp) / CascadeModel.CASCADE_DIR)
            if not under_dp:  # the baseline is not private: under DP it is scored, never stored
                markov.save(Path(tmp) / CascadeModel.MARKOV_DIR)
            files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        files["plots/training_curve.png"] = training_curve_png(cascade.history, f"{self.tenant}: cascade training")
        privacy = (
            {"label": f"DP-SGD: epsilon={charge.epsilon:.4g}, delta={charge.delta:.3g} (replace-one borrower; the "
                      "number of borrowers is public)",
             "ledger_charge_id": charge.id, "idempotency_hash": charge.idempotency_hash}
            if under_dp
            else {"label": "not differentially private (set privacy.epsilon in tenant.yaml to opt in)"}
        )
        summary = {
            "holdout_log_likelihood": {"cascade": ll_cascade, "markov": ll_markov},
            "holdout_fidelity": fidelity.to_dict(),
            "holdout_segment_fidelity": segments,
            "history": cascade.history,
            "train_loans": self.train_loans.height,
            "train_months": self.train_perf.height,
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
        return CascadeModel(status={"skipped": False, "dp": under_dp}, privacy=privacy, summary=summary,
                            transition_matrices=matrices, files=files)


def _segment_fidelity(holdout, holdout_perf, generated, schema, book) -> dict:
    """Per-segment fidelity of the cascade's histories of the holdout loans against their real ones
    (`models.sequences.conditional`, with the whole-book comparison `book` already made): the 12-month default rate and transition rows per grade, DTI band and
    product, each judged only where the holdout is large enough; ``{"not_measured": reason}`` when it cannot run."""
    from models.errors import CreditTwinError
    from models.sequences.conditional import conditional_fidelity

    if holdout_perf.height == 0:
        return {"not_measured": "no holdout loan has a history"}
    try:
        result = conditional_fidelity(holdout, holdout_perf, generated, schema=schema,
                                      id_column=schema.id_column or "loan_id", book=book)
    except CreditTwinError as error:
        return {"not_measured": f"per-segment fidelity could not be computed: {error}"}
    if not result.dimensions:
        return {"not_measured": "the tape has no grade, DTI or product column to segment by", **result.to_dict()}
    return result.to_dict()


def segment_check(summary: dict) -> dg.AssetCheckResult:
    """`segment_fidelity`: no segment's default rate or transition row fails, and at least one was judged."""
    segments = summary.get("holdout_segment_fidelity")
    if segments is None:
        return not_measured(SEGMENT_CHECK, "the cascade was trained before per-segment fidelity was measured")
    if "not_measured" in segments:
        return not_measured(SEGMENT_CHECK, segments["not_measured"])
    verdicts = segments["verdicts"]
    judged = verdicts["default_rate"]["pass"] + verdicts["default_rate"]["fail"]
    judged += verdicts["transition_rows"]["pass"] + verdicts["transition_rows"]["fail"]
    if judged == 0:
        return not_measured(SEGMENT_CHECK, "every segment of the holdout is too thin to judge against the targets "
                                           f"(default rate within {segments['cdr_threshold']:.0%} relative, rows "
                                           f"within {segments['row_threshold']}); see the verdict counts")
    failures = segments["failures"]
    metadata: dict = {
        "default_rate_verdicts": dg.MetadataValue.json(verdicts["default_rate"]),
        "transition_row_verdicts": dg.MetadataValue.json(verdicts["transition_rows"]),
        "failures": dg.MetadataValue.json(failures[:20]),
    }
    if summary.get("scope") == "internal":  # a DP cascade: segment default rates are exact real statistics
        metadata = {"scope": f"internal ({INTERNAL_NOTE}): the figures and verdicts are in the stored summary"}
    else:
        metadata["segments"] = metadata_table(
            [{"dimension": r["dimension"], "segment": r["segment"], "real_cdr": r["real_cdr"],
              "generated_cdr": r["synthetic_cdr"], "verdict": r["verdict"]} for r in segments["segments"]],
            ["dimension", "segment", "real_cdr", "generated_cdr", "verdict"],
            descriptions={"real_cdr": f"{segments['horizon']}-month default rate of the holdout loans",
                          "generated_cdr": "the same loans' cascade histories"},
        )
    return dg.AssetCheckResult(check_name=SEGMENT_CHECK, passed=not failures, severity=dg.AssetCheckSeverity.WARN,
                               metadata=metadata)


def _default_domains() -> dict:
    """The documented default public domains of the DP cascade (public: not read from the data)."""
    from models.twin.dp import DEFAULT_DOMAINS

    return dict(DEFAULT_DOMAINS)


def _metadata(model: CascadeModel, re_released: bool) -> dict:
    """What the UI shows of a trained cascade; under DP nothing measured on real loans."""
    summary = model.summary
    metadata: dict = {"privacy": model.privacy["label"], "re_released": re_released,
                      "epochs_run": len(summary["history"])}
    if "plots/training_curve.png" in model.files:
        metadata["training_curve"] = png_markdown(model.files["plots/training_curve.png"], "training curve")
    if summary.get("scope") == "internal":
        metadata["holdout_evaluation"] = f"internal ({INTERNAL_NOTE}): in the stored summary document"
        return metadata
    ll, fidelity = summary["holdout_log_likelihood"], summary["holdout_fidelity"]
    return {
        **metadata,
        "train_loans": summary["train_loans"],
        "holdout_loglik_cascade": dg.MetadataValue.float(ll["cascade"]),
        "holdout_loglik_markov": dg.MetadataValue.float(ll["markov"]),
        "holdout_cdr12_real": dg.MetadataValue.float(fidelity["real_cdr"]),
        "holdout_cdr12_generated": dg.MetadataValue.float(fidelity["synthetic_cdr"]),
        "transition_distance_mean": dg.MetadataValue.float(float(fidelity["transition_distance"]["mean"])),
        "transition_matrix_real": transition_table(model.transition_matrices["real"]),
        "transition_matrix_generated": transition_table(model.transition_matrices["generated"]),
    }


def transition_table(matrix: list[list[float]]) -> dg.TableMetadataValue:
    """A monthly transition matrix of the holdout loans (real, or generated by the cascade): one row per state."""
    from models.sequences.states import STATES

    return metadata_table(
        [{"from": state, **{to: matrix[i][j] for j, to in enumerate(STATES)}} for i, state in enumerate(STATES)],
        ["from", *STATES],
        descriptions={"from": "this month's state; each row gives next month's shares (holdout loans)"},
    )
