"""Evaluate a registered model version on labelled examples: prohibited vs rest, with no split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.data import Example
from classifier.metrics import compute_metrics, prohibited_decisions
from classifier.registry import LoadedModel


def evaluate_model(
    loaded: LoadedModel,
    examples: Sequence[Example],
    threshold: float | None = None,
    batch_size: int = 32,
    keep_outcomes: bool = False,
) -> dict:
    """compute_metrics over every example that decodes; undecodable ones are listed under "skipped".

    Example weights are passed through as sample weights when any differs from 1, so a weighted evaluation set
    (e.g. decisions weighted by inverse inclusion probability) gives weighted figures. With ``keep_outcomes``
    the result also holds, per decoded example, its sha256, whether it is prohibited, whether the model flags
    it, its prohibited score and its weight (``"outcomes"``), so two models can be compared image by image.
    """
    from classifier.images import ImageDecodeError, decode_image
    from classifier.scoring import compiled_forward

    forward = compiled_forward(loaded.model, loaded.image_size)
    truths: list[str] = []
    keys: list[str] = []
    weights: list[float] = []
    outputs: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    pending: list[np.ndarray] = []

    def flush():
        if pending:
            outputs.append(np.asarray(forward(np.stack(pending).astype(np.float32))))
            pending.clear()

    for example in examples:
        try:
            pending.append(decode_image(example.source(), loaded.image_size))
        except ImageDecodeError as error:
            skipped.append((example.name, str(error)))
            continue
        truths.append(example.label)
        keys.append(example.sha256)
        weights.append(float(example.weight))
        if len(pending) >= batch_size:
            flush()
    flush()
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(loaded.labels)))
    weighted = any(weight != 1.0 for weight in weights)
    metrics = compute_metrics(
        truths,
        probabilities,
        loaded.labels,
        loaded.prohibited,
        threshold=threshold,
        sample_weight=weights if weighted else None,
    )
    if keep_outcomes:
        scores, flagged = prohibited_decisions(probabilities, loaded.labels, loaded.prohibited, threshold)
        prohibited = set(loaded.prohibited)
        metrics["outcomes"] = {
            "keys": keys,
            "prohibited": [label in prohibited for label in truths],
            "flagged": [bool(flag) for flag in flagged],
            "scores": [float(score) for score in scores],
            "weights": weights,
        }
    metrics["model_version"] = loaded.version
    metrics["skipped"] = [list(item) for item in skipped]
    return metrics
