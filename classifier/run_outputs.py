"""What a training run reports beside its model: test and validation metrics, every example's out-of-sample
scores, and the check batch the LiteRT files are compared on.

Each function takes the run's shared state (`classifier.training._Run`: its splits, labels, progress and what
its steps recorded) once the model is trained.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from classifier.data import SPLITS
from classifier.embedding import decode_example
from classifier.fitting import example_weights
from classifier.metrics import compute_metrics

#: Training images decoded into every result as its check batch: the LiteRT files must score them as Keras does.
CHECK_IMAGES = 16


def out_of_sample(run, scored: dict[str, np.ndarray | None]) -> dict:
    """`TrainingResult.out_of_sample`: the train split's out-of-fold rows (when the head had folds) and the
    model's probabilities of the validation and test splits, which it never trained on."""
    keys, rows, sources = [], [], []
    parts = [("out_of_fold", run.groups["train"], run.out_of_fold)]
    parts += [(name, run.groups[name], scored.get(name)) for name in ("validation", "test")]
    for source, group, probabilities in parts:
        if probabilities is None or not group:
            continue
        keys += [example.sha256 for example in group]
        rows += [[round(float(p), 6) for p in row] for row in probabilities[: len(group)]]
        sources += [source] * len(group)
    return {"keys": keys, "probabilities": rows, "sources": sources}


def check_images(run) -> np.ndarray | None:
    """Up to `CHECK_IMAGES` training images spread over the split (by hash, so the same ones each time), decoded."""
    train = sorted(run.groups["train"], key=lambda example: example.sha256)
    sample = train[:: max(1, len(train) // CHECK_IMAGES)][:CHECK_IMAGES]
    pixels = [image for image in (decode_example(e, run.size, []) for e in sample) if image is not None]
    return np.stack(pixels) if pixels else None


def evaluate_splits(run, prohibited: list[str], probabilities_of: Callable[[str], np.ndarray | None]) -> dict:
    """Test metrics, with the validation split's under "validation", the split sizes and any L2 search."""
    metrics_by_split = {}
    evaluated, to_evaluate = 0, len(run.groups["test"]) + len(run.groups["validation"])
    for name in ("test", "validation"):
        group = run.groups[name]
        probabilities = probabilities_of(name)
        if probabilities is None:
            probabilities = np.zeros((0, len(run.labels)), dtype=np.float32)
        evaluated += len(group)
        run.progress("evaluating", evaluated, to_evaluate)
        weights = example_weights(group)
        metrics_by_split[name] = compute_metrics(
            [e.label for e in group],
            probabilities,
            run.labels,
            prohibited,
            sample_weight=weights if np.any(weights != 1.0) else None,
        )
    metrics = dict(metrics_by_split["test"])
    metrics["validation"] = metrics_by_split["validation"]
    metrics["split_sizes"] = {name: len(run.groups[name]) for name in SPLITS}
    if run.l2_search:
        metrics["l2_search"] = run.l2_search
    if run.chosen_by_cv:
        metrics["chosen_by_cv"] = run.chosen_by_cv
    return metrics
