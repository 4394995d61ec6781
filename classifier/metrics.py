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


def weighted_roc_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float | None:
    """ROC AUC where each (positive, negative) pair counts with the product of their weights (ties count half).

    With all weights 1 this is `roc_auc`. None when either class has no weight.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    w_pos = float(weights[positive].sum())
    w_neg = float(weights[~positive].sum())
    if w_pos <= 0 or w_neg <= 0:
        return None
    unique, group = np.unique(scores, return_inverse=True)
    pos_in = np.bincount(group, weights=np.where(positive, weights, 0.0), minlength=len(unique))
    neg_in = np.bincount(group, weights=np.where(positive, 0.0, weights), minlength=len(unique))
    neg_below = np.cumsum(neg_in) - neg_in
    return float(np.sum(pos_in * (neg_below + 0.5 * neg_in)) / (w_pos * w_neg))


def _binary(
    truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None, weights: np.ndarray | None = None
) -> dict:
    if weights is None:
        tp = int(np.sum(truth & predicted))
        tn = int(np.sum(~truth & ~predicted))
        fp = int(np.sum(~truth & predicted))
        fn = int(np.sum(truth & ~predicted))
        total = len(truth)
        auc = roc_auc(truth, scores) if scores is not None else None
        support = int(truth.sum())
    else:
        tp = float(np.sum(weights[truth & predicted]))
        tn = float(np.sum(weights[~truth & ~predicted]))
        fp = float(np.sum(weights[~truth & predicted]))
        fn = float(np.sum(weights[truth & ~predicted]))
        total = float(np.sum(weights))
        auc = weighted_roc_auc(truth, scores, weights) if scores is not None else None
        support = float(np.sum(weights[truth]))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _ratio(tp + tn, total),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": f1,
        "auc": auc,
        "support": support,
    }


def prohibited_decisions(
    probabilities: np.ndarray, labels: Sequence[str], prohibited: Sequence[str], threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(prohibited score, flagged)`` per row: the summed prohibited probability, and whether it flags.

    Flagged means the score reaches ``threshold`` or, without one, that the argmax label is prohibited.
    """
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(labels))
    prohibited_mask = np.array([label in set(prohibited) for label in labels], dtype=bool)
    scores = probs[:, prohibited_mask].sum(axis=1)
    if threshold is not None:
        return scores, scores >= threshold
    pred_idx = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    return scores, prohibited_mask[pred_idx]


def compute_metrics(
    y_true_labels: Sequence[str],
    probabilities: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str],
    prohibited: Sequence[str],
    threshold: float | None = None,
    sample_weight: Sequence[float] | np.ndarray | None = None,
) -> dict:
    """Metrics of the prohibited-vs-rest decision plus per-label one-vs-rest figures.

    An image counts as flagged when its argmax label is prohibited, or, with a threshold, when the summed
    probability of the prohibited labels reaches it (how the platform routes images to review). Top-level
    `confusion_matrix` rows are the true class and columns the decision, in the order of `labels`
    (["allowed", "prohibited"]); `label_confusion_matrix` is the same over the model's own labels. Undefined
    ratios (e.g. precision with nothing flagged) are None rather than a misleading 0.

    `sample_weight` makes every figure a weighted one (confusion entries become sums of weights, AUC counts each
    pair with the product of its weights): with inverse-propensity weights they estimate the population's figures
    from a biased sample. `n` stays the number of examples; `weighted_n` is the sum of weights.
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
    truth = prohibited_mask[true_idx] if len(true_idx) else np.zeros(0, dtype=bool)
    scores, flagged = prohibited_decisions(probs, labels, prohibited, threshold)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if len(weights) != len(true_idx):
            raise ValueError(f"sample_weight has {len(weights)} entries for {len(true_idx)} examples")
        if np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise ValueError("sample_weight must be finite and non-negative")
    binary = _binary(truth, flagged, scores, weights)
    binary.pop("support")

    def count(mask: np.ndarray):
        return int(np.sum(mask)) if weights is None else float(np.sum(weights[mask]))

    confusion = [
        [count(~truth & ~flagged), count(~truth & flagged)],
        [count(truth & ~flagged), count(truth & flagged)],
    ]
    label_confusion = np.zeros((len(labels), len(labels)), dtype=np.int64 if weights is None else np.float64)
    np.add.at(label_confusion, (true_idx, pred_idx), 1 if weights is None else weights)
    per_label = {}
    for i, label in enumerate(labels):
        per_label[label] = _binary(true_idx == i, pred_idx == i, probs[:, i], weights)
        per_label[label]["prohibited"] = bool(prohibited_mask[i])
    total = len(true_idx) if weights is None else float(np.sum(weights))
    extra = {} if weights is None else {"weighted_n": total}
    return {
        **binary,
        "confusion_matrix": confusion,
        "labels": list(BINARY_LABELS),
        "n": len(true_idx),
        **extra,
        "threshold": threshold,
        "label_accuracy": _ratio(count(true_idx == pred_idx), total),
        "label_confusion_matrix": label_confusion.tolist(),
        "model_labels": labels,
        "per_label": per_label,
    }
