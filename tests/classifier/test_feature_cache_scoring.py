"""Embedding ahead of training, and scoring a saved model through the bottleneck cache it filled."""

import json

import numpy as np
import pytest

from classifier.cache import BottleneckCache
from classifier.data import scan_folder, split_of
from classifier.evaluation import evaluate_model
from classifier.hparams import HParams
from classifier.registry import Registry
from classifier.training import embed_examples, train_model
from tests.classifier.synthetic import write_dataset
from tests.classifier.trained import trained_result

FAST = HParams(backbone="tiny", image_size=32, epochs=20, learning_rate=0.05, early_stopping_patience=20)


@pytest.fixture
def saved(tmp_path):
    registry = Registry(tmp_path / "registry")
    version = registry.save(trained_result())
    return registry, version


@pytest.fixture
def unseen(tmp_path):
    return scan_folder(write_dataset(tmp_path / "unseen", per_label=8, start=900)).examples


def scores(metrics: dict) -> np.ndarray:
    return np.array(metrics["outcomes"]["scores"])


def test_a_saved_model_scores_cached_features_exactly_as_it_scores_pixels(saved, unseen, tmp_path):
    registry, version = saved
    loaded = registry.load(version)
    assert loaded.feature_cache["variant"] == trained_result().feature_cache["variant"]

    on_pixels = evaluate_model(loaded, unseen, threshold=0.5, keep_outcomes=True)
    first = evaluate_model(loaded, unseen, threshold=0.5, keep_outcomes=True, cache_dir=tmp_path / "cache")
    again = evaluate_model(loaded, unseen, threshold=0.5, keep_outcomes=True, cache_dir=tmp_path / "cache")

    assert not on_pixels["scored_on_cached_features"] and first["scored_on_cached_features"]
    assert (first["embedded"], again["embedded"]) == (len(unseen), 0)
    np.testing.assert_allclose(scores(first), scores(on_pixels), atol=1e-5)
    np.testing.assert_allclose(scores(again), scores(on_pixels), atol=1e-5)
    assert first["confusion_matrix"] == on_pixels["confusion_matrix"]


def test_features_recorded_for_other_weights_are_never_used(saved, unseen, tmp_path):
    registry, version = saved
    metadata_file = registry.path(version) / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["feature_cache"]["variant"] = "0000000000"
    metadata_file.write_text(json.dumps(metadata))
    loaded = registry.load(version)
    # Poison what that namespace would hold: a model that trusted the record would score these vectors.
    poisoned = BottleneckCache(tmp_path / "cache", "tiny", 32, variant="0000000000")
    for example in unseen:
        poisoned.put(example.sha256, np.full(64, 1e3, dtype=np.float32))

    trusted = evaluate_model(loaded, unseen, threshold=0.5, keep_outcomes=True, cache_dir=tmp_path / "cache")
    on_pixels = evaluate_model(loaded, unseen, threshold=0.5, keep_outcomes=True)

    assert not trusted["scored_on_cached_features"]
    np.testing.assert_allclose(scores(trusted), scores(on_pixels), atol=1e-6)


def test_embedding_ahead_leaves_training_nothing_to_embed(tmp_path):
    examples = scan_folder(write_dataset(tmp_path / "data", per_label=15)).examples
    hparams = FAST

    ahead = embed_examples(examples, hparams, cache_dir=tmp_path / "cache")
    result = train_model(examples, ["bad", "ok"], ["bad"], hparams, cache_dir=tmp_path / "cache")

    assert (ahead.embedded, ahead.cached, ahead.skipped) == (len(examples), 0, [])
    assert (result.embedded, result.cached) == (0, len(examples))
    # Mirror images exist exactly for the examples that the stable split puts in training.
    record = result.feature_cache
    mirrors = BottleneckCache(tmp_path / "cache", "tiny", 32, variant=record["variant"] + "-mirror")
    in_training = {
        e.sha256 for e in examples if split_of(e.sha256, hparams.test_share, hparams.validation_share) == "train"
    }
    assert in_training and {e.sha256 for e in examples if e.sha256 in mirrors} == in_training
    assert embed_examples(examples, hparams, cache_dir=tmp_path / "cache").embedded == 0


def test_holdout_images_get_no_mirror_and_untrainable_settings_embed_nothing(tmp_path):
    examples = scan_folder(write_dataset(tmp_path / "data", per_label=6)).examples

    holdout = embed_examples(examples, FAST, cache_dir=tmp_path / "cache", for_training=False)
    distorted = embed_examples(examples, HParams(backbone="tiny", image_size=32, distort=True), tmp_path / "other")

    assert holdout.embedded == len(examples)
    assert not list((tmp_path / "cache").glob("*-mirror"))
    assert (distorted.embedded, distorted.cached) == (0, 0) and not (tmp_path / "other").exists()
