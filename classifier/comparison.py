"""Comparing two models on the same images: paired changes of recall, precision and ROC AUC, with their noise.

The learning loop's promotion gate scores the active model and a candidate on one frozen holdout and must tell a
real improvement from the holdout's own noise. Because both models scored the very same images, the comparison
is paired: resampling images (a bootstrap) moves both models' figures together, so the spread of the
*difference* is much smaller than either figure's own, and a small real gain is not drowned out. Pure numpy,
no TensorFlow: the gate runs it in a web or worker process on outcomes it already has.
"""

from __future__ import annotations

import numpy as np

from classifier.metrics import weighted_roc_auc

#: A change and its bootstrap standard error, or None when the figure is undefined.
Change = tuple[float, float] | None


def paired_changes(active: dict, candidate: dict, resamples: int = 1000, seed: int = 0) -> dict[str, Change] | None:
    """Weighted recall, precision and ROC AUC changes from the active model to the candidate, with their noise.

    ``active`` and ``candidate`` are the ``"outcomes"`` of `classifier.evaluation.evaluate_model` with
    ``keep_outcomes=True`` on the same images: per image its key (sha256), whether it is prohibited, whether the
    model flags it, its prohibited score and its weight. The holdout is resampled with replacement (a bootstrap,
    ``resamples`` times, seeded so a verdict can be repeated) and both models' figures are recomputed on each
    resample. Returns ``{"recall": (change, standard error), "precision": ..., "auc": ...}``, each change from
    the whole holdout and its error from the spread over resamples; a change is None when undefined (nothing
    prohibited, or nothing flagged). None when the outcomes are not of the same images (or of none).
    """
    if active.get("keys") != candidate.get("keys") or not active.get("keys"):
        return None
    weights = np.asarray(active["weights"], dtype=np.float64)
    truth = np.asarray(active["prohibited"], dtype=bool)
    was = np.asarray(active["flagged"], dtype=bool)
    now = np.asarray(candidate["flagged"], dtype=bool)

    def figures(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # w: (k, n) weights per resample; returns recall and precision changes per resample (nan if undefined).
        with np.errstate(invalid="ignore", divide="ignore"):
            positives = w @ truth
            recall = ((w @ (truth & now)) - (w @ (truth & was))) / positives
            precision = (w @ (truth & now)) / (w @ now) - (w @ (truth & was)) / (w @ was)
        return recall, precision

    def auc_change(w: np.ndarray) -> float:
        before = weighted_roc_auc(truth, active["scores"], w)
        after = weighted_roc_auc(truth, candidate["scores"], w)
        return np.nan if before is None or after is None else after - before

    recall, precision = figures(weights[None, :])
    rng = np.random.default_rng(seed)
    # A resample as counts per image: weighting each image by how often it was drawn is the same as drawing it.
    counts = rng.multinomial(len(weights), np.full(len(weights), 1 / len(weights)), size=resamples)
    resampled = counts * weights[None, :]
    spread_recall, spread_precision = figures(resampled)
    spread_auc = np.array([auc_change(row) for row in resampled])

    def pair(point: float, spread: np.ndarray) -> Change:
        finite = spread[np.isfinite(spread)]
        if not np.isfinite(point):
            return None
        return float(point), float(finite.std()) if len(finite) > 1 else 0.0

    return {
        "recall": pair(recall[0], spread_recall),
        "precision": pair(precision[0], spread_precision),
        "auc": pair(auc_change(weights), spread_auc),
    }
