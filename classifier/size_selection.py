"""The input size as a cross-validated choice: the cross-validation images embedded at every candidate size.

The other model choices are linear maps of one embedding (`classifier.selection`); a size is not: each candidate
size runs the backbone again. What bounds the cost is that cross-validation only ever looks at the same few
training images (at most `HParams.cv_max_images`, picked by hash, so mostly the same ones from one retrain to
the next), each size's features of them are cached under that size (`classifier.cache` keys its namespaces by
backbone *and* size), and only the chosen size embeds the rest of the data. A retrain that keeps its size thus
embeds, at the other size, only the new images that joined the cross-validation set: about
``cv_max_images * new / total`` of them (about 100 for 1,000 new among 10,000).

A retrain whose choice moves to the other size embeds every image at the new size once, as a first training at
that size would, which on a large data set alone can exceed the retrain's 60 s target; the cache keeps both
sizes' features, so a later move back costs nothing. That is why a retrain moves only on a win larger than the
fold noise (`selection.size_hysteresis`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import DatasetError, Example
from classifier.embedding import (
    Embedder,
    FeatureExtractor,
    Progress,
    feature_cache_variant,
    feature_caches,
    no_progress,
)
from classifier.fitting import example_weights, label_indices
from classifier.hparams import HParams
from classifier.selection import Choice, candidates_on, choose, subsample_rank


def backbone_for(hparams: HParams, backbone_cache: str | Path | None):
    """The frozen backbone with the input size, feature layers and pooling these hyper-parameters resolve to."""
    from classifier.backbones import build_backbone

    return build_backbone(
        hparams.backbone,
        image_size=hparams.resolved_image_size(),
        weights=hparams.backbone_weights,
        cache_dir=backbone_cache,
        feature_layer=hparams.resolved_feature_layer(),
        pooling=hparams.resolved_pooling(),
    )


def cross_validation_images(train: Sequence[Example], hparams: HParams) -> list[Example]:
    """The training images cross-validation compares on: at most `cv_max_images`, the same ones each time by hash.

    `selection.choose` keeps the same ones of a larger set, so choosing on this subset is choosing on the set.
    """
    return sorted(train, key=lambda example: subsample_rank(example.split_key))[: hparams.cv_max_images]


def choose_image_size(
    train: Sequence[Example],
    labels: Sequence[str],
    hparams: HParams,
    *,
    backbone,
    cache_root: Path,
    backbone_cache: str | Path | None = None,
    extractor: FeatureExtractor | None = None,
    progress: Progress = no_progress,
    choose_l2: bool = True,
) -> tuple[Choice, Any]:
    """Cross-validate input sizes, feature candidates and L2 on the training images; the choice and its backbone.

    ``backbone`` is the one built for ``hparams`` (at their resolved size); the other candidate sizes get their
    own. ``extractor`` (the active version's LiteRT backbone) embeds at its own size and variant. Images that do
    not decode are left out here; embedding the whole split reports them.
    """
    sizes = hparams.image_size_candidates()
    images = cross_validation_images(train, hparams)
    started, embedded = time.monotonic(), []
    features_by_size: dict[int, dict[str, np.ndarray]] = {}
    candidates, backbones = {}, {}
    for index, size in enumerate(sizes):
        sized = replace(hparams, image_size=size, cv_image_sizes=())
        built = backbone if size == hparams.resolved_image_size() else backbone_for(sized, backbone_cache)
        variant = feature_cache_variant(built, sized)
        cache, _ = feature_caches(cache_root, sized, variant, mirror=False)
        same = extractor is not None and extractor.variant == variant and extractor.image_size == size
        embedder = Embedder(built, size, cache, forward=extractor.forward if same else None)

        def report(phase: str, done: int, total: int, offset: int = index * len(images)) -> None:
            progress("cross-validating", offset + done, len(sizes) * total)

        features_by_size[size], _, _ = embedder.features(images, report)
        embedded.append(embedder.embedded)
        candidates[size], backbones[size] = candidates_on(built, sized), built
    kept = [e for e in images if all(e.sha256 in features_by_size[size] for size in sizes)]
    if not kept:
        raise DatasetError("no decodable training images")
    seconds = round(time.monotonic() - started, 3)
    choice = choose(
        {size: np.stack([features_by_size[size][e.sha256] for e in kept]) for size in sizes},
        label_indices(labels, kept),
        example_weights(kept),
        np.arange(len(kept)),
        [e.split_key for e in kept],
        len(labels),
        hparams,
        candidates,
        choose_l2=choose_l2,
    )
    choice.record["embedding"] = {"embedded": embedded, "seconds": seconds}
    return choice, backbones[choice.image_size]
