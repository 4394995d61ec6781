"""Options that lift accuracy: an intermediate feature layer, mirrored training copies, features standardised
inside the saved model, and the dark-on-white Fashion-MNIST export. All on the ``tiny`` backbone."""

from dataclasses import replace

import keras
import numpy as np
import pytest
from PIL import Image

from classifier.backbones import _symmetric_pool, build_backbone, default_feature_layer
from classifier.data import scan_folder
from classifier.datasets import export_fashion_mnist
from classifier.hparams import HParams
from classifier.images import decode_image
from classifier.registry import Registry
from classifier.training import train_model
from tests.classifier.synthetic import random_pixels, write_dataset, write_idx

FAST = HParams(
    backbone="tiny", image_size=32, epochs=20, learning_rate=0.05, early_stopping_patience=20, standardize=True
)


@pytest.fixture
def dataset(tmp_path):
    return scan_folder(write_dataset(tmp_path / "data", per_label=20))


def namespaces(cache):
    return sorted(path.name for path in cache.iterdir())


def test_defaults_pick_middle_mobilenet_blocks_and_keep_other_backbones_whole():
    assert HParams().resolved_feature_layer() == "conv_pw_9_relu+conv_pw_11_relu"
    assert HParams().resolved_pooling() == "symmetric"
    assert HParams(backbone="tiny").resolved_feature_layer() == default_feature_layer("tiny") == "output"
    assert HParams(backbone="tiny").resolved_pooling() == "average"
    assert HParams(feature_layer="conv_pw_11_relu").resolved_feature_layer() == "conv_pw_11_relu"
    # A layer named without a pooling keeps the global average it always meant.
    assert HParams(feature_layer="conv_pw_11_relu").resolved_pooling() == "average"
    with pytest.raises(ValueError, match="pooling must be one of"):
        HParams(pooling="max")
    defaults = HParams()
    assert defaults.mirror and defaults.resolved_standardize() and defaults.l2 > 0
    assert (
        not HParams(backbone="tiny").resolved_standardize()
        and HParams(backbone="tiny", standardize=True).resolved_standardize()
    )
    assert HParams.from_dict(HParams(feature_layer="x", mirror=False).to_dict()).feature_layer == "x"


def test_feature_layer_cuts_the_backbone_and_pools_that_layer():
    whole = build_backbone("tiny", 32)
    cut = build_backbone("tiny", 32, feature_layer="tiny_conv2")
    assert cut.output_shape == (None, 32) and not cut.trainable
    assert "tiny_conv3" not in [layer.name for layer in cut.layers]
    x = random_pixels(3, 32, seed=0)
    below = keras.Model(whole.input, whole.get_layer("tiny_conv2").output)
    np.testing.assert_allclose(cut(x), np.mean(below(x), axis=(1, 2)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        build_backbone("tiny", 32, feature_layer="nope")


def test_symmetric_pooling_averages_four_regions_of_each_layer_and_concatenates_layers():
    whole = build_backbone("tiny", 64)
    pooled = build_backbone("tiny", 64, feature_layer="tiny_conv1+tiny_conv2", pooling="symmetric")
    assert pooled.output_shape == (None, 4 * 16 + 4 * 32)
    x = random_pixels(2, 64, seed=1)
    expected = []
    for name in ("tiny_conv1", "tiny_conv2"):
        maps = keras.Model(whole.input, whole.get_layer(name).output)(x).numpy()
        height, width = maps.shape[1:3]
        side, top = width // 3, height // 2
        for rows in (slice(0, top), slice(top, height)):
            band = maps[:, rows]
            expected.append(band[:, :, side : width - side].mean(axis=(1, 2)))
            outer = np.concatenate([band[:, :, :side], band[:, :, width - side :]], axis=2)
            expected.append(outer.mean(axis=(1, 2)))
    np.testing.assert_allclose(pooled(x), np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)
    # Mirroring the photo swaps left and right, which symmetric pooling averages together anyway: the
    # features of a left-right symmetric photo are unchanged by flipping it.
    symmetric_photo = np.concatenate([x[:, :, :32], x[:, :, :32][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(pooled(symmetric_photo), pooled(symmetric_photo[:, :, ::-1]), rtol=1e-4, atol=1e-5)


def test_pooling_errors_are_clear():
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        build_backbone("tiny", 32, feature_layer="tiny_conv1", pooling="max")
    with pytest.raises(ValueError, match="needs a named feature layer"):
        build_backbone("tiny", 32, pooling="symmetric")
    with pytest.raises(ValueError, match="at least 2x3; 'conv_pw_13_relu' gives 1x1"):
        _symmetric_pool(keras.Input((1, 1, 8)), "conv_pw_13_relu")
    with pytest.raises(ValueError, match="no layer 'nope'"):
        build_backbone("tiny", 32, feature_layer="tiny_conv1+nope")


def test_feature_layer_and_mirror_features_are_cached_apart(dataset, tmp_path):
    cache = tmp_path / "cache"
    hparams = HParams.from_dict({**FAST.to_dict(), "feature_layer": "tiny_conv2"})
    first = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=cache)
    assert (first.embedded, first.cached) == (40, 0)
    names = namespaces(cache)
    assert len(names) == 2 and all("tiny_conv2" in name for name in names)
    assert sum(name.endswith("-mirror") for name in names) == 1
    mirror_dir = cache / next(name for name in names if name.endswith("-mirror"))
    # Only training images get a mirror image; validation and test are scored as photographed.
    assert sorted(path.stem for path in mirror_dir.rglob("*.npy")) == first.manifest["train"]

    # The cached mirror vector is the cut backbone's features of the left-right flipped pixels.
    example = next(e for e in dataset.examples if e.sha256 == first.manifest["train"][0])
    pixels = decode_image(example.source(), 32)[:, ::-1][None].astype(np.float32)
    expected = build_backbone("tiny", 32, feature_layer="tiny_conv2")(pixels)[0]
    stored = np.load(mirror_dir / example.sha256[:2] / f"{example.sha256}.npy")
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)

    again = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=cache)
    assert (again.embedded, again.cached) == (0, 40)
    whole = train_model(dataset.examples, dataset.labels, ["bad"], FAST, cache_dir=cache)
    assert whole.embedded == 40 and len(namespaces(cache)) == 4


def test_without_mirror_no_mirror_images_are_embedded(dataset, tmp_path):
    cache = tmp_path / "cache"
    hparams = HParams.from_dict({**FAST.to_dict(), "mirror": False})
    result = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=cache)
    assert result.embedded == 40
    assert not any(name.endswith("-mirror") for name in namespaces(cache))


def test_standardisation_lives_in_the_saved_model_and_loads_in_safe_mode(dataset, tmp_path):
    result = train_model(dataset.examples, dataset.labels, ["bad"], FAST, cache_dir=tmp_path / "cache")
    head = result.model.get_layer("head")
    normalization = head.get_layer("head_standardize")
    assert isinstance(normalization, keras.layers.Normalization)
    # Adapted on the training features (originals and mirror images), not left at the identity.
    backbone = build_backbone("tiny", 32)
    train = [e for e in dataset.examples if e.sha256 in set(result.manifest["train"])]
    pixels = np.stack([decode_image(e.source(), 32) for e in train]).astype(np.float32)
    features = np.concatenate([backbone(pixels), backbone(pixels[:, :, ::-1])])
    np.testing.assert_allclose(np.ravel(normalization.mean), features.mean(axis=0), rtol=1e-4, atol=1e-5)

    registry = Registry(tmp_path / "models")
    loaded = registry.load(registry.save(result))
    reloaded = loaded.model.get_layer("head").get_layer("head_standardize")
    np.testing.assert_allclose(np.ravel(reloaded.mean), np.ravel(normalization.mean), rtol=1e-6)
    np.testing.assert_allclose(loaded.model(pixels), result.model(pixels), rtol=1e-5, atol=1e-6)


def test_region_pooled_features_train_cache_apart_and_save_a_safe_mode_model(dataset, tmp_path):
    cache = tmp_path / "cache"
    pooled = HParams.from_dict(
        {**FAST.to_dict(), "image_size": 64, "feature_layer": "tiny_conv1+tiny_conv2", "pooling": "symmetric"}
    )
    result = train_model(dataset.examples, dataset.labels, ["bad"], pooled, cache_dir=cache)
    averaged = replace(pooled, pooling="average")
    other = train_model(dataset.examples, dataset.labels, ["bad"], averaged, cache_dir=cache)
    assert (result.embedded, other.embedded) == (40, 40)
    assert sum("symmetric" in name for name in namespaces(cache)) == 2  # features and their mirror images
    again = train_model(dataset.examples, dataset.labels, ["bad"], pooled, cache_dir=cache)
    assert (again.embedded, again.cached) == (0, 40)

    registry = Registry(tmp_path / "models")
    loaded = registry.load(registry.save(result))
    pixels = np.stack([decode_image(e.source(), 64) for e in dataset.examples[:5]]).astype(np.float32)
    np.testing.assert_allclose(loaded.model(pixels), result.model(pixels), rtol=1e-5, atol=1e-6)
    assert loaded.model.get_layer("head").input.shape[-1] == 4 * 16 + 4 * 32


def test_no_standardisation_means_no_normalization_layer(dataset, tmp_path):
    hparams = HParams.from_dict({**FAST.to_dict(), "standardize": False, "mirror": False})
    result = train_model(dataset.examples, dataset.labels, ["bad"], hparams, cache_dir=tmp_path / "cache")
    head = result.model.get_layer("head")
    assert not any(isinstance(layer, keras.layers.Normalization) for layer in head.layers)


def test_export_writes_dark_on_white_unless_told_otherwise(tmp_path):
    directory = tmp_path / "fm"
    directory.mkdir()
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:, 10:18, 10:18] = 200  # a bright garment on black, as Fashion-MNIST stores it
    labels = np.array([4, 4, 2, 2])
    for prefix in ("train", "t10k"):
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images, 0x0803)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x0801)
    export_fashion_mnist(tmp_path / "photo", ["Coat"], "train", per_class=1, directory=directory)
    export_fashion_mnist(tmp_path / "raw", ["Coat"], "train", per_class=1, invert=False, directory=directory)
    photo = np.asarray(Image.open(tmp_path / "photo" / "Coat" / "train-00000.png"))
    raw = np.asarray(Image.open(tmp_path / "raw" / "Coat" / "train-00000.png"))
    assert (photo[0, 0], photo[14, 14]) == (255, 55)
    assert (raw[0, 0], raw[14, 14]) == (0, 200)


def test_a_head_without_training_features_standardises_as_the_identity():
    from classifier.model import build_head

    head = build_head(4, 2, HParams(backbone="tiny", standardize=True))
    x = np.array([[1.0, -2.0, 3.0, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(head.get_layer("head_standardize")(x), x, atol=1e-6)


def test_standardisation_floors_the_variance_of_features_that_barely_vary_and_survives_saving(tmp_path):
    from classifier.model import VARIANCE_FLOOR_SHARE, build_head, standardization_moments

    rng = np.random.default_rng(0)
    features = rng.normal(loc=2.0, scale=1.0, size=(50, 4)).astype(np.float32)
    features[:, 3] = 0.0  # a feature that never fired on the training images
    mean, variance = standardization_moments(features)
    np.testing.assert_allclose(mean[:3], features[:, :3].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(variance[:3], features[:, :3].var(axis=0), rtol=1e-5)
    assert variance[3] == pytest.approx(VARIANCE_FLOOR_SHARE * features.var(axis=0).mean(), rel=1e-5)

    head = build_head(4, 2, HParams(backbone="tiny", standardize=True), training_features=features)
    firing = np.array([[2.0, 2.0, 2.0, 1.0]], dtype=np.float32)
    standardised = np.asarray(head.get_layer("head_standardize")(firing))
    # Divided by the floor, not by ~0: the new image's one active feature stays within a few units.
    assert abs(standardised[0, 3]) < 5
    head.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras", compile=False, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(firing)), np.asarray(head(firing)), atol=1e-6)


@pytest.mark.parametrize(("step_offset", "returns_start"), [(0, False), (5, True)])
def test_only_a_later_phase_can_end_on_its_starting_weights(step_offset, returns_start, tmp_path):
    from classifier.fitting import fit_features
    from classifier.model import build_head

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    # Validation labels contradict the training labels: every epoch makes the validation loss worse than the
    # start. A new head must still return trained weights; a later phase (fine-tuning) keeps its start.
    hparams = HParams(backbone="tiny", standardize=False, epochs=5, early_stopping_patience=2, learning_rate=0.5)
    head = build_head(6, 2, hparams)
    start = [weight.copy() for weight in head.get_weights()]
    fit_features(head, x, y, (x, 1 - y), hparams, tmp_path, lambda done: None, step_offset=step_offset)
    unchanged = all(np.array_equal(a, b) for a, b in zip(start, head.get_weights(), strict=True))
    assert unchanged is returns_start
