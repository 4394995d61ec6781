"""Evaluate a registered model version on labelled examples: prohibited vs rest, with no split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifier.data import Example
from classifier.metrics import compute_metrics, prohibited_decisions
from classifier.registry import LoadedModel


def _parts_on_cached_features(loaded: LoadedModel):
    """``(backbone, head)`` of a saved classifier whose backbone made the features its metadata points at.

    A saved classifier is ``head(backbone(image))``. Its head can score cached features only if the backbone is
    exactly the one that filled the cache, which the weights fingerprint at the start of the variant tells; any
    doubt (an older version without the record, a different structure, other weights) returns None and the
    caller scores pixels through the whole model instead.
    """
    from classifier.model import classifier_parts, weights_fingerprint

    record = loaded.feature_cache or {}
    variant = str(record.get("variant") or "")
    if not variant or record.get("image_size") != loaded.image_size:
        return None
    parts = classifier_parts(loaded.model)
    if parts is None or not variant.startswith(weights_fingerprint(parts[0])):
        return None
    return parts


def _probabilities_from_cache(loaded: LoadedModel, parts, examples: Sequence[Example], cache_dir: str | Path):
    from classifier.cache import BottleneckCache
    from classifier.embedding import Embedder, batched_predict

    backbone, head = parts
    record = loaded.feature_cache
    cache = BottleneckCache(cache_dir, str(record["backbone"]), loaded.image_size, variant=str(record["variant"]))
    embedder = Embedder(backbone, loaded.image_size, cache)
    features, _, skipped = embedder.features(list(examples))
    kept = [example for example in examples if example.sha256 in features]
    stacked = np.stack([features[example.sha256] for example in kept]) if kept else None
    probabilities = batched_predict(head, stacked)
    if probabilities is None:
        probabilities = np.zeros((0, len(loaded.labels)), dtype=np.float32)
    return kept, probabilities, skipped, embedder.embedded


def _probabilities_from_pixels(loaded: LoadedModel, examples: Sequence[Example], batch_size: int):
    from classifier.embedding import decode_example, traced_forward

    forward = traced_forward(loaded.model, loaded.image_size)
    kept: list[Example] = []
    outputs: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    pending: list[np.ndarray] = []

    def flush():
        if pending:
            outputs.append(np.asarray(forward(np.stack(pending).astype(np.float32))))
            pending.clear()

    for example in examples:
        pixels = decode_example(example, loaded.image_size, skipped)
        if pixels is None:
            continue
        pending.append(pixels)
        kept.append(example)
        if len(pending) >= batch_size:
            flush()
    flush()
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(loaded.labels)))
    return kept, probabilities, skipped, len(kept)


def evaluate_model(
    loaded: LoadedModel,
    examples: Sequence[Example],
    threshold: float | None = None,
    batch_size: int = 32,
    keep_outcomes: bool = False,
    cache_dir: str | Path | None = None,
) -> dict:
    """compute_metrics over every example that decodes; undecodable ones are listed under "skipped".

    Example weights are passed through as sample weights when any differs from 1, so a weighted evaluation set
    (e.g. decisions weighted by inverse inclusion probability) gives weighted figures. With ``keep_outcomes``
    the result also holds, per decoded example, its sha256, whether it is prohibited, whether the model flags
    it, its prohibited score and its weight (``"outcomes"``), so two models can be compared image by image.

    With ``cache_dir`` (the bottleneck cache training used), a model whose backbone filled that cache is scored
    by running only its head on the cached features; images not cached yet are embedded by the model's own
    backbone and added. Two versions on the same backbone then cost one embedding per image between them, not
    one full forward pass each. ``"embedded"`` says how many images had to go through a backbone.
    """
    parts = _parts_on_cached_features(loaded) if cache_dir is not None else None
    if parts is not None:
        kept, probabilities, skipped, embedded = _probabilities_from_cache(loaded, parts, examples, cache_dir)
    else:
        kept, probabilities, skipped, embedded = _probabilities_from_pixels(loaded, examples, batch_size)
    truths = [example.label for example in kept]
    weights = [float(example.weight) for example in kept]
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
            "keys": [example.sha256 for example in kept],
            "prohibited": [label in prohibited for label in truths],
            "flagged": [bool(flag) for flag in flagged],
            "scores": [float(score) for score in scores],
            "weights": weights,
        }
    metrics["model_version"] = loaded.version
    metrics["skipped"] = [list(item) for item in skipped]
    metrics["embedded"] = embedded
    metrics["scored_on_cached_features"] = parts is not None
    return metrics
