"""Evaluation charts as uint8 RGB arrays (for PNG files and TensorBoard image summaries).

matplotlib draws them off-screen (the Agg backend, no display needed); it is imported when a
chart is drawn, so loading the evaluators stays fast.
"""

from __future__ import annotations

import numpy as np


def _figure(width_in: float, height_in: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=100)


def _to_array(figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_matrix_picture(
    counts, labels, title: str, normalise_rows: bool = False, show_counts: bool = True
) -> np.ndarray:
    """Rows = ground truth, columns = prediction. Colour is the share of the row (when
    `normalise_rows`) or the count; each cell is labelled with its count (and share)."""
    counts = np.asarray(counts, np.float64)
    n = len(labels)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    colour = shares if normalise_rows else counts
    size = min(4.0 + 0.45 * n, 24.0)
    figure = _figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(colour, cmap="Blues", vmin=0, vmax=max(colour.max(), 1e-9))
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(n), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(n), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    axes.set_title(title, fontsize=9)
    if show_counts and n <= 40:
        limit = colour.max() / 2 if colour.max() > 0 else 1
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0:
                    continue
                text = f"{int(counts[i, j])}"
                if normalise_rows:
                    text = (
                        f"{shares[i, j]:.2f}"
                        if n > 12
                        else f"{int(counts[i, j])}\n{shares[i, j]:.2f}"
                    )
                axes.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6 if n > 12 else 7,
                    color="white" if colour[i, j] > limit else "black",
                )
    figure.tight_layout()
    return _to_array(figure)


def pr_curves_picture(recall, curves: dict, title: str) -> np.ndarray:
    """Precision over recall, one line per class (the legend holds each class's AP there)."""
    figure = _figure(7.0, 5.0)
    axes = figure.add_subplot()
    for name, precision in curves.items():
        axes.plot(recall, precision, linewidth=1.2, label=f"{name} {np.mean(precision):.3f}")
    if len(curves) > 1:
        mean = np.mean(list(curves.values()), axis=0)
        axes.plot(recall, mean, color="black", linewidth=2.5, label=f"all {np.mean(mean):.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return _to_array(figure)
