"""Training that changes what the backbone sees or computes: distortions, and fine-tuning of its top layers.

Random distortions change the pixels each epoch, and fine-tuning a backbone whose top is not a simple chain of
layers cannot start from cached feature maps, so both give up the bottleneck cache: every split is decoded into
memory once and Keras `fit` (`classifier.fitting.fit_pixels`) trains on it, as TensorFlow's retrain.py did.
This is the slow path; `classifier.training` takes it only when the hyper-parameters need it. Fine-tuning a
backbone whose top is such a chain trains on the cached maps below it instead (`fine_tune_on_maps`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from classifier.data import SPLITS, Example
from classifier.embedding import EMBED_BATCH, batched_predict, decode_all
from classifier.fitting import example_weights, fit_features, fit_pixels, label_indices, merge_history
from classifier.hparams import HParams


def decode_splits(
    groups: dict[str, list[Example]], size: int
) -> tuple[dict[str, list[Example]], dict[str, np.ndarray], list[tuple[str, str]]]:
    """Every split's decodable examples and their pixels in memory, and the images that did not decode."""
    kept: dict[str, list[Example]] = {}
    pixels: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    for name in SPLITS:
        kept[name], pixels[name], bad = decode_all(groups[name], size)
        skipped.extend(bad)
    return kept, pixels, skipped


def train_on_pixels(
    backbone,
    head,
    groups: dict[str, list[Example]],
    pixels: dict[str, np.ndarray],
    labels: list[str],
    hparams: HParams,
    log_dir: Path,
    on_epoch: Callable[[int], None],
) -> tuple[object, dict[str, list[float]], list[str]]:
    """Train on pixels: a new head unless ``head`` was trained on features already, then any fine-tuning.

    Returns the head, the per-epoch history of the phases run, and the names of the fine-tuned layers. The
    backbone is frozen again afterwards, so the saved model is frozen whatever was trained.
    """
    import keras

    from classifier.model import build_distortion, build_head, freeze, unfreeze_top

    tensorboard = keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, histogram_freq=0)
    y_of = {name: label_indices(labels, groups[name]) for name in SPLITS}
    phases = []
    if head is None:
        standardize = hparams.resolved_standardize()
        adapt_on = batched_predict(backbone, pixels["train"], batch=EMBED_BATCH) if standardize else None
        head = build_head(int(backbone.output_shape[-1]), len(labels), hparams, training_features=adapt_on)
        phases.append(("head", hparams.epochs, hparams.learning_rate, 0))
    if hparams.fine_tune_layers > 0:
        # Epochs count on from the head's, so TensorBoard and progress show one run.
        phases.append(("fine_tune", hparams.fine_tune_epochs, hparams.fine_tune_learning_rate, hparams.epochs))
    validation = (pixels["validation"], y_of["validation"]) if groups["validation"] else None
    size = hparams.resolved_image_size()
    history: dict[str, list[float]] = {}
    fine_tuned: list[str] = []
    for phase, epochs, learning_rate, offset in phases:
        if phase == "fine_tune":
            fine_tuned = unfreeze_top(backbone, hparams.fine_tune_layers)
        inputs = keras.Input((size, size, 3), name="image")
        x = build_distortion(hparams)(inputs) if hparams.distort else inputs
        trainer = keras.Model(inputs, head(backbone(x)), name="trainer")
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
            example_weights=example_weights(groups["train"]),
        )
        merge_history(history, more)
    freeze(backbone)
    return head, history, fine_tuned


def fine_tune_on_maps(
    backbone,
    head,
    arrays,
    top,
    hparams: HParams,
    log_dir: Path,
    on_epoch: Callable[[int], None],
) -> tuple[object, dict[str, list[float]], list[str]]:
    """Train the backbone's top layers (``top``, maps -> features) and the head together on cached feature maps.

    The fast fine-tuning path: when the backbone splits into a frozen bottom and a chain of top layers, the
    bottom's maps are cached like features and only the top runs each epoch. Returns the maps -> labels model,
    the fine-tuning epochs' history and the names of the fine-tuned layers; the backbone is frozen again after.
    """
    import keras

    from classifier.model import freeze, unfreeze_top

    fine_tuned = unfreeze_top(backbone, hparams.fine_tune_layers)
    inputs = keras.Input(tuple(arrays.x_train.shape[1:]), name="bottleneck")
    trainable = keras.Model(inputs, head(top(inputs)), name="fine_tune")
    history = fit_features(
        trainable,
        arrays.x_train,
        arrays.y_train,
        (arrays.x_val, arrays.y_val) if arrays.x_val is not None else None,
        hparams,
        log_dir,
        on_epoch,
        epochs=hparams.fine_tune_epochs,
        learning_rate=hparams.fine_tune_learning_rate,
        step_offset=hparams.epochs,
        example_weights=arrays.w_train,
        validation_weights=arrays.w_val,
    )
    freeze(backbone)
    return trainable, history, fine_tuned
