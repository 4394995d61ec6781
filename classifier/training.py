"""Train a classifier: the package's entry point, `train_model`, composed of named steps, and its result.

The expensive part of transfer learning is the backbone's forward pass. Pooled features are cached on disk by
image hash (`classifier.embedding`), so a retrain after moderators labelled 10% more images embeds only those
10%; the head then trains on in-memory arrays in seconds (`classifier.fitting`), with any cross-validated bias
refit and head averaging (`classifier.heads`). Distortions and fine-tuning that cannot start from cached maps
need the pixels each epoch, so they run images through the backbone instead (`classifier.pixel_training`), as
retrain.py did. This module only decides which steps run, in what order, and assembles what they produce.

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
    FeatureExtractor,
    Progress,
    batched_predict,
    bottleneck_root,
    embed_examples,
    feature_cache_variant,
    feature_caches,
    no_progress,
)
from classifier.fitting import FeatureArrays, feature_arrays, fit_features, merge_history
from classifier.heads import (
    FoldProgress,
    choose_l2,
    cross_validation_folds,
    fold_units,
    out_of_fold_log_probabilities,
    refit_biases,
    searches_l2,
    shifted_probabilities,
)
from classifier.hparams import HParams
from classifier.negatives import add_ood_negatives, resolve_allowed_label
from classifier.pixel_training import decode_splits, fine_tune_on_maps, train_on_pixels
from classifier.run_outputs import check_images, evaluate_splits, out_of_sample
from classifier.selection import Choice, chosen_features, cross_validate, expand_head
from classifier.size_selection import backbone_for, choose_image_size

# `embed_examples` and `EmbedResult` live in classifier.embedding; callers of the package import them from here,
# beside `train_model`, as the two things a training pipeline does.
__all__ = ["EmbedResult", "TrainingResult", "embed_examples", "train_model"]


@dataclass
class TrainingResult:
    """One trained model with everything the registry saves beside it: labels, metrics, history, manifest."""

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
    # A sample of the training images (uint8, (n, size, size, 3)) the registry checks LiteRT files on.
    check_images: np.ndarray | None = None
    # What ran the backbone over images the cache lacked: "keras", or "litert" through a version's extractor.
    embedding_runtime: str = "keras"
    # The label that means "nothing prohibited" (what a rejection teaches), or None when the labels leave it open.
    allowed_label: str | None = None
    # The model choices cross-validation made on the training split (`classifier.selection`), or None.
    chosen_by_cv: dict | None = None
    # Every example's probabilities from a model that never trained on it, for calibration: {"keys": sha256s,
    # "probabilities": rows in `labels` order, "sources": "out_of_fold" (the train split, scored by fold heads
    # without its near-duplicate group, biases shifted as the final head's), "validation" or "test" (the model)}.
    out_of_sample: dict | None = None


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
        name = split(example) if split else split_of(example.split_key, hparams.test_share, hparams.validation_share)
        if name == "exclude":
            continue
        if name not in groups:
            raise ValueError(f"split function returned {name!r}; expected train, validation, test or exclude")
        groups[name].append(example)
    return groups, skipped


@dataclass
class _Run:
    """What the steps of one `train_model` call share: its inputs, and what each step adds for the result."""

    hparams: HParams
    labels: list[str]
    groups: dict[str, list[Example]]
    skipped: list[tuple[str, str]]
    progress: Progress
    log_dir: Path
    backbone: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    fine_tuned_layers: list[str] = field(default_factory=list)
    embedded: int = 0
    cached: int = 0
    feature_cache: dict | None = None
    l2_search: dict[str, float] = field(default_factory=dict)
    extractor: FeatureExtractor | None = None
    embedding_runtime: str = "keras"
    chosen_by_cv: dict | None = None
    # The train split's out-of-fold probabilities (one row per image, in `groups["train"]` order), or None.
    out_of_fold: np.ndarray | None = None

    @property
    def size(self) -> int:
        """The side length of the images the backbone takes."""
        return self.hparams.resolved_image_size()

    @property
    def total_epochs(self) -> int:
        """Epochs of all phases together (head, then any fine-tuning), as progress reports them."""
        fine_tune = self.hparams.fine_tune_epochs if self.hparams.fine_tune_layers > 0 else 0
        return self.hparams.epochs + fine_tune

    def on_epoch(self, done: int) -> None:
        """Report ``done`` epochs of all phases together as "training"."""
        self.progress("training", min(done, self.total_epochs), self.total_epochs)


def train_model(
    examples: Sequence[Example],
    labels: Sequence[str],
    prohibited: Sequence[str],
    hparams: HParams = HParams(),  # noqa: B008 - frozen dataclass, safe as a default
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    log_dir: str | Path | None = None,
    split: Callable[[Example], str] | None = None,
    *,
    backbone_cache: str | Path | None = None,
    extractor: FeatureExtractor | None = None,
    allowed_label: str | None = None,
) -> TrainingResult:
    """Train an image -> softmax model over `labels` and evaluate it on the test split.

    `split` lets the caller decide each example's split ("train", "validation", "test" or "exclude"); by default
    the stable content-hash split. Images that cannot be decoded are skipped and listed in the result. TensorBoard
    event files go to `log_dir` (a temporary directory when None, which the registry then keeps).

    Without distortions, the bottleneck cache (`cache_dir`, default ``bottlenecks/`` in the backbone cache) holds
    the frozen part's output: pooled features, or with fine-tuning the feature map below the fine-tuned layers,
    so warm retrains stay cheap in both cases. `backbone_cache` is where converted backbones are kept (default
    ``~/.cache/vigia``). TensorFlow's threads are the process owner's to set (`classifier.runtime`). An
    ``extractor`` (the active version's LiteRT backbone) embeds the images the cache lacks when its variant is the
    one this backbone fills; otherwise the Keras backbone does. ``allowed_label`` names the label that means
    "nothing prohibited" (default: the only label that is not prohibited); out-of-distribution negatives
    (`classifier.negatives`) join its training examples.
    """
    import keras

    from classifier.model import build_classifier, split_backbone

    started = time.monotonic()
    labels, prohibited = list(labels), list(prohibited)
    check_labels(examples, labels, prohibited)
    groups, skipped = _assign_splits(examples, hparams, split)
    allowed_label = resolve_allowed_label(labels, prohibited, allowed_label)
    ood = 0
    if allowed_label is not None and hparams.resolved_ood_negatives() and groups["train"]:
        ood = add_ood_negatives(
            groups,
            allowed_label,
            synthetic=hparams.ood_synthetic,
            test_share=hparams.test_share,
            share=hparams.ood_share,
        )
    if not groups["train"]:
        raise DatasetError("no training images after splitting; add images or lower test/validation shares")
    keras.utils.set_random_seed(hparams.seed)
    backbone = backbone_for(hparams, backbone_cache)
    temporary_logs = log_dir is None
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="vigia-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(hparams, labels, groups, skipped, progress or no_progress, log_dir, backbone, extractor=extractor)

    fine_tune = hparams.fine_tune_layers > 0
    # Fine-tuning on cached feature maps needs the backbone's top as a simple chain; otherwise it runs on pixels.
    cut = split_backbone(backbone, hparams.fine_tune_layers) if fine_tune and not hparams.distort else None
    # on_features scores cached features for evaluation: the head, or after fine-tuning the top layers + head.
    head = on_features = features = pixels = None
    if not hparams.distort:
        cache_root = bottleneck_root(cache_dir, backbone_cache)
        size_choice = None
        if len(hparams.image_size_candidates()) > 1:
            size_choice = _choose_image_size(run, cache_root, backbone_cache)
        features, mirrored = _embed(run, cache_root, cut)
        mirror = mirrored if run.hparams.mirror else None
        top = cut[1] if cut else None
        arrays = feature_arrays(run.labels, run.groups["train"], run.groups["validation"], features, mirror, top)
        head = on_features = _fit_head_on_features(run, arrays, size_choice)
        if cut:
            on_features, history, run.fine_tuned_layers = fine_tune_on_maps(
                run.backbone, head, arrays, cut[1], run.hparams, run.log_dir, run.on_epoch
            )
            merge_history(run.history, history)
            run.out_of_fold = None  # the fold heads scored features the fine-tuned layers no longer produce
    if hparams.distort or (fine_tune and cut is None):
        head, pixels = _train_on_pixels(run, head)
        run.out_of_fold = None
    run.progress("training", run.total_epochs, run.total_epochs)
    model = build_classifier(run.backbone, head, run.size)

    def probabilities_of(group_name: str) -> np.ndarray | None:
        if pixels is not None:
            return batched_predict(model, pixels[group_name], batch=EMBED_BATCH)
        group = run.groups[group_name]
        return batched_predict(on_features, np.stack([features[e.sha256] for e in group]) if group else None)

    scored = {name: probabilities_of(name) for name in ("test", "validation")}
    metrics = evaluate_splits(run, prohibited, scored.get)
    metrics["ood_negatives"] = ood
    return TrainingResult(
        model=model,
        labels=labels,
        prohibited=prohibited,
        hparams=run.hparams,
        history=run.history,
        metrics=metrics,
        manifest={name: sorted(e.sha256 for e in run.groups[name]) for name in SPLITS},
        embedded=run.embedded,
        cached=run.cached,
        skipped=run.skipped,
        seconds=time.monotonic() - started,
        image_size=run.size,
        log_dir=log_dir,
        fine_tuned_layers=run.fine_tuned_layers,
        feature_cache=run.feature_cache,
        log_dir_is_temporary=temporary_logs,
        check_images=check_images(run),
        embedding_runtime=run.embedding_runtime,
        allowed_label=allowed_label,
        chosen_by_cv=run.chosen_by_cv,
        out_of_sample=out_of_sample(run, scored),
    )


def _choose_image_size(run: _Run, cache_root: Path, backbone_cache: str | Path | None) -> Choice:
    """Every model choice at once, the input size among them (`classifier.size_selection`), before embedding.

    Only the chosen size embeds every split; the run goes on with its hyper-parameters and backbone.
    """
    run.progress("cross-validating", 0, 1)
    choice, run.backbone = choose_image_size(
        run.groups["train"],
        run.labels,
        run.hparams,
        backbone=run.backbone,
        cache_root=cache_root,
        backbone_cache=backbone_cache,
        extractor=run.extractor,
        progress=run.progress,
        choose_l2=not searches_l2(run.hparams, len(run.groups["train"])),
    )
    run.hparams, run.chosen_by_cv = choice.hparams, choice.record
    return choice


def _embed(run: _Run, cache_root: Path, cut: tuple | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features (and training images' mirror features) of every split, through the cache; drops what won't decode."""
    hparams = run.hparams
    variant = feature_cache_variant(run.backbone, hparams, cut[3] if cut else None)
    if not cut:
        run.feature_cache = {"backbone": hparams.backbone, "image_size": run.size, "variant": variant}
    # Garments, like most product photos, mean the same mirrored: training on both doubles the examples for
    # one more cached vector per training image. Validation and test images stay as photographed.
    cache, mirror_cache = feature_caches(cache_root, hparams, variant, hparams.mirror)
    forward = None
    extractor = run.extractor
    if extractor is not None and not cut and extractor.variant == variant and extractor.image_size == run.size:
        forward, run.embedding_runtime = extractor.forward, extractor.runtime
    embedder = Embedder(cut[0] if cut else run.backbone, run.size, cache, mirror_cache, forward)
    everything = [e for name in SPLITS for e in run.groups[name]]
    to_mirror = frozenset(e.sha256 for e in run.groups["train"]) if hparams.mirror else frozenset()
    features, mirrored, bad = embedder.features(everything, run.progress, mirror=to_mirror)
    run.skipped.extend(bad)
    run.embedded, run.cached = embedder.embedded, embedder.cached
    run.groups = {name: [e for e in group if e.sha256 in features] for name, group in run.groups.items()}
    if not run.groups["train"]:
        raise DatasetError("no decodable training images")
    return features, mirrored


def _fit_head_on_features(run: _Run, arrays: FeatureArrays, choice: Choice | None = None):
    """The head trained on cached features, after any L2 search, with its output biases refit when weights ask.

    ``choice`` is what cross-validation already chose with the input size; without one, and with
    cross-validation on, the features and L2 are chosen here on the run's own arrays.
    """
    from classifier.model import build_head

    hparams, n_labels = run.hparams, len(run.labels)
    folds = cross_validation_folds(hparams)
    searching = searches_l2(hparams, len(run.groups["train"]))
    union_dim = arrays.pooled_train.shape[1]
    split_keys = [example.split_key for example in run.groups["train"]]
    if choice is not None:
        arrays = chosen_features(choice, arrays)
    elif hparams.resolved_cv_folds():
        run.progress("cross-validating", 0, 1)
        choice, arrays = cross_validate(arrays, split_keys, n_labels, hparams, run.backbone, choose_l2=not searching)
        hparams = run.hparams = choice.hparams
        run.chosen_by_cv = choice.record
    fold_progress = FoldProgress(run.progress, folds * (len(hparams.l2_grid) if searching else 1))
    out_of_fold, fold_heads = None, []
    x, y = arrays.pooled_train, arrays.y_train
    rows_of = fold_units(split_keys, arrays.image_of_row)
    if searching:
        fold_progress.start()
        hparams, out_of_fold, fold_heads, run.l2_search = choose_l2(
            x, y, arrays.w_train, rows_of, n_labels, hparams, arrays.validation, fold_progress
        )
        run.hparams = hparams
    head = build_head(x.shape[1], n_labels, hparams, training_features=x)
    # In the "bias" mode the weights move only the output biases, after the head has learned unweighted.
    in_loss = hparams.example_weighting == "loss"
    history = fit_features(
        head,
        x,
        y,
        arrays.validation,
        hparams,
        run.log_dir,
        run.on_epoch,
        example_weights=arrays.w_train if in_loss else None,
        validation_weights=arrays.w_val if in_loss else None,
    )
    merge_history(run.history, history)
    shift = None
    if hparams.example_weighting == "bias":
        if hparams.bias_folds >= 2 and out_of_fold is None:
            fold_progress.start()
            out_of_fold, fold_heads = out_of_fold_log_probabilities(
                x, y, rows_of, n_labels, hparams, folds, arrays.validation, fold_progress
            )
        validation = (arrays.pooled_val, arrays.y_val, arrays.w_val) if arrays.validation else None
        shift = refit_biases(head, (x, y, arrays.w_train), validation, hparams, n_labels, out_of_fold, fold_heads)
    if out_of_fold is not None:
        # Scores of the train split's images (not their mirror rows), shifted as the final head's biases were.
        run.out_of_fold = shifted_probabilities(out_of_fold[: len(run.groups["train"])], shift)
    return expand_head(head, choice.candidate, union_dim, hparams) if choice else head


def _train_on_pixels(run: _Run, head) -> tuple[Any, dict[str, np.ndarray]]:
    """Decode every split and train on its pixels (`classifier.pixel_training`); returns the head and the pixels."""
    run.groups, pixels, bad = decode_splits(run.groups, run.size)
    run.skipped.extend(bad)
    if not run.groups["train"]:
        raise DatasetError("no decodable training images")
    if run.hparams.distort:
        # Nothing came from the cache: every image went through the backbone.
        run.embedded = sum(len(group) for group in run.groups.values())
    head, history, run.fine_tuned_layers = train_on_pixels(
        run.backbone, head, run.groups, pixels, run.labels, run.hparams, run.log_dir, run.on_epoch
    )
    merge_history(run.history, history)
    return head, pixels
