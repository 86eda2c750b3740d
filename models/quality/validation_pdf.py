"""The validation report as a PDF: `render_validation_pdf`.

The sections follow `models.quality.validation.ValidationReport`: summary and
checks (pass, warn, fail), recommendations, failures and warnings, fidelity,
credit metrics, utility, sequences and the charts. Tables size their columns
from their content (`models.reports.pdf.column_widths`), so no header or
column name breaks inside a word.
"""

from __future__ import annotations

from models.quality.validation import ValidationReport
from models.reports.pdf import PdfReport, fmt


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed else ("not evaluated" if passed is None else "FAIL")


def _shade(verdict: str) -> bool | None:
    """Green for a pass, red for a failure; a warning is shaded as neither."""
    return {"pass": True, "fail": False}.get(verdict)


def _interval(bounds: list[float | None] | None) -> str:
    low, high = bounds or [None, None]
    return "-" if low is None or high is None else f"{fmt(low)} to {fmt(high)}"


def render_validation_pdf(report: ValidationReport) -> bytes:
    """The report as a PDF (`models.reports.pdf.PdfReport`): summary, recommendations, fidelity, credit, utility, sequences, charts.

    Every figure is printed with `models.reports.pdf.fmt`, so it reads the same as
    in `to_dict()`; every name from the upload is escaped by the builder.
    """
    data = report.to_dict()
    pdf = PdfReport(
        "Validation report",
        subtitle=f"tenant {report.tenant}" if report.tenant else None,
        footer=f"CreditTwin validation - {report.tenant or 'no tenant'} - {report.verdict_label}",
    )
    pdf.heading("Summary")
    pdf.key_values([
        ("overall score", data["score"]),
        ("verdict", report.verdict_label),
        ("real train rows", data["rows"]["real_train"]),
        ("real holdout rows", data["rows"]["real_holdout"]),
        ("synthetic rows", data["rows"]["synthetic"]),
        ("row cap for the pairwise and model parts (seeded sample)", data["sampling"]["sample_rows"]),
    ])
    pdf.paragraph("Formula: " + report.score_formula, style="small")
    pdf.table(
        ["check", "value", "threshold", "result", "note"],
        [[c["label"], c["value"], (c["op"] + " " + fmt(c["threshold"])) if c["threshold"] is not None else "-",
          c["verdict"].upper(), c["detail"]] for c in data["checks"]],
        highlight=[_shade(c["verdict"]) for c in data["checks"]],
    )
    pdf.heading("Recommendations", level=2)
    pdf.bullets(data["recommendations"] or ["none"])
    if data["failures"]:
        pdf.heading("Failures", level=2)
        pdf.bullets(data["failures"][:60] + ([f"... {len(data['failures']) - 60} more"] if len(data["failures"]) > 60 else []))
    if data["warnings"]:
        pdf.heading("Warnings", level=2)
        pdf.bullets(data["warnings"])

    quality = data["quality"]
    pdf.heading("Fidelity")
    pdf.key_values([
        ("quality score (our implementation)", quality["score"]),
        ("column shapes", quality["column_shapes"]),
        ("column pair trends", quality["column_pair_trends"]),
        ("SDMetrics QualityReport score", quality["sdmetrics_quality"] if quality["sdmetrics_quality"] is not None
         else quality["sdmetrics_note"] or "-"),
        ("mean rank-correlation difference", data["fidelity"]["correlation_diff"]),
        ("largest rank-correlation difference", data["fidelity"]["correlation_max_diff"]),
    ])
    pdf.paragraph("KS: Kolmogorov-Smirnov statistic; TV: total variation distance; KL: Kullback-Leibler divergence "
                  "real || synthetic in nats over 20 quantile bins (half a count added per bin); JS: Jensen-Shannon "
                  "divergence, base 2.", style="small")
    rows = data["fidelity"]["columns"]
    pdf.table(
        ["column", "metric", "statistic", "limit", "KL", "JS", "missing real", "missing synth.", "result"],
        [[r["column"], r["metric"].upper(), r["statistic"], r["limit"], r["kl"], r["js"],
          r["missing_real"], r["missing_synthetic"], _verdict(r["passed"])] for r in rows],
        highlight=[r["passed"] for r in rows],
    )
    if data["fidelity"]["missing_columns"]:
        pdf.paragraph("Missing from the synthetic book: " + ", ".join(data["fidelity"]["missing_columns"]))
    pairs = sorted((p for p in data["pairs"] if p["association_diff"] is not None), key=lambda p: -p["association_diff"])[:15]
    if pairs:
        pdf.heading("Column pairs with the largest association gap", level=2)
        pdf.table(
            ["pair", "measure", "real", "synthetic", "gap", "similarity", "in quality", "result"],
            [[f"{p['columns'][0]} x {p['columns'][1]}", "Pearson r" if p["association"] == "pearson" else "Cramer's V",
              p["association_real"], p["association_synthetic"], p["association_diff"], p["score"], p["counted"],
              _verdict(p["passed"])] for p in pairs],
            highlight=[p["passed"] for p in pairs],
        )

    credit = data["credit"]
    pdf.heading("Credit metrics")
    if credit.get("default_rate"):
        d = credit["default_rate"]
        pdf.key_values([("target", credit["target"]), ("default rate, real train", d["real_train"]),
                        ("default rate, real holdout", d["real_holdout"]), ("default rate, synthetic", d["synthetic"]),
                        ("relative gap", d["relative_diff"])])
    elif credit.get("reason"):
        pdf.paragraph(credit["reason"])
    for segment in credit.get("segments", []):
        pdf.heading(f"Default rate by {segment['column']}", level=2)
        pdf.table(["value", "real loans", "real rate", "synthetic loans", "synthetic rate"],
                  [[r["value"], r["real_n"], r["real_rate"], r["synthetic_n"], r["synthetic_rate"]] for r in segment["rows"]])
    if credit.get("distributions"):
        pdf.heading("Distributions", level=2)
        table = []
        for dist in credit["distributions"]:
            for book in ("real", "synthetic"):
                values = dist.get(book)
                if values:
                    table.append([dist["column"], book, values["p5"], values["p25"], values["p50"], values["p75"],
                                  values["p95"], values["mean"], values["missing"]])
        pdf.table(["column", "book", "p5", "p25", "median", "p75", "p95", "mean", "missing"], table)
    scorecard = credit.get("scorecard") or {}
    pdf.heading("Fixed scorecard", level=2)
    if scorecard.get("status") == "evaluated":
        pdf.paragraph("A " + scorecard["model"] + " fitted once on the real train split and applied unchanged to both books.")
        pdf.key_values([("Gini, real train", scorecard["gini_real_train"]), ("Gini, real holdout", scorecard["gini_real_holdout"]),
                        ("Gini, synthetic book", scorecard["gini_synthetic"]), ("ratio synthetic / holdout", scorecard["gini_ratio"])])
        if scorecard.get("reason"):
            pdf.paragraph(scorecard["reason"], style="small")
    else:
        pdf.paragraph(f"Not computed: {scorecard.get('reason') or 'no target'}")

    utility = data["utility"]
    pdf.heading("Utility: train synthetic, test real")
    if utility["status"] == "evaluated":
        pdf.paragraph(f"The same LightGBM model ({utility['model']['rounds']} rounds, deterministic) trained on the real train "
                      "split (TRTR) and on the synthetic book (TSTR), both tested on the real holdout.")
        interval = utility.get("auc_ratio_ci") or [None, None]
        pdf.table(["measure", "TRTR", "TSTR"],
                  [[m, utility["trtr"][key], utility["tstr"][key]]
                   for m, key in (("AUC", "auc"), ("Gini", "gini"), ("KS", "ks"), ("Brier score", "brier"))]
                  + [["AUC 95% interval (DeLong)", _interval(utility["trtr"].get("auc_ci")),
                      _interval(utility["tstr"].get("auc_ci"))]])
        pdf.key_values([("AUC ratio TSTR / TRTR", utility["auc_ratio"]),
                        ("its 95% interval (paired DeLong, delta method)", _interval(interval)),
                        ("Gini ratio", utility["gini_ratio"]),
                        ("holdout loans (defaults)", f"{fmt(utility['n_holdout'])} ({fmt(utility.get('holdout_defaults'))})"),
                        ("holdout default rate", utility["holdout_default_rate"]),
                        ("top drivers (real model)", ", ".join(f["column"] for f in utility["top_features"]))])
        pdf.paragraph("Both models score the same holdout loans, so the ratio's interval accounts for the correlation "
                      "of their AUCs. The check fails when the whole interval is below the threshold, passes when it "
                      "is all above, and is a warning when the holdout is too small to tell.", style="small")
        if utility.get("reason"):
            pdf.paragraph(utility["reason"], style="small")
    else:
        pdf.paragraph(("Absent: " if utility["status"] == "absent" else "Not evaluable: ") + str(utility["reason"]))

    sequences = data["sequences"]
    pdf.heading("Sequences")
    if sequences["status"] == "evaluated":
        pdf.key_values([
            ("horizon (months)", sequences["horizon"]),
            ("cumulative default rate, real", sequences["real_cdr"]),
            ("cumulative default rate, synthetic", sequences["synthetic_cdr"]),
            ("relative gap", sequences["cdr12_relative_diff"]),
            ("mean transition-row difference", sequences["transition_distance"]["mean"]),
            ("sequence similarity", sequences["similarity"]),
            ("median months to default, real", sequences["real_time_to_default"]["quantiles"].get("p50")),
            ("median months to default, synthetic", sequences["synthetic_time_to_default"]["quantiles"].get("p50")),
        ])
        rolls = sequences["real_roll_rates"]
        pdf.table(["rate", "real", "synthetic"],
                  [[f"{kind} {name}", rolls[kind][name], sequences["synthetic_roll_rates"][kind][name]]
                   for kind in ("roll", "cure") for name in rolls[kind]])
    else:
        pdf.paragraph(("Absent: " if sequences["status"] == "absent" else "Not evaluable: ") + str(sequences["reason"]))

    captions = {
        "distributions": "Real (filled) vs synthetic (line) distributions of the main columns.",
        "correlations": "Rank correlations of the real and synthetic books, and their absolute difference.",
        "roc_curves": "ROC curves on the real holdout: model trained on real vs on synthetic loans.",
        "vintage_curves": "Cumulative default rate by month on book: real solid, synthetic dashed.",
    }
    if report.charts:
        pdf.page_break()
        pdf.heading("Charts")
        for name in ("distributions", "correlations", "roc_curves", "vintage_curves"):
            if name in report.charts:
                pdf.image(report.charts[name], width_cm=17.0 if name in ("distributions", "correlations") else 12.0,
                          caption=captions[name])
    return pdf.build()
