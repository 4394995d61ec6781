"""The fold regression cross-validation judges candidates by: L2-regularised softmax regression, by L-BFGS.

The head's SGD stops early, so two of its fits differ by its noise as much as by their features; a fit to
convergence of the same objective (weighted cross-entropy plus l2 times the squared kernel) does not. In numpy,
so `classifier.selection` can fit hundreds of small folds without building a Keras model for each.
"""

from __future__ import annotations

import numpy as np


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Every array standardised by ``train``'s moments, as the head's own standardisation does (same floor)."""
    from classifier.model import standardization_moments

    mean, variance = standardization_moments(train)
    scale = np.sqrt(variance)
    return [((x - mean) / scale).astype(np.float32) for x in (train, *others)]


def _loss_and_gradient(params, x, onehot, w, l2, shape):
    kernel, bias = params[: shape[0] * shape[1]].reshape(shape), params[shape[0] * shape[1] :]
    logits = x @ kernel.astype(np.float32) + bias.astype(np.float32)
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = len(x)
    loss = float(-(w * (onehot * log_p).sum(axis=1)).sum() / n + l2 * (kernel**2).sum())
    grad_logits = (w[:, None] * (np.exp(log_p) - onehot) / n).astype(np.float32)
    grad_kernel = (x.T @ grad_logits).astype(np.float64) + 2 * l2 * kernel
    return loss, np.concatenate([grad_kernel.ravel(), grad_logits.sum(axis=0).astype(np.float64)])


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    n_labels: int,
    l2: float,
    iterations: int = 100,
    *,
    start: tuple[np.ndarray, np.ndarray] | None = None,
):
    """``(kernel, bias)`` minimising mean(w * cross-entropy) + l2 * |kernel|^2 by L-BFGS with backtracking.

    ``start`` (a kernel and bias, e.g. the fit at a neighbouring L2) is where the search begins instead of zero.
    """
    shape = (x.shape[1], n_labels)
    onehot = np.eye(n_labels)[y]
    params = np.zeros(shape[0] * shape[1] + n_labels)
    if start is not None:
        params = np.concatenate([np.asarray(start[0], np.float64).ravel(), np.asarray(start[1], np.float64)])
    loss, grad = _loss_and_gradient(params, x, onehot, w, l2, shape)
    history: list[tuple[np.ndarray, np.ndarray]] = []
    for iteration in range(iterations):
        direction = -grad
        alphas = []
        for s, t in reversed(history):
            alpha = (s @ direction) / (t @ s)
            direction = direction - alpha * t
            alphas.append(alpha)
        if history:
            s, t = history[-1]
            direction = direction * ((s @ t) / (t @ t))
        for (s, t), alpha in zip(history, reversed(alphas), strict=True):
            beta = (t @ direction) / (t @ s)
            direction = direction + (alpha - beta) * s
        slope = grad @ direction
        if slope >= 0:
            direction, slope, history = -grad, -(grad @ grad), []
        # Without curvature pairs yet, a unit step along the raw gradient can be far too long.
        step = 1.0 if history else min(1.0, 1.0 / max(float(np.abs(grad).sum()), 1e-12))
        while True:
            candidate = params + step * direction
            new_loss, new_grad = _loss_and_gradient(candidate, x, onehot, w, l2, shape)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-8:
                break
            step *= 0.5
        s, t = candidate - params, new_grad - grad
        params, grad, improvement, loss = candidate, new_grad, loss - new_loss, new_loss
        if t @ s > 1e-12:
            history = [*history[-9:], (s, t)]
        # The first step is a short one along the raw gradient, so its small gain says nothing of convergence
        # (from a warm start near the optimum it is small by construction).
        if (iteration and improvement < 1e-6 * max(1.0, abs(loss))) or np.abs(grad).max() < 1e-6:
            break
    return params[: shape[0] * shape[1]].reshape(shape), params[shape[0] * shape[1] :]
