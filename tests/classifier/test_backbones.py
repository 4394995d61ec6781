"""Backbones: shapes, freezing, determinism, offline behaviour, local weights, and the real MobileNet V1 import."""

import keras
import numpy as np
import pytest
import skimage.data

from classifier import backbones, cli, mobilenet_v1_import
from classifier.images import decode_image
from tests.classifier.synthetic import random_pixels

EGYPTIAN_CAT = 285
ESPRESSO = 967


def train_hparams(*flags: str):
    """The hyper-parameters ``python -m classifier train ...flags`` would train with, in this environment."""
    args = cli._parser().parse_args(["train", "--data", "d", "--registry", "r", *flags])
    return cli._hparams(args, cli.Environment.read())


def test_native_sizes_and_unknown_name():
    assert backbones.native_size("mobilenet_v1") == 224
    assert backbones.native_size("inception_v3") == 299
    assert set(backbones.BACKBONES) == {"mobilenet_v1", "inception_v3", "mobilenet_v2", "efficientnet_b0", "tiny"}
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.native_size("resnet")
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_backbone("resnet")


def test_backbone_cache_follows_environment_through_the_command_line(monkeypatch, tmp_path):
    # The command line reads VIGIA_BACKBONE_CACHE and passes it on; the library itself never reads it.
    monkeypatch.setenv("VIGIA_BACKBONE_CACHE", str(tmp_path / "models"))
    assert cli.Environment.read().backbone_cache == tmp_path / "models"
    assert backbones.backbone_cache_dir(cli.Environment.read().backbone_cache) == tmp_path / "models"
    assert backbones.default_cache_dir().parts[-2:] == (".cache", "vigia")
    monkeypatch.delenv("VIGIA_BACKBONE_CACHE")
    assert cli.Environment.read().backbone_cache is None
    assert backbones.backbone_cache_dir(None) == backbones.default_cache_dir()


def test_tiny_is_frozen_deterministic_and_size_configurable():
    model = backbones.build_backbone("tiny")
    assert model.input_shape == (None, 32, 32, 3)
    assert not model.trainable
    assert model.trainable_weights == []
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    features = model.predict(images, verbose=0)
    assert features.shape == (4, 32)
    assert features.std() > 0
    again = backbones.build_backbone("tiny").predict(images, verbose=0)
    np.testing.assert_allclose(features, again, rtol=1e-5, atol=1e-6)
    assert backbones.build_backbone("tiny", image_size=48).input_shape == (None, 48, 48, 3)


def test_tiny_inside_a_classifier_survives_safe_mode_round_trip(tmp_path):
    backbone = backbones.build_backbone("tiny")
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.full((2, 32, 32, 3), 200.0, dtype="float32")
    np.testing.assert_allclose(model.predict(images, verbose=0), loaded.predict(images, verbose=0), atol=1e-6)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in backbone.layers)


@pytest.fixture
def offline(monkeypatch):
    """Make every Keras download fail the way it does on a machine without internet."""

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno 111] refused")

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", refuse)
    monkeypatch.delenv("VIGIA_BACKBONE_WEIGHTS", raising=False)


@pytest.mark.parametrize(("name", "size"), [("mobilenet_v2", 96), ("efficientnet_b0", 64), ("inception_v3", 75)])
def test_offline_without_weights_file_is_a_one_line_error_naming_both_options(offline, name, size):
    with pytest.raises(backbones.BackboneUnavailable) as error:
        backbones.build_backbone(name, image_size=size)
    message = str(error.value)
    assert "\n" not in message
    assert name in message
    assert "VIGIA_BACKBONE_WEIGHTS" in message
    assert "weights file" in message


def test_missing_local_weights_file_is_reported(offline, tmp_path):
    with pytest.raises(backbones.BackboneUnavailable, match="not found"):
        backbones.build_backbone("mobilenet_v2", 96, weights=tmp_path / "nope.weights.h5")


@pytest.fixture(scope="module")
def mobilenet_v2_weights(tmp_path_factory):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3), pooling="avg")
    # Random batch-norm statistics so a failed copy (default mean 0, variance 1) cannot pass by accident.
    rng = np.random.default_rng(1)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, variance.shape)])
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_notop.weights.h5"
    reference.save_weights(path)
    return reference, path


def test_local_weights_file_loads_offline_with_preprocessing_inside(offline, mobilenet_v2_weights):
    reference, path = mobilenet_v2_weights
    model = backbones.build_backbone("mobilenet_v2", image_size=96, weights=path)
    assert not model.trainable
    images = random_pixels(2, 96, seed=2)
    expected = np.asarray(reference(images / 127.5 - 1, training=False))
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-4, atol=1e-4)


def test_weights_file_from_environment(offline, mobilenet_v2_weights, monkeypatch):
    reference, path = mobilenet_v2_weights
    monkeypatch.setenv("VIGIA_BACKBONE_WEIGHTS", str(path))
    # The command line turns the variable into the run's hyper-parameters, which name the file to the backbone.
    hparams = train_hparams("--backbone", "mobilenet_v2", "--image-size", "96")
    assert hparams.backbone_weights == str(path)
    model = backbones.build_backbone("mobilenet_v2", image_size=96, weights=hparams.backbone_weights)
    images = np.full((1, 96, 96, 3), 90.0, dtype="float32")
    expected = np.asarray(reference(images / 127.5 - 1, training=False))
    np.testing.assert_allclose(np.asarray(model(images, training=False)), expected, rtol=1e-4, atol=1e-4)


def test_the_environment_s_weights_file_goes_only_to_backbones_that_load_one(monkeypatch):
    monkeypatch.setenv("VIGIA_BACKBONE_WEIGHTS", "/weights/efficientnet_b0_notop.h5")
    assert train_hparams("--backbone", "efficientnet_b0").backbone_weights == "/weights/efficientnet_b0_notop.h5"
    assert train_hparams("--backbone", "mobilenet_v2", "--backbone-weights", "mine.h5").backbone_weights == "mine.h5"
    # mobilenet_v1 (the default) brings its own weights and tiny has none: as before, the variable is ignored.
    assert train_hparams().backbone_weights is None
    assert train_hparams("--backbone", "tiny").backbone_weights is None


def test_the_library_takes_no_weights_file_from_the_environment(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("VIGIA_BACKBONE_WEIGHTS", str(tmp_path / "nope.weights.h5"))
    # Not "weights file not found": without weights= the backbone goes to Keras' download, whatever is set.
    with pytest.raises(backbones.BackboneUnavailable, match="could not be downloaded"):
        backbones.build_backbone("mobilenet_v2", image_size=96)


def test_weight_mapping_drops_background_class_and_names_missing_tensors():
    constants = {}

    def put(name, shape):
        constants["MobilenetV1/" + name] = np.random.default_rng(len(constants)).normal(size=shape).astype("float32")

    def batchnorm(scope, channels):
        for part in ("gamma", "beta", "moving_mean", "moving_variance"):
            put(f"{scope}/BatchNorm/{part}", (channels,))

    put("Conv2d_0/weights", (3, 3, 3, 32))
    batchnorm("Conv2d_0", 32)
    for block in range(1, 14):
        put(f"Conv2d_{block}_depthwise/depthwise_weights", (3, 3, 8, 1))
        batchnorm(f"Conv2d_{block}_depthwise", 8)
        put(f"Conv2d_{block}_pointwise/weights", (1, 1, 8, 8))
        batchnorm(f"Conv2d_{block}_pointwise", 8)
    put("Logits/Conv2d_1c_1x1/weights", (1, 1, 1024, 1001))
    put("Logits/Conv2d_1c_1x1/biases", (1001,))
    weights = mobilenet_v1_import.keras_weights(constants)
    kernel, bias = weights["conv_preds"]
    assert kernel.shape == (1, 1, 1024, 1000)
    np.testing.assert_array_equal(bias, constants["MobilenetV1/Logits/Conv2d_1c_1x1/biases"][1:])
    assert len(weights["conv_pw_13_bn"]) == 4
    del constants["MobilenetV1/Conv2d_7_pointwise/weights"]
    with pytest.raises(mobilenet_v1_import.GraphUnavailable, match="Conv2d_7_pointwise/weights"):
        mobilenet_v1_import.keras_weights(constants)


@pytest.mark.slow
def test_offline_mobilenet_v1_import_recognises_imagenet_photos(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    classifier = backbones.imagenet_classifier("mobilenet_v1", cache_dir=cache)
    assert (cache / backbones.MOBILENET_V1_FILE).is_file()
    assert not list(cache.glob(".mobilenet_v1-*"))
    photos = np.stack([decode_image(skimage.data.chelsea(), 224), decode_image(skimage.data.coffee(), 224)])
    probabilities = classifier.predict(photos.astype("float32"), verbose=0)
    assert probabilities.shape == (2, 1000)
    assert probabilities[0].argmax() == EGYPTIAN_CAT
    assert probabilities[0, EGYPTIAN_CAT] > 0.8
    assert probabilities[1].argmax() == ESPRESSO

    # The cached conversion is reused: converting again would fail here.
    monkeypatch.setattr(mobilenet_v1_import, "convert", lambda *a, **k: pytest.fail("converted twice"))
    features = backbones.build_backbone("mobilenet_v1", image_size=224, cache_dir=cache)
    assert not features.trainable
    pooled = features.predict(photos.astype("float32"), verbose=0)
    assert pooled.shape == (2, 1024)
    last_block = keras.Model(classifier.inputs, classifier.get_layer("conv_pw_13_relu").output)
    expected = last_block.predict(photos.astype("float32"), verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-4)
    small = backbones.build_backbone("mobilenet_v1", image_size=128, cache_dir=cache)
    cat = decode_image(skimage.data.chelsea(), 128)[None].astype("float32")
    assert np.asarray(small(cat, training=False)).shape == (1, 1024)


def test_damaged_cache_file_is_converted_again(tmp_path, monkeypatch):
    cached = tmp_path / backbones.MOBILENET_V1_FILE
    cached.write_text("damaged")
    conversions = []

    def converted(cache_dir=None):
        if not cached.exists():
            conversions.append(cache_dir)
            cached.write_text("model")
        return cached

    def load(path):
        if path.read_text() != "model":
            raise ValueError("not a zip file")
        return "loaded"

    monkeypatch.setattr(backbones, "converted_mobilenet_v1", converted)
    assert backbones._from_cache(tmp_path, load) == "loaded"
    assert conversions == [tmp_path]
    assert backbones._from_cache(tmp_path, load) == "loaded"
    assert conversions == [tmp_path]


def test_efficientnet_from_a_weights_file_gets_the_imagenet_input_scaling(offline, tmp_path):
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg"
    )
    normalization = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2
    normalization.set_weights([mean, variance, np.int64(0)])
    normalization.finalize_state()
    path = tmp_path / "efficientnet_b0_notop.weights.h5"
    reference.save_weights(path)
    model = backbones.build_backbone("efficientnet_b0", image_size=64, weights=path)
    # What Keras computes with weights="imagenet": an extra 1 / sqrt(stddev) scaling after the normalisation.
    normalization.set_weights([mean, variance * np.array([0.229, 0.224, 0.225]), np.int64(0)])
    normalization.finalize_state()
    images = random_pixels(2, 64, seed=3)
    # Compared after the stem: the pooled features of a random EfficientNet are too close to zero to tell.
    expected = keras.Model(reference.input, reference.get_layer("stem_conv").output)(images)
    got = keras.Model(model.input, model.get_layer("stem_conv").output)(images)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-4)
    assert model.output_shape == (None, 1280)
