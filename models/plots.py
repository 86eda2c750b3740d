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
