"""The paired comparison the promotion gate makes: how two models' figures on the same images differ, with noise.

Pure numpy on the outcomes `classifier.evaluation.evaluate_model(..., keep_outcomes=True)` returns, so the gate's
statistics can be tested and reused without a database or a model.
"""

import numpy as np

from classifier.metrics import weighted_roc_auc


def paired_changes(active: dict, candidate: dict, resamples: int = 1000, seed: int = 0) -> dict | None:
    """Weighted recall, precision and ROC AUC changes from the active model to the candidate, with their noise.

    Both models scored the same holdout images, so the comparison is paired: the holdout is resampled with
    replacement (a bootstrap, ``resamples`` times, seeded so a verdict can be repeated) and both models' figures
    are recomputed on each resample. Returns ``{"recall": (change, standard error), "precision": ...,
    "auc": ...}``, each change from the whole holdout and its error from the spread over resamples; a change is
    None when undefined (nothing prohibited, or nothing flagged). None when the outcomes are not of the same
    images.
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
    counts = rng.multinomial(len(weights), np.full(len(weights), 1 / len(weights)), size=resamples)
    resampled = counts * weights[None, :]
    spread_recall, spread_precision = figures(resampled)
    spread_auc = np.array([auc_change(row) for row in resampled])

    def pair(point: float, spread: np.ndarray):
        finite = spread[np.isfinite(spread)]
        if not np.isfinite(point):
            return None
        return float(point), float(finite.std()) if len(finite) > 1 else 0.0

    return {
        "recall": pair(recall[0], spread_recall),
        "precision": pair(precision[0], spread_precision),
        "auc": pair(auc_change(weights), spread_auc),
    }
