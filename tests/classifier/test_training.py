import numpy as np
import pytest

from classifier.data import DatasetError, Example, scan_folder
from classifier.hparams import HParams
from classifier.training import train_model
from tests.classifier.synthetic import image_bytes, random_pixels, write_dataset

FAST = HParams(backbone="tiny", image_size=32, epochs=40, learning_rate=0.05, early_stopping_patience=40)


@pytest.fixture
def dataset(tmp_path):
    root = write_dataset(tmp_path / "data", per_label=30)
    return scan_folder(root)


def test_trains_a_useful_model_and_reports_every_phase(dataset, tmp_path):
    calls = []
    result = train_model(
        dataset.examples,
        dataset.labels,
        ["bad"],
        FAST,
        cache_dir=tmp_path / "cache",
        progress=lambda *call: calls.append(call),
        log_dir=tmp_path / "logs",
    )
    assert result.metrics["accuracy"] >= 0.8
    assert result.metrics["n"] == len(result.manifest["test"]) > 0
    assert result.embedded == 60 and result.cached == 0
    assert sorted(sum(result.manifest.values(), [])) == sorted(e.sha256 for e in dataset.examples)
    phases = [phase for phase, _, _ in calls]
    assert phases.index("embedding") < phases.index("training") < phases.index("evaluating")
    assert ("embedding", 60, 60) in calls and calls[-1][0] == "evaluating" and calls[-1][1] == calls[-1][2]
    assert len(result.history["loss"]) == len(result.history["val_loss"]) >= 1
    assert list((tmp_path / "logs").rglob("events.out.tfevents*"))
    # The saved model maps pixels to probabilities on its own, matching the evaluation.
    x = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 255.0)]).astype(np.float32)
    probabilities = np.asarray(result.model(x, training=False))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_retrain_uses_the_cache_and_embeds_only_new_images(dataset, tmp_path):
    cache = tmp_path / "cache"
    train_model(dataset.examples, dataset.labels, ["bad"], FAST, cache_dir=cache)
    again = train_model(dataset.examples, dataset.labels, ["bad"], FAST, cache_dir=cache)
    assert (again.embedded, again.cached) == (0, 60)
    more = [Example.from_bytes(image_bytes(label, seed=900 + i), label) for i, label in enumerate(["ok", "bad"] * 3)]
    grown = train_model(dataset.examples + more, dataset.labels, ["bad"], FAST, cache_dir=cache)
    assert (grown.embedded, grown.cached) == (6, 60)
    # Growing the data never moves an existing image to another split.
    for split in ("train", "validation", "test"):
        assert set(again.manifest[split]) <= set(grown.manifest[split])


def test_same_seed_same_model(dataset, tmp_path):
    hparams = HParams(backbone="tiny", image_size=32, epochs=5, hidden_units=8, dropout=0.2, seed=3)
    runs = [train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=tmp_path) for _ in range(2)]
    x = random_pixels(4, 32, seed=0)
    first, second = (np.asarray(run.model(x, training=False)) for run in runs)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    assert runs[0].history == runs[1].history


def test_corrupt_and_truncated_images_are_skipped_and_listed(dataset, tmp_path):
    truncated = image_bytes("ok", seed=5, fmt="JPEG")[:200]
    examples = [*dataset.examples, Example.from_bytes(truncated, "ok"), Example.from_bytes(b"junk" * 10, "bad")]
    result = train_model(examples, dataset.labels, ["bad"], FAST, cache_dir=tmp_path)
    assert len(result.skipped) == 2
    assert result.embedded == 60
    listed = set(sum(result.manifest.values(), []))
    assert examples[-1].sha256 not in listed and examples[-2].sha256 not in listed


def test_custom_split_can_exclude_holdout_images(dataset, tmp_path):
    holdout = {e.sha256 for e in dataset.examples[::5]}

    def split(example):
        if example.sha256 in holdout:
            return "exclude"
        return "test" if example.path.name.startswith("1") else "train"

    result = train_model(dataset.examples, dataset.labels, ["bad"], FAST, cache_dir=tmp_path, split=split)
    used = set(sum(result.manifest.values(), []))
    assert not used & holdout
    assert result.manifest["validation"] == []
    assert result.embedded == len(dataset.examples) - len(holdout)
    assert "val_loss" not in result.history


def test_label_errors(dataset, tmp_path):
    with pytest.raises(DatasetError):
        train_model(dataset.examples, ["ok"], [], FAST, cache_dir=tmp_path)
    with pytest.raises(DatasetError):
        train_model(dataset.examples, [*dataset.labels, "empty"], ["bad"], FAST, cache_dir=tmp_path)
    with pytest.raises(DatasetError):
        train_model(dataset.examples, dataset.labels, ["unknown"], FAST, cache_dir=tmp_path)


def test_distortion_and_fine_tuning_run_images_through_the_backbone(dataset, tmp_path):
    examples = dataset.examples[::3]
    cache = tmp_path / "cache"
    train_model(examples, dataset.labels, ["bad"], FAST, cache_dir=cache)
    hparams = HParams(backbone="tiny", image_size=32, epochs=1, distort=True, fine_tune_layers=1, fine_tune_epochs=1)
    calls = []
    result = train_model(
        examples, dataset.labels, ["bad"], hparams, cache_dir=cache, progress=lambda *c: calls.append(c)
    )
    assert (result.embedded, result.cached) == (len(examples), 0)
    assert result.fine_tuned_layers == ["tiny_conv3"]
    assert len(result.history["loss"]) == 2
    assert ("training", 2, 2) in calls
    assert not any(layer.trainable for layer in result.model.get_layer("tiny").layers)


def test_fine_tuning_trains_top_layers_on_cached_feature_maps(dataset, tmp_path):
    from classifier.backbones import build_backbone
    from classifier.images import decode_image

    hparams = HParams(backbone="tiny", image_size=32, epochs=5, fine_tune_layers=1, fine_tune_epochs=5)
    first = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=tmp_path)
    again = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=tmp_path)
    assert (first.embedded, first.cached) == (60, 0)
    assert (again.embedded, again.cached) == (0, 60)
    assert first.fine_tuned_layers == ["tiny_conv3"]
    # The fold heads scored features the fine-tuned layers no longer produce: no out-of-fold scores.
    assert "out_of_fold" not in first.out_of_sample["sources"]
    assert len(first.history["loss"]) == 10
    fresh = build_backbone("tiny", 32)
    tuned = first.model.get_layer("tiny")
    np.testing.assert_array_equal(tuned.get_layer("tiny_conv2").kernel, fresh.get_layer("tiny_conv2").kernel)
    assert not np.allclose(tuned.get_layer("tiny_conv3").kernel, fresh.get_layer("tiny_conv3").kernel)
    assert not any(layer.trainable for layer in tuned.layers)
    # The saved image model reproduces the test metrics computed from cached maps.
    test = [e for e in dataset.examples if e.sha256 in set(first.manifest["test"])]
    pixels = np.stack([decode_image(e.path, 32) for e in test]).astype(np.float32)
    predicted = np.asarray(first.model(pixels, training=False)).argmax(axis=1)
    flagged = predicted == first.labels.index("bad")
    truth = np.array([e.label == "bad" for e in test])
    assert float(np.mean(flagged == truth)) == pytest.approx(first.metrics["accuracy"])


def test_a_fine_tuning_phase_that_only_hurts_is_undone(dataset, tmp_path):
    from classifier.backbones import build_backbone

    hparams = HParams(
        backbone="tiny", image_size=32, epochs=20, fine_tune_layers=1, fine_tune_epochs=3, fine_tune_learning_rate=1e4
    )
    result = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=tmp_path)
    fresh = build_backbone("tiny", 32)
    tuned = result.model.get_layer("tiny")
    np.testing.assert_array_equal(tuned.get_layer("tiny_conv3").kernel, fresh.get_layer("tiny_conv3").kernel)
    assert result.metrics["accuracy"] >= 0.8


def test_every_example_is_scored_by_a_model_that_never_trained_on_it(dataset, tmp_path):
    from dataclasses import replace

    folds = replace(FAST, example_weighting="bias", bias_folds=3, average_fold_heads=True)
    result = train_model(dataset.examples, dataset.labels, ["bad"], folds, cache_dir=tmp_path / "cache")
    scores = result.out_of_sample
    keys_of: dict[str, set] = {}
    for key, source in zip(scores["keys"], scores["sources"], strict=True):
        keys_of.setdefault(source, set()).add(key)
    assert keys_of["out_of_fold"] == set(result.manifest["train"])
    assert keys_of["test"] == set(result.manifest["test"]) and keys_of["validation"] == set(
        result.manifest["validation"]
    )
    rows = np.array(scores["probabilities"])
    assert rows.shape == (len(scores["keys"]), 2)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-5)
    bad = result.labels.index("bad")
    label_of = {e.sha256: e.label for e in dataset.examples}
    folded = [i for i, source in enumerate(scores["sources"]) if source == "out_of_fold"]
    violations = [rows[i, bad] for i in folded if label_of.get(scores["keys"][i]) == "bad"]
    allowed = [rows[i, bad] for i in folded if label_of.get(scores["keys"][i]) == "ok"]
    assert np.mean(violations) > 0.5 > np.mean(allowed)


def test_fold_units_keep_a_near_duplicate_group_and_mirror_rows_in_one_fold():
    from classifier.heads import fold_units, shifted_probabilities

    units = fold_units(["g1", "b", "g1", "c"], np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    assert units.tolist() == [0, 1, 0, 2, 0, 1, 0, 2]
    log_p = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    shifted = shifted_probabilities(log_p, np.array([0.0, np.log(3.0)]))
    np.testing.assert_allclose(shifted, [[0.25, 0.75], [0.75, 0.25]], atol=1e-9)
