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


@pytest.mark.parametrize("weighting", ["loss", "bias"])
@pytest.mark.parametrize("heavier", ["bad", "ok"])
def test_a_weight_moves_the_decision_boundary(tmp_path, ambiguous_probe, heavier, weighting):
    # Clear examples of both classes, plus in-between images labelled half "bad", half "ok": which way the model
    # decides on new in-between images depends only on which half weighs more.
    base = _examples("bad", "bad", range(0, 16)) + _examples("ok", "ok", range(100, 116))
    ambiguous = _examples("bad", "other", range(200, 216), weight=8.0 if heavier == "bad" else 1.0)
    ambiguous += _examples("ok", "other", range(300, 316), weight=8.0 if heavier == "ok" else 1.0)
    from classifier.training import train_model

    hparams = HParams(
        backbone="tiny",
        image_size=SIZE,
        epochs=60,
        learning_rate=0.05,
        early_stopping_patience=60,
        example_weighting=weighting,
    )
    result = train_model(
        base + ambiguous, LABELS, ["bad"], hparams=hparams, cache_dir=tmp_path / "cache", split=lambda e: "train"
    )
    bad_share = float(np.mean(np.asarray(result.model(ambiguous_probe, training=False))[:, 0] >= 0.5))
    if heavier == "bad":
        assert bad_share >= 0.8
    else:
        assert bad_share <= 0.2


def test_refit_output_bias_finds_the_weighted_label_shares_and_keeps_the_kernel():
    import keras

    from classifier.heads import refit_output_bias
    from classifier.model import build_head

    head = build_head(3, 2, HParams(backbone="tiny", standardize=False))
    kernel_before = head.get_layer("head_softmax").get_weights()[0].copy()
    # With all-zero features the head outputs softmax(bias): the weighted cross-entropy is lowest when that
    # equals the weighted share of each label, here 3 / 4 for label 1 though it is a third of the rows.
    x = np.zeros((6, 3), dtype=np.float32)
    y = np.array([0, 0, 0, 0, 1, 1])
    weights = np.array([1.0, 1.0, 1.0, 1.0, 6.0, 6.0])
    refit_output_bias(head, x, y, weights)
    np.testing.assert_allclose(np.asarray(head(x[:1]))[0], [0.25, 0.75], atol=1e-3)
    np.testing.assert_array_equal(head.get_layer("head_softmax").get_weights()[0], kernel_before)
    assert isinstance(head.get_layer("head_softmax"), keras.layers.Dense)


BIAS_HPARAMS = HParams(backbone="tiny", image_size=SIZE, epochs=30, learning_rate=0.05, example_weighting="bias")


def _skewed_examples(heavy_weight: float = 9.0) -> list[Example]:
    """Two clear groups, then "other"-coloured images of both labels, in which the "bad" ones weigh `heavy_weight`."""
    from dataclasses import replace

    clear = _examples("bad", "bad", range(0, 12)) + _examples("ok", "ok", range(100, 112))
    heavy = [replace(example, weight=heavy_weight) for example in _examples("bad", "other", range(200, 206))]
    return clear + heavy + _examples("ok", "other", range(300, 306))


def _softmax_weights(examples: list[Example], hparams: HParams, cache_dir) -> list[np.ndarray]:
    """The trained head's output layer [kernel, bias], every example in training."""
    from classifier.training import train_model

    result = train_model(examples, LABELS, ["bad"], hparams=hparams, cache_dir=cache_dir, split=lambda e: "train")
    return result.model.get_layer("head").get_layer("head_softmax").get_weights()


def test_bias_weighting_learns_the_unweighted_kernel_and_moves_only_the_bias(tmp_path):
    from dataclasses import replace

    weighted = _softmax_weights(_skewed_examples(), BIAS_HPARAMS, tmp_path / "cache")
    unweighted = _softmax_weights(
        _skewed_examples(heavy_weight=1.0), replace(BIAS_HPARAMS, example_weighting="loss"), tmp_path / "cache"
    )
    np.testing.assert_allclose(weighted[0], unweighted[0], rtol=1e-6, atol=1e-7)
    shift = weighted[1] - unweighted[1]
    assert shift[0] > 0.05 > -0.05 > shift[1]  # toward "bad", the label the heavy examples carry


def test_unknown_example_weighting_is_refused():
    with pytest.raises(ValueError, match="example_weighting"):
        HParams(example_weighting="sometimes")


def test_out_of_fold_scores_never_come_from_a_head_that_saw_the_image_or_its_mirror():
    from classifier.heads import out_of_fold_log_probabilities

    # Labels that are pure noise over more features than images: a head memorises its training rows, so only a
    # head that saw a row (or its near-identical mirror) scores it better than chance.
    rng = np.random.default_rng(3)
    n, dim = 60, 200
    images = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    x = np.concatenate([images, images + rng.normal(scale=0.01, size=images.shape).astype(np.float32)])
    y_rows = np.concatenate([y, y])
    hparams = HParams(backbone="tiny", standardize=False, l2=0.0, learning_rate=0.1, epochs=60)

    def accuracy(image_of_row):
        log_p, heads = out_of_fold_log_probabilities(x, y_rows, image_of_row, 2, hparams, folds=3)
        assert len(heads) == 3
        return float(np.mean(np.argmax(log_p, axis=1) == y_rows))

    paired = accuracy(np.arange(2 * n) % n)
    # Each mirror its own image: two thirds of the twins land in another fold, and those rows are then "known".
    leaking = accuracy(np.arange(2 * n))
    assert paired < 0.65 < 0.75 < leaking, (paired, leaking)


def test_bias_folds_refit_the_biases_out_of_fold_deterministically_and_keep_the_kernel(tmp_path):
    from dataclasses import replace

    def output_layer(folds):
        return _softmax_weights(_skewed_examples(), replace(BIAS_HPARAMS, bias_folds=folds), tmp_path / "cache")

    in_sample, out_of_fold, again = output_layer(0), output_layer(3), output_layer(3)
    np.testing.assert_allclose(out_of_fold[0], in_sample[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(out_of_fold[1], in_sample[1])
    np.testing.assert_array_equal(out_of_fold[1], again[1])


@pytest.mark.parametrize("folds", [-1, 1])
def test_bias_folds_must_be_zero_or_at_least_two(folds):
    with pytest.raises(ValueError, match="bias_folds"):
        HParams(bias_folds=folds)


@pytest.mark.parametrize(("signal", "expected"), [("noise", 10.0), ("clean", 0.001)])
def test_l2_search_picks_the_strength_with_the_lowest_out_of_fold_loss(signal, expected):
    from classifier.heads import choose_l2

    # Noise labels over many features: only heavy shrinkage stops the heads from fitting noise. A clean,
    # one-feature rule: light shrinkage lets the heads be confident where they are right.
    rng = np.random.default_rng(5)
    n, dim = 80, 60 if signal == "noise" else 3
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, 2, size=n) if signal == "noise" else (x[:, 0] > 0).astype(np.int64)
    hparams = HParams(
        backbone="tiny", standardize=False, learning_rate=0.1, epochs=60, bias_folds=4, l2_grid=(0.001, 0.1, 10.0)
    )
    chosen, log_p, heads, losses = choose_l2(x, y, np.ones(n), np.arange(n), 2, hparams, None)
    assert len(heads) == 4 and all(head.get_layer("head_softmax").kernel.shape == (dim, 2) for head in heads)
    assert set(losses) == {"0.001", "0.1", "10.0"}
    assert chosen.l2 == expected and losses[repr(expected)] == min(losses.values())
    assert log_p.shape == (n, 2) and np.all(log_p <= 0)


def test_train_model_records_the_search_and_skips_it_above_the_size_limit(tmp_path, monkeypatch):
    from dataclasses import replace

    import classifier.heads as heads
    import classifier.training as training

    examples = _examples("bad", "bad", range(0, 10)) + _examples("ok", "ok", range(100, 110))
    hparams = HParams(
        backbone="tiny",
        image_size=SIZE,
        epochs=20,
        learning_rate=0.05,
        example_weighting="bias",
        bias_folds=3,
        l2_grid=(0.001, 0.3),
    )
    calls = []
    searched = training.train_model(
        examples,
        LABELS,
        ["bad"],
        hparams,
        cache_dir=tmp_path,
        split=lambda e: "train",
        progress=lambda *call: calls.append(call),
    )
    assert set(searched.metrics["l2_search"]) == {"0.001", "0.3"}
    # Three folds per value, reported before the final head trains (the bias refit reuses the chosen folds).
    folds = [call for call in calls if call[0] == "cross-validating"]
    assert folds[0] == ("cross-validating", 0, 6) and folds[-1] == ("cross-validating", 6, 6)
    assert calls.index(folds[-1]) < next(i for i, call in enumerate(calls) if call[0] == "training")
    assert searched.hparams.l2 in (0.001, 0.3) and searched.hparams.l2_grid == (0.001, 0.3)

    monkeypatch.setattr(heads, "L2_SEARCH_MAX_IMAGES", len(examples) - 1)
    kept = training.train_model(
        examples, LABELS, ["bad"], replace(hparams, l2=0.02), cache_dir=tmp_path, split=lambda e: "train"
    )
    assert "l2_search" not in kept.metrics and kept.hparams.l2 == 0.02


def test_l2_grid_is_a_tuple_of_non_negative_numbers_and_round_trips():
    assert HParams(l2_grid=[0.01, 0.1]).l2_grid == (0.01, 0.1)
    assert HParams.from_dict(HParams(l2_grid=(0.03,)).to_dict()).l2_grid == (0.03,)
    with pytest.raises(ValueError, match="l2_grid"):
        HParams(l2_grid=(0.1, -1.0))


@pytest.mark.parametrize("standardize", [True, False])
def test_averaged_heads_output_the_softmax_of_the_mean_logits(standardize):
    from classifier.heads import average_heads
    from classifier.model import build_head

    rng = np.random.default_rng(11)
    dim = 6
    hparams = HParams(backbone="tiny", standardize=standardize)
    heads = []
    for index in range(4):
        # Each head standardises on different features, as each fold head does on its own rows.
        head = build_head(dim, 2, hparams, training_features=rng.normal(loc=index, scale=1 + index, size=(30, dim)))
        kernel, bias = head.get_layer("head_softmax").get_weights()
        head.get_layer("head_softmax").set_weights([rng.normal(size=kernel.shape), rng.normal(size=bias.shape)])
        heads.append(head)
    x = rng.normal(size=(50, dim)).astype(np.float32)
    logits = np.mean([np.log(head.predict(x, verbose=0)) for head in heads], axis=0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    average_heads(heads[0], heads[1:])
    np.testing.assert_allclose(heads[0].predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_train_model_averages_the_fold_heads_into_the_final_head_only_when_asked(tmp_path):
    from dataclasses import replace

    hparams = replace(BIAS_HPARAMS, bias_folds=3)
    single = _softmax_weights(_skewed_examples(), hparams, tmp_path / "cache")
    averaged = _softmax_weights(_skewed_examples(), replace(hparams, average_fold_heads=True), tmp_path / "cache")
    again = _softmax_weights(_skewed_examples(), replace(hparams, average_fold_heads=True), tmp_path / "cache")
    assert not np.allclose(averaged[0], single[0])
    np.testing.assert_array_equal(averaged[0], again[0])
    with pytest.raises(ValueError, match="average_fold_heads"):
        HParams(average_fold_heads=True, hidden_units=8)
