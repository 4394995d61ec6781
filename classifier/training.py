"""Train a classifier: embed images once through the frozen backbone (cached), fit a softmax head, evaluate.

The expensive part of transfer learning is the backbone's forward pass. Pooled features are cached on disk by
image hash, so a retrain after moderators labelled 10% more images embeds only those 10%; the head then trains
on in-memory arrays in seconds. Distortions and fine-tuning need the pixels each epoch, so they run images
through the backbone instead, as retrain.py did.

Examples may carry weights (`Example.weight`, default 1): each example's loss is multiplied by its weight, and
balanced class weights, when on, balance the classes' weighted totals rather than their raw counts.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier.data import SPLITS, DatasetError, Example, check_labels, split_of
from classifier.embedding import (
    EMBED_BATCH,
    Embedder,
    EmbedResult,
    Progress,
    batched_predict,
    bottleneck_root,
    decode_all,
    embed_examples,
    feature_cache_variant,
    feature_caches,
    no_progress,
)
from classifier.fitting import fit_features, fit_pixels, merge_history, sample_weights
from classifier.heads import (
    add_output_bias,
    average_heads,
    choose_l2,
    cross_validation_folds,
    fit_bias_shift,
    head_log_probabilities,
    out_of_fold_log_probabilities,
    refit_output_bias,
    searches_l2,
)
from classifier.hparams import HParams
from classifier.metrics import compute_metrics

# `embed_examples` and `EmbedResult` live in classifier.embedding; callers of the package import them from here,
# beside `train_model`, as the two things a training pipeline does.
__all__ = ["EmbedResult", "TrainingResult", "embed_examples", "train_model"]


@dataclass
class TrainingResult:
    model: Any
    labels: list[str]
    prohibited: list[str]
    hparams: HParams
    history: dict[str, list[float]]
    metrics: dict
    manifest: dict[str, list[str]]
    embedded: int
    cached: int
    skipped: list[tuple[str, str]]
    seconds: float
    image_size: int = 0
    log_dir: Path | None = None
    fine_tuned_layers: list[str] = field(default_factory=list)
    # Where the model's own pooled features live in the bottleneck cache ({"backbone", "image_size", "variant"}),
    # when its backbone is the frozen one the cache was filled with; None after fine-tuning or distortions.
    feature_cache: dict | None = None
    # True when log_dir is a temporary directory made by train_model, which the registry may remove once copied.
    log_dir_is_temporary: bool = False


def _assign_splits(
    examples: Sequence[Example], hparams: HParams, split: Callable[[Example], str] | None
) -> tuple[dict[str, list[Example]], list[tuple[str, str]]]:
    """Group examples by split, dropping repeated pictures (first wins) and "exclude"d ones."""
    groups: dict[str, list[Example]] = {name: [] for name in SPLITS}
    seen: dict[str, Example] = {}
    skipped: list[tuple[str, str]] = []
    for example in examples:
        previous = seen.get(example.sha256)
        if previous is not None:
            if previous.label != example.label:
                skipped.append((example.name, f"same image already labelled {previous.label!r}"))
            continue
        seen[example.sha256] = example
        name = split(example) if split else split_of(example.sha256, hparams.test_share, hparams.validation_share)
        if name == "exclude":
            continue
        if name not in groups:
            raise ValueError(f"split function returned {name!r}; expected train, validation, test or exclude")
        groups[name].append(example)
    return groups, skipped


def train_model(
    examples: Sequence[Example],
    labels: Sequence[str],
    prohibited: Sequence[str],
    hparams: HParams = HParams(),  # noqa: B008 - frozen dataclass, safe as a default
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    log_dir: str | Path | None = None,
    split: Callable[[Example], str] | None = None,
) -> TrainingResult:
    """Train an image -> softmax model over `labels` and evaluate it on the test split.

    `split` lets the caller decide each example's split ("train", "validation", "test" or "exclude"); by default
    the stable content-hash split. Images that cannot be decoded are skipped and listed in the result. TensorBoard
    event files go to `log_dir` (a temporary directory when None, which the registry then keeps).

    Without distortions, the cache holds the frozen part's output: pooled features, or with fine-tuning the
    feature map below the fine-tuned layers, so warm retrains stay cheap in both cases.
    """
    import keras

    from classifier.backbones import build_backbone
    from classifier.model import (
        build_classifier,
        build_distortion,
        build_head,
        freeze,
        split_backbone,
        unfreeze_top,
    )
    from classifier.runtime import configure_threads

    started = time.monotonic()
    progress = progress or no_progress
    labels = list(labels)
    prohibited = list(prohibited)
    check_labels(examples, labels, prohibited)
    configure_threads()
    groups, skipped = _assign_splits(examples, hparams, split)
    if not groups["train"]:
        raise DatasetError("no training images after splitting; add images or lower test/validation shares")
    keras.utils.set_random_seed(hparams.seed)
    size = hparams.resolved_image_size()
    feature_layer = hparams.resolved_feature_layer()
    pooling = hparams.resolved_pooling()
    backbone = build_backbone(
        hparams.backbone,
        image_size=size,
        weights=hparams.backbone_weights,
        feature_layer=feature_layer,
        pooling=pooling,
    )
    index = {label: i for i, label in enumerate(labels)}
    temporary_logs = log_dir is None
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="vigia-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    fine_tune = hparams.fine_tune_layers > 0
    total_epochs = hparams.epochs + (hparams.fine_tune_epochs if fine_tune else 0)
    history: dict[str, list[float]] = {}
    fine_layers: list[str] = []
    embedded = cached = 0
    feature_cache = None
    l2_search: dict[str, float] = {}

    def on_epoch(done: int) -> None:
        progress("training", min(done, total_epochs), total_epochs)

    def targets(group: list[Example]) -> np.ndarray:
        return np.array([index[e.label] for e in group], dtype=np.int64)

    def weights_of(group: list[Example]) -> np.ndarray:
        return np.array([float(e.weight) for e in group], dtype=np.float64)

    cut = split_backbone(backbone, hparams.fine_tune_layers) if fine_tune and not hparams.distort else None
    use_pixels = hparams.distort or (fine_tune and cut is None)
    head = None
    trainable = None
    features: dict[str, np.ndarray] = {}

    if not hparams.distort:
        variant = feature_cache_variant(backbone, hparams, cut[3] if cut else None)
        if not cut:
            feature_cache = {"backbone": hparams.backbone, "image_size": size, "variant": variant}
        extractor = cut[0] if cut else backbone
        # Garments, like most product photos, mean the same mirrored: training on both doubles the examples for
        # one more cached vector per training image. Validation and test images stay as photographed.
        cache, mirror_cache = feature_caches(bottleneck_root(cache_dir), hparams, variant, hparams.mirror)
        embedder = Embedder(extractor, size, cache, mirror_cache)
        everything = [e for name in SPLITS for e in groups[name]]
        to_mirror = frozenset(e.sha256 for e in groups["train"]) if hparams.mirror else frozenset()
        features, mirrored, bad = embedder.features(everything, progress, mirror=to_mirror)
        skipped.extend(bad)
        embedded, cached = embedder.embedded, embedder.cached
        groups = {name: [e for e in group if e.sha256 in features] for name, group in groups.items()}
        if not groups["train"]:
            raise DatasetError("no decodable training images")
        dtype = np.float16 if cut else np.float32

        def stacked(name: str) -> np.ndarray | None:
            group = groups[name]
            return np.stack([features[e.sha256] for e in group]).astype(dtype) if group else None

        x_train, x_val = stacked("train"), stacked("validation")
        y_train, y_val = targets(groups["train"]), targets(groups["validation"])
        w_train, w_val = weights_of(groups["train"]), weights_of(groups["validation"])
        if hparams.mirror:
            x_train = np.concatenate([x_train, np.stack([mirrored[e.sha256] for e in groups["train"]]).astype(dtype)])
            y_train, w_train = np.concatenate([y_train, y_train]), np.concatenate([w_train, w_train])
        if cut:
            top = cut[1]
            pooled_train = batched_predict(top, x_train)
            pooled_val = batched_predict(top, x_val) if x_val is not None else None
        else:
            pooled_train, pooled_val = x_train, x_val
        validation = (pooled_val, y_val) if pooled_val is not None else None
        image_of_row = np.arange(len(y_train)) % len(groups["train"])
        out_of_fold, fold_heads = None, []
        folds = cross_validation_folds(hparams)
        searching = searches_l2(hparams, len(groups["train"]))
        # Fold heads report as "cross-validating k/n": the L2 search's (one set per value), else the bias refit's.
        fold_fits = {"done": 0, "total": folds * (len(hparams.l2_grid) if searching else 1)}

        def on_fold() -> None:
            fold_fits["done"] += 1
            progress("cross-validating", fold_fits["done"], fold_fits["total"])

        if searching:
            progress("cross-validating", 0, fold_fits["total"])
            hparams, out_of_fold, fold_heads, l2_search = choose_l2(
                pooled_train, y_train, w_train, image_of_row, len(labels), hparams, validation, on_fold
            )
        head = build_head(pooled_train.shape[1], len(labels), hparams, training_features=pooled_train)
        weights_in_loss = hparams.example_weighting == "loss"
        merge_history(
            history,
            fit_features(
                head,
                pooled_train,
                y_train,
                validation,
                hparams,
                log_dir,
                on_epoch,
                example_weights=w_train if weights_in_loss else None,
                validation_weights=w_val if weights_in_loss else None,
            ),
        )
        if hparams.example_weighting == "bias":
            parts = [(pooled_train, y_train, w_train)] + ([(pooled_val, y_val, w_val)] if validation else [])
            x_all, y_all, w_all = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
            bias_weights = sample_weights(y_all, len(labels), hparams, w_all)
            if hparams.bias_folds >= 2:
                if out_of_fold is None:
                    progress("cross-validating", 0, fold_fits["total"])
                    out_of_fold, fold_heads = out_of_fold_log_probabilities(
                        pooled_train, y_train, image_of_row, len(labels), hparams, folds, validation, on_fold
                    )
                if hparams.average_fold_heads:
                    average_heads(head, fold_heads)
                log_p = [out_of_fold]
                if validation:
                    log_p.append(head_log_probabilities(head, pooled_val))
                add_output_bias(head, fit_bias_shift(np.concatenate(log_p), y_all, bias_weights))
            else:
                refit_output_bias(head, x_all, y_all, bias_weights)
        if cut:
            fine_layers = unfreeze_top(backbone, hparams.fine_tune_layers)
            inputs = keras.Input(tuple(x_train.shape[1:]), name="bottleneck")
            trainable = keras.Model(inputs, head(cut[1](inputs)), name="fine_tune")
            merge_history(
                history,
                fit_features(
                    trainable,
                    x_train,
                    y_train,
                    (x_val, y_val) if x_val is not None else None,
                    hparams,
                    log_dir,
                    on_epoch,
                    epochs=hparams.fine_tune_epochs,
                    learning_rate=hparams.fine_tune_learning_rate,
                    step_offset=hparams.epochs,
                    example_weights=w_train,
                    validation_weights=w_val,
                ),
            )
            freeze(backbone)

    pixels: dict[str, np.ndarray] = {}
    if use_pixels:
        tensorboard = keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, histogram_freq=0)
        for name in SPLITS:
            kept, array, bad = decode_all(groups[name], size)
            groups[name] = kept
            pixels[name] = array
            skipped.extend(bad)
        if not groups["train"]:
            raise DatasetError("no decodable training images")
        if hparams.distort:
            embedded = sum(len(group) for group in groups.values())
        y_of = {name: targets(groups[name]) for name in SPLITS}
        phases = []
        if head is None:
            adapt_on = (
                batched_predict(backbone, pixels["train"], batch=EMBED_BATCH)
                if hparams.resolved_standardize()
                else None
            )
            head = build_head(int(backbone.output_shape[-1]), len(labels), hparams, training_features=adapt_on)
            phases.append(("head", hparams.epochs, hparams.learning_rate, 0))
        if fine_tune:
            phases.append(("fine_tune", hparams.fine_tune_epochs, hparams.fine_tune_learning_rate, hparams.epochs))
        for phase, epochs, learning_rate, offset in phases:
            if phase == "fine_tune":
                fine_layers = unfreeze_top(backbone, hparams.fine_tune_layers)
            inputs = keras.Input((size, size, 3), name="image")
            x = build_distortion(hparams)(inputs) if hparams.distort else inputs
            trainer = keras.Model(inputs, head(backbone(x)), name="trainer")
            validation = (pixels["validation"], y_of["validation"]) if groups["validation"] else None
            more = fit_pixels(
                trainer,
                pixels["train"],
                y_of["train"],
                validation,
                hparams,
                epochs,
                learning_rate,
                on_epoch,
                [tensorboard],
                initial_epoch=offset,
                example_weights=weights_of(groups["train"]),
            )
            merge_history(history, more)
        freeze(backbone)

    progress("training", total_epochs, total_epochs)
    model = build_classifier(backbone, head, size)
    metrics_by_split = {}
    evaluated = 0
    to_evaluate = len(groups["test"]) + len(groups["validation"])
    for name in ("test", "validation"):
        group = groups[name]
        if use_pixels:
            probabilities = batched_predict(model, pixels[name], batch=EMBED_BATCH)
        else:
            stacked_features = np.stack([features[e.sha256] for e in group]) if group else None
            probabilities = batched_predict(trainable if cut else head, stacked_features)
        if probabilities is None:
            probabilities = np.zeros((0, len(labels)), dtype=np.float32)
        evaluated += len(group)
        progress("evaluating", evaluated, to_evaluate)
        group_weights = weights_of(group)
        metrics_by_split[name] = compute_metrics(
            [e.label for e in group],
            probabilities,
            labels,
            prohibited,
            sample_weight=group_weights if np.any(group_weights != 1.0) else None,
        )
    metrics = dict(metrics_by_split["test"])
    metrics["validation"] = metrics_by_split["validation"]
    metrics["split_sizes"] = {name: len(groups[name]) for name in SPLITS}
    if l2_search:
        metrics["l2_search"] = l2_search
    manifest = {name: sorted(e.sha256 for e in groups[name]) for name in SPLITS}
    return TrainingResult(
        model=model,
        labels=labels,
        prohibited=prohibited,
        hparams=hparams,
        history=history,
        metrics=metrics,
        manifest=manifest,
        embedded=embedded,
        cached=cached,
        skipped=skipped,
        seconds=time.monotonic() - started,
        image_size=size,
        log_dir=log_dir,
        fine_tuned_layers=fine_layers,
        feature_cache=feature_cache,
        log_dir_is_temporary=temporary_logs,
    )
