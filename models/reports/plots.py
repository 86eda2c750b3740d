"""Figures for reports and the Dagster UI, rendered headless to PNG bytes."""

from __future__ import annotations

import io

import numpy as np


def correlation_heatmap_png(matrix: np.ndarray, names: list[str], title: str) -> bytes:
    """A correlation heatmap (-1 blue to +1 red) of `matrix` labelled by `names`, as PNG bytes.

    Raises:
        ValueError: `matrix` is not square or does not match `names`.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(names):
        raise ValueError(f"matrix of shape {matrix.shape} does not match {len(names)} names")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d = len(names)
    side = min(4.0 + 0.22 * d, 24.0)
    # A Figure not registered with pyplot: nothing global to close, safe in threads.
    fig = Figure(figsize=(side, side * 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(d))
    ax.set_yticks(range(d))
    font = max(4, 10 - d // 10)
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def training_curve_png(history: list[dict], title: str) -> bytes:
    """Train and validation loss per epoch (from `LoanCascade.history`) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------- validation report figures

_REAL_COLOUR = "#1f5a99"
_SYNTHETIC_COLOUR = "#e07b39"


def _safe_label(text: object, limit: int = 40) -> str:
    """Upload text as a matplotlib label: '$' escaped (no mathtext from a column name), long names cut."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 3] + "..."
    return value.replace("$", r"\$")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def distribution_overlays_png(panels: list[dict], title: str) -> bytes:
    """Real vs synthetic distributions of several columns, one small panel each, as PNG bytes.

    Args:
        panels: one dict per column with ``name`` and ``kind``. A ``"numeric"``
            panel has ``edges`` (bin edges, k + 1) and ``real`` / ``synthetic``
            (k shares each), drawn as overlaid step histograms; a
            ``"categorical"`` panel has ``labels`` and ``real`` / ``synthetic``
            shares, drawn as side-by-side bars.
        title: the figure title.

    Raises:
        ValueError: no panel, or a panel whose arrays do not match.
    """
    if not panels:
        raise ValueError("no panel to draw")
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = _figure(4.0 * cols, 2.9 * rows + 0.5)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        real = np.asarray(panel["real"], dtype=np.float64)
        synthetic = np.asarray(panel["synthetic"], dtype=np.float64)
        if panel["kind"] == "numeric":
            edges = np.asarray(panel["edges"], dtype=np.float64)
            if edges.size != real.size + 1 or real.size != synthetic.size:
                raise ValueError(f"panel {panel['name']!r}: {edges.size} edges for {real.size}/{synthetic.size} shares")
            ax.stairs(real, edges, fill=True, alpha=0.35, color=_REAL_COLOUR, label="real")
            ax.stairs(synthetic, edges, color=_SYNTHETIC_COLOUR, linewidth=1.6, label="synthetic")
        else:
            labels = [_safe_label(v, 14) for v in panel["labels"]]
            if not (len(labels) == real.size == synthetic.size):
                raise ValueError(f"panel {panel['name']!r}: {len(labels)} labels for {real.size}/{synthetic.size} shares")
            x = np.arange(len(labels))
            ax.bar(x - 0.2, real, width=0.4, color=_REAL_COLOUR, alpha=0.8, label="real")
            ax.bar(x + 0.2, synthetic, width=0.4, color=_SYNTHETIC_COLOUR, alpha=0.8, label="synthetic")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(_safe_label(panel["name"]), fontsize=9)
        ax.tick_params(axis="both", labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(_safe_label(title, 90))
    fig.tight_layout()
    return _png(fig)


def correlation_pair_png(real: np.ndarray, synthetic: np.ndarray, names: list[str], title: str) -> bytes:
    """Real and synthetic correlation heatmaps side by side, and their absolute difference, as PNG bytes.

    Raises:
        ValueError: the matrices are not square, differ in shape, or do not match `names`.
    """
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    d = len(names)
    if real.shape != (d, d) or synthetic.shape != (d, d):
        raise ValueError(f"matrices of shape {real.shape} and {synthetic.shape} do not match {d} names")
    side = min(3.2 + 0.18 * d, 9.0)
    fig = _figure(3 * side + 1.0, side + 1.4)
    labels = [_safe_label(n, 20) for n in names]
    font = max(4, 9 - d // 8)
    panels = (("real", real, "RdBu_r", -1.0), ("synthetic", synthetic, "RdBu_r", -1.0),
              ("|real - synthetic|", np.abs(real - synthetic), "Reds", 0.0))
    for i, (label, matrix, cmap, vmin) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(d))
        ax.set_yticks(range(d))
        ax.set_xticklabels(labels, rotation=90, fontsize=font)
        ax.set_yticklabels(labels if i == 0 else [], fontsize=font)
        ax.set_title(label, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(_safe_label(title, 90))
    fig.tight_layout()
    return _png(fig)


def default_curves_png(real: list[dict], synthetic: list[dict], title: str, *, max_vintages: int = 8) -> bytes:
    """Cumulative default rate by month on book, real (solid) vs synthetic (dashed), per vintage, as PNG bytes.

    Args:
        real, synthetic: rows of `models.sequences.histories.cumulative_default_curve`
            (``months_on_book``, ``cumulative_default_rate`` and, for vintage
            curves, ``vintage``). Without ``vintage`` one curve per book is drawn.
        title: the figure title.
        max_vintages: the most vintages drawn (those with the most real loans at month 1).
    """
    def by_vintage(rows: list[dict]) -> dict[str, tuple[list[float], list[float], int]]:
        out: dict[str, tuple[list[float], list[float], int]] = {}
        for row in sorted(rows, key=lambda r: (str(r.get("vintage", "book")), r["months_on_book"])):
            key = str(row.get("vintage", "book"))
            xs, ys, n = out.setdefault(key, ([], [], int(row.get("loans") or 0)))
            rate = row.get("cumulative_default_rate")
            xs.append(float(row["months_on_book"]))
            ys.append(float("nan") if rate is None else float(rate))
        return out

    real_curves, synthetic_curves = by_vintage(real), by_vintage(synthetic)
    keep = sorted(real_curves, key=lambda k: -real_curves[k][2])[:max_vintages]
    keep.sort()
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    from matplotlib import colormaps

    palette = colormaps["viridis"]
    for i, key in enumerate(keep):
        colour = palette(i / max(len(keep) - 1, 1))
        xs, ys, _ = real_curves[key]
        ax.plot(xs, ys, color=colour, linewidth=1.6, label=_safe_label(key, 16))
        if key in synthetic_curves:
            sx, sy, _ = synthetic_curves[key]
            ax.plot(sx, sy, color=colour, linewidth=1.4, linestyle="--")
    ax.plot([], [], color="grey", linestyle="-", label="real")
    ax.plot([], [], color="grey", linestyle="--", label="synthetic")
    ax.set_xlabel("months on book")
    ax.set_ylabel("cumulative default rate")
    ax.set_title(_safe_label(title, 90))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


def roc_curves_png(curves: dict[str, dict], title: str) -> bytes:
    """ROC curves (e.g. train-real and train-synthetic, both tested on the real holdout) as PNG bytes.

    Args:
        curves: label -> ``{"fpr": [...], "tpr": [...], "auc": float}``.
        title: the figure title.
    """
    fig = _figure(5.2, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    colours = (_REAL_COLOUR, _SYNTHETIC_COLOUR, "#4c9a2a", "#8e44ad")
    for i, (label, curve) in enumerate(curves.items()):
        auc = curve.get("auc")
        text = _safe_label(label) + (f" (AUC {auc:.3f})" if auc is not None else "")
        ax.plot(curve["fpr"], curve["tpr"], color=colours[i % len(colours)], linewidth=1.8, label=text)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(_safe_label(title, 90))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def stress_loss_rate_png(scenarios: list[str], segments: list[str], loss_rates: np.ndarray, title: str) -> bytes:
    """Grouped bars of loss rate (EL / exposure, in %) per segment, one bar per scenario, as PNG bytes.

    Args:
        scenarios: scenario names (one bar colour each).
        segments: segment names (one group each), e.g. ["all", "auto", ...].
        loss_rates: shares, shape (len(scenarios), len(segments)); NaN draws no bar.

    Raises:
        ValueError: `loss_rates` does not match the names.
    """
    rates = np.asarray(loss_rates, dtype=np.float64)
    if rates.shape != (len(scenarios), len(segments)):
        raise ValueError(f"loss rates of shape {rates.shape} do not match {len(scenarios)} scenarios x {len(segments)} segments")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(4.0 + 0.9 * len(segments), 16.0), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(segments))
    width = 0.8 / max(len(scenarios), 1)
    for i, name in enumerate(scenarios):
        ax.bar(x + (i - (len(scenarios) - 1) / 2) * width, 100.0 * rates[i], width, label=_safe_label(name))
    ax.set_xticks(x)
    ax.set_xticklabels([_safe_label(g, 20) for g in segments], rotation=30 if len(segments) > 6 else 0, ha="right" if len(segments) > 6 else "center")
    ax.set_ylabel("loss rate (%)")
    ax.set_title(_safe_label(title, 90))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def pd_distribution_png(edges: np.ndarray, histograms: dict[str, np.ndarray], title: str) -> bytes:
    """Step histograms (share of loans per PD bin, log scale) of several PD distributions, as PNG bytes.

    Args:
        edges: bin edges, one more than each histogram's bins.
        histograms: loans per bin, keyed by the label of each curve.

    Raises:
        ValueError: a histogram does not match `edges`.
    """
    edges = np.asarray(edges, dtype=np.float64)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, counts in histograms.items():
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (edges.size - 1,):
            raise ValueError(f"histogram {name!r} has {counts.size} bins for {edges.size} edges")
        total = counts.sum()
        ax.stairs(counts / total if total else counts, edges, label=_safe_label(name), linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("PD")
    ax.set_ylabel("share of loans")
    ax.set_title(_safe_label(title, 90))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def migration_heatmap_png(matrices: dict[str, np.ndarray], bands: list[str], title: str) -> bytes:
    """One heatmap per scenario of band migration (rows: baseline band, columns: scenario band), as PNG bytes.

    Cells are coloured by the share of the row's loans and labelled with the
    count and that share.

    Raises:
        ValueError: a matrix is not len(bands) x len(bands), or there is none.
    """
    if not matrices:
        raise ValueError("no migration matrix to draw")
    b = len(bands)
    for name, matrix in matrices.items():
        if np.asarray(matrix).shape != (b, b):
            raise ValueError(f"migration matrix {name!r} has shape {np.asarray(matrix).shape}, expected {(b, b)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(matrices)
    fig = Figure(figsize=(min(0.6 + 3.4 * n, 18.0), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    image = None
    for index, (ax, (name, matrix)) in enumerate(zip(axes, matrices.items())):
        counts = np.asarray(matrix, dtype=np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        image = ax.imshow(shares, cmap="Reds", vmin=0.0, vmax=1.0)
        for i in range(b):
            for j in range(b):
                ax.text(j, i, f"{int(counts[i, j]):,}\n{100 * shares[i, j]:.1f}%", ha="center", va="center",
                        fontsize=7, color="white" if shares[i, j] > 0.6 else "black")
        ax.set_xticks(range(b))
        ax.set_yticks(range(b))
        ax.set_xticklabels([_safe_label(b_, 12) for b_ in bands], fontsize=8)
        ax.set_yticklabels([_safe_label(b_, 12) for b_ in bands], fontsize=8)
        ax.set_xlabel("scenario band", fontsize=8)
        if index == 0:
            ax.set_ylabel("baseline band", fontsize=8)
        ax.set_title(_safe_label(name), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02, label="share of baseline band")
    fig.suptitle(_safe_label(title, 90), fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
