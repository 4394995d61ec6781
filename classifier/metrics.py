"""Honest metrics for prohibited-vs-rest decisions and per label, computed with numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BINARY_LABELS = ["allowed", "prohibited"]


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic (ties count half); None when only one class is present."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(positive.sum())
    n_neg = int(len(positive) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties so equal scores contribute one half.
    start = 0
    while start < len(sorted_scores):
        end = start
        while end + 1 < len(sorted_scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary(truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None) -> dict:
    tp = int(np.sum(truth & predicted))
    tn = int(np.sum(~truth & ~predicted))
    fp = int(np.sum(~truth & predicted))
    fn = int(np.sum(truth & ~predicted))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _ratio(tp + tn, len(truth)),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": f1,
        "auc": roc_auc(truth, scores) if scores is not None else None,
        "support": int(truth.sum()),
    }


def compute_metrics(
    y_true_labels: Sequence[str],
    probabilities: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str],
    prohibited: Sequence[str],
    threshold: float | None = None,
) -> dict:
    """Metrics of the prohibited-vs-rest decision plus per-label one-vs-rest figures.

    An image counts as flagged when its argmax label is prohibited, or, with a threshold, when the summed
    probability of the prohibited labels reaches it (how the platform routes images to review). Top-level
    `confusion_matrix` rows are the true class and columns the decision, in the order of `labels`
    (["allowed", "prohibited"]); `label_confusion_matrix` is the same over the model's own labels. Undefined
    ratios (e.g. precision with nothing flagged) are None rather than a misleading 0.
    """
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({label for label in y_true_labels if label not in index})
    if unknown:
        raise ValueError(f"true label(s) not among the model's labels: {', '.join(unknown)}")
    probs = np.asarray(probabilities, dtype=np.float64).reshape(len(y_true_labels), len(labels))
    true_idx = np.array([index[label] for label in y_true_labels], dtype=np.int64)
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    prohibited_mask = np.array([label in set(prohibited) for label in labels], dtype=bool)
    scores = probs[:, prohibited_mask].sum(axis=1)
    truth = prohibited_mask[true_idx] if len(true_idx) else np.zeros(0, dtype=bool)
    flagged = scores >= threshold if threshold is not None else prohibited_mask[pred_idx]
    binary = _binary(truth, flagged, scores)
    binary.pop("support")
    confusion = [
        [int(np.sum(~truth & ~flagged)), int(np.sum(~truth & flagged))],
        [int(np.sum(truth & ~flagged)), int(np.sum(truth & flagged))],
    ]
    label_confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(label_confusion, (true_idx, pred_idx), 1)
    per_label = {}
    for i, label in enumerate(labels):
        per_label[label] = _binary(true_idx == i, pred_idx == i, probs[:, i])
        per_label[label]["prohibited"] = bool(prohibited_mask[i])
    return {
        **binary,
        "confusion_matrix": confusion,
        "labels": list(BINARY_LABELS),
        "n": len(true_idx),
        "threshold": threshold,
        "label_accuracy": _ratio(int(np.sum(true_idx == pred_idx)), len(true_idx)),
        "label_confusion_matrix": label_confusion.tolist(),
        "model_labels": labels,
        "per_label": per_label,
    }
