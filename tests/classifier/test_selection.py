"""Model choices by cross-validation on the training split: candidates as maps of one embedding, and the choice."""

from dataclasses import replace

import numpy as np
import pytest

from classifier.backbones import build_backbone
from classifier.data import Example, scan_folder
from classifier.fold_regression import fit_softmax
from classifier.hparams import HParams
from classifier.model import build_head
from classifier.registry import Registry
from classifier.selection import candidates_on, expand_head, fold_of, parse_candidate
from classifier.training import train_model
from tests.classifier.synthetic import image_bytes, random_pixels, write_dataset

CANDIDATES = ("tiny_conv3:average", "tiny_conv2+tiny_conv3:symmetric", "tiny_conv3:symmetric", "tiny_conv2:average")
HPARAMS = HParams(
    backbone="tiny", image_size=32, epochs=20, learning_rate=0.05, cv_folds=3, cv_features=CANDIDATES, seed=3
)


def test_the_backbone_embeds_the_union_of_the_candidates_region_pooled():
    assert HPARAMS.resolved_feature_layer() == "tiny_conv3+tiny_conv2"
    assert HPARAMS.resolved_pooling() == "symmetric"
    # Naming the features fixes them; so does turning cross-validation off, and tiny's default is off.
    assert replace(HPARAMS, feature_layer="tiny_conv3").feature_candidates() == []
    assert replace(HPARAMS, cv_folds=0).feature_candidates() == []
    assert HParams(backbone="tiny").resolved_cv_folds() == 0
    assert HParams().resolved_cv_folds() == 3
    assert HParams().resolved_feature_layer() == "conv_pw_9_relu+conv_pw_11_relu"
    assert HParams().resolved_pooling() == "symmetric"
    with pytest.raises(ValueError):
        parse_candidate("tiny_conv3:max")


def test_each_candidate_is_exactly_the_features_its_own_backbone_would_give():
    union = build_backbone("tiny", 32, feature_layer=HPARAMS.resolved_feature_layer(), pooling="symmetric")
    pixels = random_pixels(5, 32, seed=1)
    union_features = np.asarray(union(pixels))
    for candidate, text in zip(candidates_on(union, HPARAMS), CANDIDATES, strict=True):
        layers, pooling = parse_candidate(text)
        own = build_backbone("tiny", 32, feature_layer=layers, pooling=pooling)
        np.testing.assert_allclose(candidate.apply(union_features), np.asarray(own(pixels)), rtol=1e-5, atol=1e-6)


def test_a_head_on_a_candidate_is_the_same_head_on_the_union():
    union = build_backbone("tiny", 32, feature_layer=HPARAMS.resolved_feature_layer(), pooling="symmetric")
    x = np.asarray(union(random_pixels(40, 32, seed=2)))
    for hparams in (replace(HPARAMS, standardize=True), replace(HPARAMS, standardize=True, hidden_units=4)):
        candidate = candidates_on(union, hparams)[0]
        features = candidate.apply(x)
        head = build_head(features.shape[1], 2, hparams, training_features=features)
        rng = np.random.default_rng(0)
        for layer in head.layers:
            if layer.name in ("head_hidden", "head_softmax"):
                layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
        expanded = expand_head(head, candidate, x.shape[1], hparams)
        assert expanded.input_shape[-1] == x.shape[1]
        np.testing.assert_allclose(np.asarray(expanded(x)), np.asarray(head(features)), rtol=1e-4, atol=1e-5)


def test_the_fold_regression_converges():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(np.int64)
    w = np.ones(300)
    kernel, bias = fit_softmax(x, y, w, 2, l2=0.01, iterations=300)
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    gradient = x.T @ (p - np.eye(2)[y]) / 300 + 2 * 0.01 * kernel
    assert np.abs(gradient).max() < 1e-4
    assert ((logits.argmax(axis=1) == y).mean()) > 0.9


def test_a_fit_started_from_a_neighbouring_l2_reaches_the_same_optimum_in_fewer_steps(monkeypatch):
    import classifier.fold_regression as fold_regression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = (rng.normal(size=(400, 300)) + 0.2 * y[:, None] * rng.normal(size=300)).astype(np.float32)
    w, onehot = np.ones(400), np.eye(2)[y]
    calls = []
    real = fold_regression._loss_and_gradient
    monkeypatch.setattr(fold_regression, "_loss_and_gradient", lambda *a: calls.append(1) or real(*a))

    def objective(fit, l2):
        return real(np.concatenate([fit[0].ravel(), fit[1]]), x, onehot, w, l2, (300, 2))[0]

    neighbour = fit_softmax(x, y, w, 2, l2=0.03)
    cold_calls = warm_calls = 0
    for l2 in (0.01, 0.09):
        calls.clear()
        cold = fit_softmax(x, y, w, 2, l2=l2)
        cold_calls += len(calls)
        calls.clear()
        warm = fit_softmax(x, y, w, 2, l2=l2, start=neighbour)
        warm_calls += len(calls)
        # The same optimum within the stopping rule's tolerance (a relative gain under 1e-6 a step).
        assert objective(warm, l2) == pytest.approx(objective(cold, l2), rel=1e-4)
    assert warm_calls < cold_calls


def _split_by_name(test_names):
    def split(example):
        return "test" if example.path is not None and example.path.name in test_names else "train"

    return split


def _without_costs(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("seconds", "embedding")}


def test_the_choice_is_recorded_and_never_moves_when_the_test_split_is_poisoned(tmp_path):
    scan = scan_folder(write_dataset(tmp_path / "data", per_label=30))
    test_names = {f"{i}.png" for i in range(20, 30)}
    split = _split_by_name(test_names)
    # The input size among the choices: every feature candidate at 32 and at 48 px.
    hparams = replace(HPARAMS, cv_image_sizes=(48,))
    first = train_model(scan.examples, scan.labels, ["bad"], hparams, cache_dir=tmp_path / "cache", split=split)
    record = first.chosen_by_cv
    assert record["folds"] == 3 and record["images"] == 40 and record["image_sizes"] == [32, 48]
    tried = {(entry["image_size"], entry["features"]) for entry in record["candidates"]}
    assert {(size, c) for size in (32, 48) for c in CANDIDATES} <= tried
    assert all(len(entry["fold_scores"]) == 3 for entry in record["candidates"])
    assert record["chosen"]["features"] in CANDIDATES and first.hparams.l2 == record["chosen"]["l2"]
    assert first.hparams.image_size == record["chosen"]["image_size"] == first.model.input_shape[1]
    assert first.metrics["chosen_by_cv"] == record
    registry = Registry(tmp_path / "models")
    assert registry.metadata(registry.save(first))["chosen_by_cv"] == record

    # Poison the test split: its labels flipped, and its images replaced by other pictures of the other label.
    poisoned = []
    for example in scan.examples:
        if example.path.name in test_names:
            flipped = "ok" if example.label == "bad" else "bad"
            data = image_bytes(example.label, seed=900_000 + int(example.path.stem))
            fake = tmp_path / "poison" / flipped / example.path.name
            fake.parent.mkdir(parents=True, exist_ok=True)
            fake.write_bytes(data)
            poisoned.append(replace(Example.from_bytes(data, flipped), path=fake))
        else:
            poisoned.append(example)
    second = train_model(poisoned, scan.labels, ["bad"], hparams, cache_dir=tmp_path / "cache", split=split)
    assert second.metrics["accuracy"] < first.metrics["accuracy"]  # the poison reached the test split
    assert _without_costs(second.chosen_by_cv) == _without_costs(record)
    assert second.chosen_by_cv["embedding"]["embedded"] == [0, 0]  # every size's features came from the cache


def test_folds_follow_the_split_key():
    import hashlib

    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(100)]
    assert [fold_of(key, 3) for key in keys] == [fold_of(key, 3) for key in keys]
    assert set(fold_of(key, 3) for key in keys) == {0, 1, 2}


def test_heavy_weights_move_the_fits_only_when_they_enter_the_loss(monkeypatch):
    import classifier.selection as selection

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(np.int64)
    keys = [
        f"{i:016x}{int(rng.integers(0, 2**62)):016x}{int(rng.integers(0, 2**62)):016x}" + "0" * 16 for i in range(120)
    ]
    heavy = np.where(np.arange(120) % 10 == 0, 25.0, 1.0)
    identity = [selection.Candidate("as given", np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), True)]
    fitted_with = []
    real_fit = selection.fit_softmax

    def recording_fit(xs, ys, w, *args, **kwargs):
        fitted_with.append(np.asarray(w))
        return real_fit(xs, ys, w, *args, **kwargs)

    monkeypatch.setattr(selection, "fit_softmax", recording_fit)

    def fits(mode, weights):
        fitted_with.clear()
        hparams = replace(HPARAMS, example_weighting=mode, cv_l2=())
        record = selection.choose(
            {32: x}, y, weights, np.arange(120), keys, 2, hparams, {32: identity}, choose_l2=False
        ).record
        return [w.copy() for w in fitted_with], record["candidates"][0]["fold_scores"]

    bias_heavy, bias_scores = fits("bias", heavy)
    bias_plain, plain_scores = fits("bias", np.ones(120))
    assert all(np.array_equal(a, b) for a, b in zip(bias_heavy, bias_plain, strict=True))
    assert bias_scores != plain_scores  # the held-out folds are still scored with the weights
    loss_heavy, _ = fits("loss", heavy)
    assert not all(np.array_equal(a, b) for a, b in zip(loss_heavy, bias_plain, strict=True))


def test_the_l2_grid_grows_past_its_top_while_the_training_folds_prefer_its_edge():
    import hashlib

    import classifier.selection as selection

    identity = [selection.Candidate("as given", np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), True)]
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(90)]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 90)
    hparams = replace(HPARAMS, cv_features=(), cv_l2=(0.003, 0.01, 0.03))

    def chosen(x):
        record = selection.choose({32: x}, y, np.ones(90), np.arange(90), keys, 2, hparams, {32: identity}).record
        return (
            record["chosen"]["l2"],
            record["l2_grid"],
            {entry["l2"]: entry["score"] for entry in record["candidates"]},
        )

    # A weak signal in 5 of 50 columns, 60 training images a fold: more shrinkage than 0.03 predicts better.
    weak = (0.4 * (y[:, None] * 2.0 - 1.0) * (np.arange(50) < 5) + rng.normal(size=(90, 50))).astype(np.float32)
    l2, grid, scores = chosen(weak)
    assert l2 > 0.03 and scores[l2] < scores[0.03]
    assert grid[:3] == [0.003, 0.01, 0.03] and grid[3:] == pytest.approx([0.09, 0.27][: len(grid) - 3])
    assert l2 < grid[-1]  # it stopped once the best was inside the grid
    # Pure noise: the more shrinkage the better, without end; the grid stops at its cap.
    l2, grid, _ = chosen(rng.normal(size=(90, 50)).astype(np.float32))
    assert len(grid) == 3 + selection.L2_EXTENSION_STEPS and l2 == grid[-1] == pytest.approx(0.81)


def test_features_and_l2_are_chosen_together():
    import hashlib

    import classifier.selection as selection

    n = 150
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    sign = (y * 2.0 - 1.0)[:, None]
    # One weakly informative column, against eight a little weaker buried among 300 of noise: at the shared
    # L2 the wide candidate overfits its 100 training images a fold; with the shrinkage it needs it predicts better.
    narrow = 0.5 * sign + rng.normal(size=(n, 1))
    wide = np.hstack([0.4 * sign + rng.normal(size=(n, 8)), rng.normal(size=(n, 300))])
    x = np.hstack([narrow, wide]).astype(np.float32)

    def columns(name, cols):
        cols = np.asarray(list(cols), dtype=np.int64)
        return selection.Candidate(name, cols[:, None], np.ones((len(cols), 1), np.float32), False)

    candidates = {32: [columns("narrow", [0]), columns("wide", range(1, x.shape[1]))]}
    hparams = replace(HPARAMS, cv_features=(), cv_l2=(0.003, 0.01, 0.03))
    record = selection.choose({32: x}, y, np.ones(n), np.arange(n), keys, 2, hparams, candidates).record
    score = {(entry["features"], entry["l2"]): entry["score"] for entry in record["candidates"]}
    assert score["narrow", hparams.l2] < score["wide", hparams.l2]  # compared at one L2, narrow would win
    assert record["chosen"]["features"] == "wide" and record["chosen"]["l2"] > 0.03
    assert score["wide", record["chosen"]["l2"]] == min(score.values())
    # Every candidate had the grid, each grown past its edge on its own; the record keeps the chosen one's.
    assert {l2 for name, l2 in score if name == "narrow"} >= {0.003, 0.01, 0.03}
    assert record["l2_grid"] == sorted(l2 for name, l2 in score if name == "wide")

    # With an L2 search to follow (the platform's), the features are judged the same way; the L2 is left to it.
    after = selection.choose({32: x}, y, np.ones(n), np.arange(n), keys, 2, hparams, candidates, choose_l2=False)
    assert after.record["chosen"] == record["chosen"] and after.record["l2_chosen_after"] is True
    assert after.hparams.l2 == hparams.l2 and "l2_chosen_after" not in record
