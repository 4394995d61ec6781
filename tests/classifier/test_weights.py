"""Example weights: weighted metrics equal the metrics of the sample with each example repeated weight times,
and a weight moves the trained model's decision boundary."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.data import Example
from classifier.hparams import HParams
from classifier.metrics import compute_metrics, roc_auc, weighted_roc_auc
from tests.classifier.synthetic import SIZE, image_bytes

LABELS = ["bad", "ok"]


def test_weighted_metrics_equal_the_metrics_of_the_repeated_sample():
    truth = ["bad", "bad", "ok", "ok", "ok", "bad"]
    bad_probability = np.array([0.9, 0.3, 0.6, 0.2, 0.1, 0.7])
    probabilities = np.stack([bad_probability, 1 - bad_probability], axis=1)
    weights = [1, 10, 1, 10, 3, 2]
    weighted = compute_metrics(truth, probabilities, LABELS, ["bad"], threshold=0.5, sample_weight=weights)
    repeated = compute_metrics(
        [label for label, w in zip(truth, weights, strict=True) for _ in range(w)],
        np.repeat(probabilities, weights, axis=0),
        LABELS,
        ["bad"],
        threshold=0.5,
    )
    # tp = 1 + 2, fn = 10, fp = 1, tn = 13
    assert weighted["confusion_matrix"] == [[13.0, 1.0], [10.0, 3.0]]
    assert weighted["precision"] == pytest.approx(3 / 4)
    assert weighted["recall"] == pytest.approx(3 / 13)
    assert weighted["accuracy"] == pytest.approx(16 / 27)
    for key in ("accuracy", "precision", "recall", "specificity", "f1", "auc", "label_accuracy"):
        assert weighted[key] == pytest.approx(repeated[key]), key
    assert weighted["confusion_matrix"] == repeated["confusion_matrix"]
    assert weighted["n"] == 6 and weighted["weighted_n"] == pytest.approx(27)
    unweighted = compute_metrics(truth, probabilities, LABELS, ["bad"], threshold=0.5)
    assert unweighted["recall"] == pytest.approx(2 / 3)
    assert "weighted_n" not in unweighted


def test_weighted_auc_with_unit_weights_is_the_plain_auc_and_ties_count_half():
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.4
    scores = np.round(rng.random(300), 1)  # many ties
    assert weighted_roc_auc(positive, scores, np.ones(300)) == pytest.approx(roc_auc(positive, scores))
    assert weighted_roc_auc([True, False], [0.5, 0.5], [3.0, 1.0]) == pytest.approx(0.5)
    assert weighted_roc_auc([True, True], [0.5, 0.4], [1.0, 1.0]) is None


def test_bad_sample_weights_are_refused():
    probabilities = [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(ValueError, match="entries"):
        compute_metrics(["bad", "ok"], probabilities, LABELS, ["bad"], sample_weight=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        compute_metrics(["bad", "ok"], probabilities, LABELS, ["bad"], sample_weight=[1.0, -1.0])


def _examples(label: str, colour: str, seeds: range, weight: float = 1.0) -> list[Example]:
    out = []
    for seed in seeds:
        data = image_bytes(colour, seed=seed)
        out.append(Example.from_bytes(data, label) if weight == 1.0 else _weighted(data, label, weight))
    return out


def _weighted(data: bytes, label: str, weight: float) -> Example:
    from dataclasses import replace

    return replace(Example.from_bytes(data, label), weight=weight)


@pytest.fixture(scope="module")
def ambiguous_probe():
    """Fresh images of the in-between colour that the training sets label both ways."""
    from classifier.images import decode_image

    return np.stack([decode_image(image_bytes("other", seed=90_000 + i), SIZE) for i in range(20)]).astype(np.float32)


@pytest.mark.parametrize("heavier", ["bad", "ok"])
def test_a_weight_moves_the_decision_boundary(tmp_path, ambiguous_probe, heavier):
    # Clear examples of both classes, plus in-between images labelled half "bad", half "ok": which way the model
    # decides on new in-between images depends only on which half weighs more.
    base = _examples("bad", "bad", range(0, 16)) + _examples("ok", "ok", range(100, 116))
    ambiguous = _examples("bad", "other", range(200, 216), weight=8.0 if heavier == "bad" else 1.0)
    ambiguous += _examples("ok", "other", range(300, 316), weight=8.0 if heavier == "ok" else 1.0)
    from classifier.training import train_model

    hparams = HParams(backbone="tiny", image_size=SIZE, epochs=60, learning_rate=0.05, early_stopping_patience=60)
    result = train_model(
        base + ambiguous, LABELS, ["bad"], hparams=hparams, cache_dir=tmp_path / "cache", split=lambda e: "train"
    )
    bad_share = float(np.mean(np.asarray(result.model(ambiguous_probe, training=False))[:, 0] >= 0.5))
    if heavier == "bad":
        assert bad_share >= 0.8
    else:
        assert bad_share <= 0.2
