"""Training curves and the confusion matrix as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: dict[str, list[float]], path: str | Path) -> None:
    """Per-epoch train/validation cross-entropy and accuracy, side by side."""
    plt = _pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((loss_axis, "loss", "cross-entropy"), (accuracy_axis, "accuracy", "accuracy")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + key) or []
            if values:
                axis.plot(range(1, len(values) + 1), values, label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    # A fixed layout: tight_layout costs seconds per figure on a busy 2-core machine.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.2)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_confusion(matrix: list[list[int]], labels: list[str], path: str | Path, title: str = "test set") -> None:
    """An annotated confusion matrix: rows are the true label, columns the predicted one."""
    import numpy as np

    plt = _pyplot()
    values = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    size = max(3.5, 0.9 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(values, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    top = values.max() if values.size else 0
    for (row, column), count in np.ndenumerate(values):
        colour = "white" if top and count > top / 2 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour)
    figure.subplots_adjust(left=0.25, right=0.95, bottom=0.25, top=0.9)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_result(result, curves: str | Path, confusion: str | Path) -> None:
    """A training result's curves and its test confusion matrix (all zeros when it has none), as two PNG files."""
    labels = list(result.labels)
    plot_curves(result.history, curves)
    plot_confusion(result.metrics.get("label_confusion_matrix") or [[0] * len(labels)] * len(labels), labels, confusion)
