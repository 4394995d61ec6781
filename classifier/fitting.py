"""Fitting a head: the Keras fit on pixels, the compiled loop on cached features, and the weights both use.

Two loops, because the data comes two ways. Distortions and fine-tuning through the whole backbone need pixels
every epoch, which Keras `fit` handles well. A head on cached features trains on a few thousand in-memory
vectors, where `fit`'s per-epoch set-up would cost more than the training itself, so `fit_features` runs one
compiled TensorFlow function per epoch instead. Both weight each example by its own weight times its class
weight (`sample_weights`), stop early on the validation loss, and report epochs through ``on_epoch(done)``.
The rows they fit come from examples here too: label indices, example weights, and cached features stacked
with their mirror copies (`feature_arrays`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.data import Example
from classifier.embedding import batched_predict
from classifier.hparams import HParams


def class_weights(y: np.ndarray, n_labels: int, example_weights: np.ndarray | None = None) -> dict[int, float]:
    """Balanced class weights: each present class gets the same total weight.

    With example weights the class totals are sums of example weights, i.e. the classes' sizes in the population
    the weighted sample estimates, not in the biased sample itself. Balancing raw counts of a sample drawn mostly
    from flagged images would undo what the inverse-propensity weights correct.
    """
    if example_weights is None:
        example_weights = np.ones(len(y))
    counts = np.bincount(y, weights=example_weights, minlength=n_labels)
    present = counts > 0
    weights = np.ones(n_labels)
    weights[present] = float(np.sum(example_weights)) / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}


def sample_weights(y: np.ndarray, n_labels: int, hparams: HParams, example_weights: np.ndarray | None) -> np.ndarray:
    """Per-example loss weights: the example's own weight times its class weight (when class weights are on)."""
    own = np.ones(len(y)) if example_weights is None else np.asarray(example_weights, dtype=np.float64)
    if not hparams.class_weights:
        return own.astype(np.float32)
    by_class = class_weights(y, n_labels, own)
    return (own * np.array([by_class[int(label)] for label in y])).astype(np.float32)


def label_indices(labels: Sequence[str], examples: Sequence[Example]) -> np.ndarray:
    """The examples' label indices, in the order of ``labels`` (the model's outputs): the targets of a fit."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[e.label] for e in examples], dtype=np.int64)


def example_weights(examples: Sequence[Example]) -> np.ndarray:
    """The examples' own weights (`Example.weight`) as an array, in order."""
    return np.array([float(e.weight) for e in examples], dtype=np.float64)


def merge_history(history: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    """Append one phase's per-epoch figures to ``history``, so head and fine-tuning phases read as one run."""
    for key, values in more.items():
        history.setdefault(key, []).extend(float(v) for v in values)


@dataclass
class FeatureArrays:
    """Training and validation rows on cached features; with mirroring, training rows hold each image twice."""

    x_train: np.ndarray
    x_val: np.ndarray | None
    y_train: np.ndarray
    y_val: np.ndarray
    w_train: np.ndarray
    w_val: np.ndarray
    # What the head sees: the features themselves, or with fine-tuning the frozen top's output on the maps.
    pooled_train: np.ndarray
    pooled_val: np.ndarray | None
    # Row i and its mirror copy (row i + n) are the same image, so they always share a cross-validation fold.
    image_of_row: np.ndarray

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """What the head validates on, ``(features, labels)``; None without a validation split."""
        return (self.pooled_val, self.y_val) if self.pooled_val is not None else None


def feature_arrays(
    labels: Sequence[str],
    train: list[Example],
    validation: list[Example],
    features: dict[str, np.ndarray],
    mirrored: dict[str, np.ndarray] | None = None,
    top=None,
) -> FeatureArrays:
    """Stack cached features into training and validation rows, with ``mirrored`` copies as more training rows.

    ``features`` (and ``mirrored``) map an image's sha256 to its cached vector. With ``top``, the fine-tuned
    layers above cached feature maps, the head's inputs are ``top``'s output on those maps.
    """
    # Feature maps below fine-tuned layers stay float16 in memory, as in the cache; fit_features widens batches.
    dtype = np.float16 if top is not None else np.float32

    def stacked(group: list[Example], vectors: dict[str, np.ndarray]) -> np.ndarray | None:
        return np.stack([vectors[e.sha256] for e in group]).astype(dtype) if group else None

    x_train, x_val = stacked(train, features), stacked(validation, features)
    y_train, w_train = label_indices(labels, train), example_weights(train)
    if mirrored is not None:
        x_train = np.concatenate([x_train, stacked(train, mirrored)])
        y_train, w_train = np.concatenate([y_train, y_train]), np.concatenate([w_train, w_train])
    if top is not None:
        pooled_train = batched_predict(top, x_train)
        pooled_val = batched_predict(top, x_val) if x_val is not None else None
    else:
        pooled_train, pooled_val = x_train, x_val
    return FeatureArrays(
        x_train=x_train,
        x_val=x_val,
        y_train=y_train,
        y_val=label_indices(labels, validation),
        w_train=w_train,
        w_val=example_weights(validation),
        pooled_train=pooled_train,
        pooled_val=pooled_val,
        image_of_row=np.arange(len(y_train)) % len(train),
    )


def _epoch_callback(on_epoch: Callable[[int], None]):
    """A Keras callback calling ``on_epoch(epochs done)`` after each epoch; Keras counts from ``initial_epoch``."""
    import keras

    class EpochCallback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            on_epoch(epoch + 1)

    return EpochCallback()


def fit_pixels(
    model,
    x: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
    hparams: HParams,
    epochs: int,
    learning_rate: float,
    on_epoch: Callable[[int], None],
    callbacks: Sequence = (),
    initial_epoch: int = 0,
    example_weights: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Keras fit on pixels (distortions or fine-tuning), with early stopping that can also undo the phase."""
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=hparams.momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start_loss, start_weights = np.inf, None
    if validation is not None and initial_epoch:
        # A later phase (fine-tuning) starts from a trained model: if no epoch beats it, keep it as it was.
        start_loss = float(model.evaluate(*validation, batch_size=hparams.batch_size, verbose=0)[0])
        start_weights = model.get_weights()
    monitor = "val_loss" if validation is not None else "loss"
    stopper = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=hparams.early_stopping_patience, restore_best_weights=True
    )
    history = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        batch_size=hparams.batch_size,
        shuffle=True,
        sample_weight=sample_weights(y, model.output_shape[-1], hparams, example_weights),
        callbacks=[stopper, *callbacks, _epoch_callback(on_epoch)],
        verbose=0,
    )
    if start_weights is not None and min(history.history.get("val_loss", [np.inf])) >= start_loss:
        model.set_weights(start_weights)
    return history.history


def fit_features(
    head,
    x,
    y,
    validation,
    hparams: HParams,
    log_dir: Path | None,
    on_epoch: Callable[[int], None],
    epochs: int | None = None,
    learning_rate: float | None = None,
    step_offset: int = 0,
    example_weights: np.ndarray | None = None,
    validation_weights: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Train the head on in-memory feature arrays with one compiled function per epoch.

    Keras `fit` spends tens of milliseconds per epoch building iterators, which dominates when the data is a
    few thousand cached vectors; this loop keeps a retrain on cached features at a few seconds. Early stopping
    watches the validation loss (the training loss when there is no validation split) and restores the best
    weights, like Keras' EarlyStopping(restore_best_weights=True). Example weights scale the training loss and
    the validation loss and accuracy, so early stopping also judges on the weighted (population) estimate.
    """
    import keras
    import tensorflow as tf

    n_labels = head.output_shape[-1]
    sample_weight = sample_weights(y, n_labels, hparams, example_weights)
    epochs = hparams.epochs if epochs is None else epochs
    learning_rate = hparams.learning_rate if learning_rate is None else learning_rate
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=hparams.momentum)
    # Cached feature maps are kept as float16 to halve memory; each batch is widened on the fly.
    x_t = tf.constant(x)
    y_t = tf.constant(y, dtype=tf.int64)
    w_t = tf.constant(sample_weight)
    batch = int(hparams.batch_size)
    variables = head.trainable_weights

    @tf.function(reduce_retracing=True)
    def train_epoch(order):
        # Returns the epoch's mean cross-entropy and accuracy as seen during training (dropout on), like fit.
        total_loss = tf.constant(0.0)
        correct = tf.constant(0.0)
        for start in tf.range(0, tf.shape(order)[0], batch):
            idx = order[start : start + batch]
            xb = tf.cast(tf.gather(x_t, idx), tf.float32)
            yb, wb = tf.gather(y_t, idx), tf.gather(w_t, idx)
            with tf.GradientTape() as tape:
                probs = head(xb, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(yb, probs)
                loss = tf.reduce_mean(wb * per_example)
                if head.losses:
                    loss += tf.add_n(head.losses)
            optimizer.apply(tape.gradient(loss, variables), variables)
            total_loss += tf.reduce_sum(per_example)
            correct += tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=1), yb), tf.float32))
        count = tf.cast(tf.shape(order)[0], tf.float32)
        return total_loss / count, correct / count

    @tf.function(reduce_retracing=True)
    def measure(xs, ys, ws):
        total_loss = tf.constant(0.0)
        correct = tf.constant(0.0)
        n = tf.shape(xs)[0]
        for start in tf.range(0, n, 512):
            probs = head(tf.cast(xs[start : start + 512], tf.float32), training=False)
            yb, wb = ys[start : start + 512], ws[start : start + 512]
            total_loss += tf.reduce_sum(wb * keras.losses.sparse_categorical_crossentropy(yb, probs))
            correct += tf.reduce_sum(wb * tf.cast(tf.equal(tf.argmax(probs, axis=1), yb), tf.float32))
        count = tf.reduce_sum(ws)
        return total_loss / count, correct / count

    writers = {
        name: tf.summary.create_file_writer(str(log_dir / name))
        if log_dir is not None
        else tf.summary.create_noop_writer()
        for name in ("train", "validation")
    }
    rng = np.random.default_rng(hparams.seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    x_v = y_v = w_v = None
    if validation is not None:
        x_v, y_v = tf.constant(validation[0]), tf.constant(validation[1], dtype=tf.int64)
        own = np.ones(len(validation[1])) if validation_weights is None else validation_weights
        w_v = tf.constant(np.asarray(own, dtype=np.float32))
    # In a later phase (fine-tuning, step_offset > 0) the starting weights compete too, so a phase that only makes
    # the model worse is undone entirely. A new head's starting weights are random: on a small validation split
    # they can score a lower loss than the first epochs by chance, and must never be what training returns.
    best_loss = float(measure(x_v, y_v, w_v)[0]) if x_v is not None and step_offset else np.inf
    best_weights, waited = head.get_weights(), 0

    def record(split: str, prefix: str, loss: float, accuracy: float, step: int) -> None:
        # The same names Keras' TensorBoard callback writes, so both training paths read alike in TensorBoard.
        history[prefix + "loss"].append(loss)
        history[prefix + "accuracy"].append(accuracy)
        with writers[split].as_default():
            tf.summary.scalar("epoch_loss", loss, step=step)
            tf.summary.scalar("epoch_accuracy", accuracy, step=step)

    for epoch in range(epochs):
        loss, accuracy = (float(v) for v in train_epoch(tf.constant(rng.permutation(len(y)), dtype=tf.int64)))
        record("train", "", loss, accuracy, step_offset + epoch)
        watched = loss
        if x_v is not None:
            val_loss, val_accuracy = (float(v) for v in measure(x_v, y_v, w_v))
            record("validation", "val_", val_loss, val_accuracy, step_offset + epoch)
            watched = val_loss
        on_epoch(step_offset + epoch + 1)
        if not np.isfinite(watched):
            break
        if watched < best_loss - 1e-6:
            best_loss, best_weights, waited = watched, head.get_weights(), 0
        else:
            waited += 1
            if waited >= hparams.early_stopping_patience:
                break
    head.set_weights(best_weights)
    for writer in writers.values():
        writer.flush()
    return {key: values for key, values in history.items() if values}
