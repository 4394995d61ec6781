"""Heads beyond one fit: out-of-fold scores, the L2 choice by cross-validation, output-bias refits, averaging.

With example weights in the "bias" mode (`HParams.example_weighting`), a head is trained unweighted and only its
output biases are refit with the weights. Refit on the head's own training scores, the biases chase the few
heavy audit images it has already fitted; refit on out-of-fold scores (`HParams.bias_folds`), they do not. The
fold heads trained for that can also choose the L2 strength (`HParams.l2_grid`) and be averaged into the final
head (`HParams.average_fold_heads`). Everything here works on plain softmax heads from `classifier.model`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from classifier.embedding import Progress, batched_predict
from classifier.fitting import fit_features, sample_weights
from classifier.hparams import HParams

#: Above this many training images a retrain keeps its L2 strength instead of searching `HParams.l2_grid`: the
#: search costs one set of fold heads per value, and with thousands of images the choice matters less.
L2_SEARCH_MAX_IMAGES = 2000


def cross_validation_folds(hparams: HParams) -> int:
    """How many fold heads the bias refit trains: `HParams.bias_folds` in the "bias" mode, else none (0)."""
    return hparams.bias_folds if hparams.example_weighting == "bias" and hparams.bias_folds >= 2 else 0


def searches_l2(hparams: HParams, training_images: int) -> bool:
    """Whether a retrain on ``training_images`` images chooses its L2 strength from `HParams.l2_grid`."""
    # Read at call time, so the limit can be lowered for one process (tests do).
    return bool(cross_validation_folds(hparams) and hparams.l2_grid) and training_images <= L2_SEARCH_MAX_IMAGES


class FoldProgress:
    """Reports fold heads as "cross-validating k/n": the L2 search's (one set per value), else the bias refit's."""

    def __init__(self, progress: Progress, total: int):
        self.progress, self.done, self.total = progress, 0, total

    def start(self) -> None:
        """Report that the fold heads are about to train (0 of the total)."""
        self.progress("cross-validating", 0, self.total)

    def __call__(self) -> None:
        self.done += 1
        self.progress("cross-validating", self.done, self.total)


def head_log_probabilities(head, x: np.ndarray) -> np.ndarray:
    """The head's log-probabilities on ``x``, clipped away from log(0) so a sure miss stays a finite loss."""
    return np.log(np.clip(batched_predict(head, x), 1e-12, 1.0))


def fit_bias_shift(log_p: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, steps: int = 500) -> np.ndarray:
    """The per-label constants that, added to ``log_p``, minimise the weighted cross-entropy (mean zero)."""
    log_p = np.asarray(log_p, dtype=np.float64)
    weights = np.asarray(sample_weight, dtype=np.float64)
    weights = weights / weights.sum()
    onehot = np.eye(log_p.shape[1])[y]
    shift = np.zeros(log_p.shape[1])
    for _ in range(steps):
        shifted = shifted_probabilities(log_p, shift)
        # Gradient of the weighted mean cross-entropy; the problem is convex with curvature below 1/2.
        shift -= 2.0 * (weights[:, None] * (shifted - onehot)).sum(axis=0)
    return shift - shift.mean()


def add_output_bias(head, shift: np.ndarray) -> None:
    """Add ``shift`` to the softmax layer's bias (the same as adding it to every log-probability)."""
    output = head.get_layer("head_softmax")
    kernel, bias = output.get_weights()
    output.set_weights([kernel, (bias + shift).astype(bias.dtype)])


def refit_output_bias(head, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, steps: int = 500) -> np.ndarray:
    """Shift the head's output biases to minimise the weighted cross-entropy on ``x``; the kernel stays.

    The head's boundary direction is learned from the sample as it is; only where it sits along that direction
    (one bias per label) is refit with the weights. A sample drawn mostly from flagged images, with a thin audit
    sample of the rest weighted up, estimates the direction with low variance unweighted, but places the
    boundary where the flagged images' mix of labels puts it; a handful of numbers refit with the weights moves
    it back to where the weighted (population) loss wants it, without the heavy weights' variance reaching the
    features. Adding a constant to every log-probability is the same as adding it to the logits, so the shift
    is fit on the head's log-probabilities and then added to its last bias. Returns the shift.
    """
    log_p = head_log_probabilities(head, x)
    shift = fit_bias_shift(log_p, y, sample_weight, steps)
    add_output_bias(head, shift)
    return shift


def out_of_fold_log_probabilities(
    x: np.ndarray,
    y: np.ndarray,
    image_of_row: np.ndarray,
    n_labels: int,
    hparams: HParams,
    folds: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    on_fold: Callable[[], None] | None = None,
) -> tuple[np.ndarray, list]:
    """Log-probabilities of every training row from a head trained without that row's fold, and the fold heads.

    ``image_of_row`` maps each row to its image, so an image and its mirror copy always share a fold: a head
    that saw one would score the other almost as if it had seen it. Folds come from a seeded permutation of
    the images, so a retrain on the same examples refits the same biases. Each fold's head stops early on
    ``validation`` as the final head does, so it is fitted as closely as the head whose biases are refit.
    """
    from classifier.model import build_head

    permutation = np.random.default_rng(hparams.seed).permutation(int(image_of_row.max()) + 1)
    fold_of_row = permutation[image_of_row] % folds
    log_p = np.zeros((len(y), n_labels), dtype=np.float64)
    heads = []
    for fold in range(folds):
        held = fold_of_row == fold
        if held.all():
            continue
        head = build_head(x.shape[1], n_labels, hparams, training_features=x[~held])
        fit_features(head, x[~held], y[~held], validation, hparams, None, lambda _done: None)
        log_p[held] = head_log_probabilities(head, x[held])
        heads.append(head)
        if on_fold is not None:
            on_fold()
    return log_p, heads


def choose_l2(
    x: np.ndarray,
    y: np.ndarray,
    example_weights: np.ndarray,
    image_of_row: np.ndarray,
    n_labels: int,
    hparams: HParams,
    validation: tuple[np.ndarray, np.ndarray] | None,
    on_fold: Callable[[], None] | None = None,
) -> tuple[HParams, np.ndarray, list, dict[str, float]]:
    """The L2 strength of ``hparams.l2_grid`` whose out-of-fold scores give the lowest weighted cross-entropy.

    Judged the way the biases are refit: each value's out-of-fold log-probabilities, shifted by their own best
    biases, scored with the same class-balanced example weights. Only training data is used, so the choice is
    cross-validation, not a peek at any test set. Returns the hyper-parameters with that strength, its
    out-of-fold log-probabilities and fold heads (the bias refit and head averaging reuse them) and every value's
    loss.
    """
    weights = sample_weights(y, n_labels, hparams, example_weights).astype(np.float64)
    weights = weights / weights.sum()
    losses: dict[str, float] = {}
    best: tuple[float, float, np.ndarray, list] | None = None
    for l2 in hparams.l2_grid:
        candidate = replace(hparams, l2=float(l2))
        log_p, heads = out_of_fold_log_probabilities(
            x, y, image_of_row, n_labels, candidate, hparams.bias_folds, validation, on_fold
        )
        logits = log_p + fit_bias_shift(log_p, y, weights)
        logits -= logits.max(axis=1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = float(-(weights * log_probabilities[np.arange(len(y)), y]).sum())
        losses[repr(float(l2))] = round(loss, 5)
        if best is None or loss < best[0]:
            best = (loss, float(l2), log_p, heads)
    return replace(hparams, l2=best[1]), best[2], best[3], losses


def _linear_logits(head) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A plain softmax head as logits = features @ kernel + bias on raw features, plus its standardisation."""
    kernel, bias = (w.astype(np.float64) for w in head.get_layer("head_softmax").get_weights())
    mean, scale = np.zeros(kernel.shape[0]), np.ones(kernel.shape[0])
    if any(layer.name == "head_standardize" for layer in head.layers):
        normalization = head.get_layer("head_standardize")
        mean = np.asarray(normalization.mean, dtype=np.float64).reshape(-1)
        # Keras' Normalization divides by max(sqrt(variance), epsilon).
        scale = np.maximum(np.sqrt(np.asarray(normalization.variance, dtype=np.float64).reshape(-1)), 1e-7)
    raw_kernel = kernel / scale[:, None]
    return raw_kernel, bias - mean @ raw_kernel, mean, scale


def average_heads(head, others: Sequence) -> None:
    """Make ``head`` output the softmax of the mean of its own and ``others``' logits (all plain softmax heads).

    Each head standardises with its own training features' moments, so the logits are first written on the raw
    features, averaged there, and written back on ``head``'s standardisation: the result is exactly one head of
    the same shape, saved and served like any other.
    """
    parts = [_linear_logits(h) for h in [head, *others]]
    raw_kernel = np.mean([part[0] for part in parts], axis=0)
    raw_bias = np.mean([part[1] for part in parts], axis=0)
    _, _, mean, scale = parts[0]
    output = head.get_layer("head_softmax")
    kernel, bias = output.get_weights()
    output.set_weights(
        [(scale[:, None] * raw_kernel).astype(kernel.dtype), (raw_bias + mean @ raw_kernel).astype(bias.dtype)]
    )


#: A training or validation part for the bias refit: ``(features, label indices, example weights)``.
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]


def refit_biases(
    head,
    train: Rows,
    validation: Rows | None,
    hparams: HParams,
    n_labels: int,
    out_of_fold: np.ndarray | None = None,
    fold_heads: Sequence = (),
) -> np.ndarray | None:
    """Refit the head's output biases with the example weights, on out-of-fold scores when there are any.

    Without ``out_of_fold`` the biases are refit on the head's own scores of the training and validation rows
    (`refit_output_bias`). With it, training rows are scored by fold heads that never saw them and validation
    rows by the final head, which never saw them either; with `HParams.average_fold_heads` the fold heads are
    first averaged into the head. Returns the shift added to the biases when it was fitted on out-of-fold
    scores (so those scores can be shifted the same way), else None.
    """
    parts = [train] + ([validation] if validation is not None else [])
    x_all, y_all, w_all = (np.concatenate(column) for column in zip(*parts, strict=True))
    bias_weights = sample_weights(y_all, n_labels, hparams, w_all)
    if out_of_fold is None:
        refit_output_bias(head, x_all, y_all, bias_weights)
        return None
    if hparams.average_fold_heads:
        average_heads(head, fold_heads)
    log_p = [out_of_fold]
    if validation is not None:
        log_p.append(head_log_probabilities(head, validation[0]))
    shift = fit_bias_shift(np.concatenate(log_p), y_all, bias_weights)
    add_output_bias(head, shift)
    return shift


def shifted_probabilities(log_p: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Probabilities from log-probabilities with ``shift`` added to the output biases (softmax of the sum)."""
    logits = log_p + (shift if shift is not None else 0.0)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fold_units(split_keys: Sequence[str], image_of_row: np.ndarray) -> np.ndarray:
    """What each row's fold is drawn by: its image's near-duplicate group (`Example.split_key`), numbered.

    Out-of-fold scores stand for scores of photos the model never saw only if no copy of the photo trained the
    head that scores it: a re-encoded re-upload in another fold would be scored almost as if seen. An image and
    its mirror row share their image's number, so they share a fold too.
    """
    number: dict[str, int] = {}
    of_image = np.array([number.setdefault(key, len(number)) for key in split_keys], dtype=np.int64)
    return of_image[image_of_row]
